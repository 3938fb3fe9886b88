"""The captioned scene generator: vocabulary, captions, parsing, layout and rendering."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sweep.shapes import (
    BACKGROUND_RGB,
    BACKGROUNDS,
    COLOUR_RGB,
    COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    background_of,
    colour_fractions,
    layout,
    parse_caption,
    render,
    sample_scene,
    samples,
)


def _scene(rel="above", bg="grey"):
    return Scene((Obj("circle", "red", "small"), Obj("square", "blue", "large")), rel, bg)


def test_caption_and_attributes():
    s = _scene()
    assert s.caption() == "a small red circle above a large blue square on a grey background"
    assert s.attributes() == {
        "shape_1": "circle", "colour_1": "red", "size_1": "small",
        "shape_2": "square", "colour_2": "blue", "size_2": "large",
        "relation": "above", "background": "grey", "count": 2,
    }
    one = Scene((Obj("triangle", "yellow", "large"),), None, "black")
    assert one.caption() == "a large yellow triangle on a black background"
    assert one.attributes() == {"shape_1": "triangle", "colour_1": "yellow", "size_1": "large",
                                "background": "black", "count": 1}


def test_every_scene_round_trips_through_its_caption():
    objs = [Obj(sh, c, sz) for sh, c, sz in itertools.product(SHAPES, COLOURS, SIZES)]
    n = 0
    for bg in BACKGROUNDS:
        for o in objs:
            s = Scene((o,), None, bg)
            assert parse_caption(s.caption()) == s
            n += 1
        for a, b, rel in itertools.product(objs[::5], objs[1::7], RELATIONS):
            s = Scene((a, b), rel, bg)
            assert parse_caption(s.caption()) == s
            n += 1
    assert n > 200
    assert parse_caption("  A small red circle  left of a large blue square on a WHITE background. ") == \
        Scene((Obj("circle", "red", "small"), Obj("square", "blue", "large")), "left of", "white")


@pytest.mark.parametrize(("text", "message"), [
    ("a cat on a mat", "is not of the form"),
    ("a small red hexagon on a grey background", "unknown shape 'hexagon'"),
    ("a small pink circle on a grey background", "unknown colour 'pink'"),
    ("a tiny red circle on a grey background", "unknown size 'tiny'"),
    ("a small red circle on a green background", "unknown background 'green'"),
    ("a small red circle near a blue square on a grey background", "not 'a SIZE COLOUR SHAPE'"),
    ("red circle on a grey background", "not 'a SIZE COLOUR SHAPE'"),
    ("", "is not of the form"),
])
def test_parse_rejects_with_the_problem_named(text, message):
    with pytest.raises(ValueError, match=message):
        parse_caption(text)


def test_scene_validation():
    with pytest.raises(ValueError, match="need a relation"):
        Scene((Obj("circle", "red", "small"), Obj("square", "blue", "large")), None, "grey")
    with pytest.raises(ValueError, match="needs two objects"):
        Scene((Obj("circle", "red", "small"),), "above", "grey")
    with pytest.raises(ValueError, match="1 or 2 objects"):
        Scene((), None, "grey")
    with pytest.raises(ValueError, match="unknown colour"):
        Obj("circle", "pink", "small")


def test_vocabulary_colours_stand_out_from_backgrounds():
    assert len(SHAPES) >= 3 and len(COLOURS) >= 6 and len(SIZES) == 2 and len(BACKGROUNDS) >= 3
    assert set(RELATIONS) == {"above", "below", "left of", "right of"}
    for c, rgb in COLOUR_RGB.items():
        assert max(rgb) - min(rgb) > 120, c  # saturated, while backgrounds are neutral
        for b, bg in BACKGROUND_RGB.items():
            assert np.abs(np.subtract(rgb, bg)).sum() > 150, (c, b)
    for a, b in itertools.combinations(COLOUR_RGB.values(), 2):
        assert np.abs(np.subtract(a, b)).sum() > 100


def test_samples_are_deterministic_unbounded_and_varied():
    a = list(samples(7, 20, size=64))
    b = list(samples(7, 5, size=64))
    assert [s for _, s in a[:5]] == [s for _, s in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (x, _), (y, _) in zip(a, b, strict=False))
    other = [s for _, s in samples(8, 20, size=64)]
    assert other != [s for _, s in a]
    it = samples(0)  # unbounded
    many = [next(it)[1] for _ in range(300)]
    caps = {s.caption() for s in many}
    assert len(caps) > 200
    counts = {len(s.objects) for s in many}
    assert counts == {1, 2}
    for slot, vocab in (("background", BACKGROUNDS), ("relation", RELATIONS)):
        assert {s.attributes().get(slot) for s in many} - {None} == set(vocab)
    assert all(s.objects[0] != s.objects[-1] or len(s.objects) == 1 for s in many)
    img, _ = a[0]
    assert img.size == (64, 64) and img.mode == "RGB"


@pytest.mark.parametrize("rel", RELATIONS)
def test_positions_follow_the_relation(rel):
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = layout(_scene(rel), 128, rng)
        assert abs(a.cx - b.cx) + abs(a.cy - b.cy) > a.half + b.half  # no overlap
        for p in (a, b):  # inside, with a margin of background on every side
            assert p.half < p.cx < 128 - p.half and p.half < p.cy < 128 - p.half
        if rel == "above":
            assert a.cy < b.cy
        elif rel == "below":
            assert a.cy > b.cy
        elif rel == "left of":
            assert a.cx < b.cx
        else:
            assert a.cx > b.cx


def test_render_draws_what_the_caption_says():
    rng = np.random.default_rng(3)
    for _ in range(30):
        scene = sample_scene(rng)
        img = render(scene, 128, rng)
        assert background_of(img) == scene.background
        frac = colour_fractions(img)
        named = {o.colour for o in scene.objects}
        assert all(frac[c] > 0.004 for c in named), (scene.caption(), frac)
        assert sum(v for c, v in frac.items() if c not in named) < 0.002
        # A large object covers more pixels than a small one of the same shape.
    big = colour_fractions(render(Scene((Obj("circle", "red", "large"),), None, "grey")))["red"]
    small = colour_fractions(render(Scene((Obj("circle", "red", "small"),), None, "grey")))["red"]
    assert big > 3 * small


def test_render_places_colours_by_relation():
    img = np.asarray(render(_scene("left of", "white"), 128))
    red = (img[..., 0] > 180) & (img[..., 2] < 80)
    blue = (img[..., 2] > 180) & (img[..., 0] < 80)
    assert np.nonzero(red)[1].mean() < 64 < np.nonzero(blue)[1].mean()
    with pytest.raises(ValueError, match="too small"):
        render(_scene(), 8)


def test_no_jitter_without_rng():
    s = _scene()
    assert np.array_equal(np.asarray(render(s)), np.asarray(render(s)))
    assert layout(s) == layout(s)
