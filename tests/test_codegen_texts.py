"""Task texts: every phrasing reads back to the request it was written from."""

import itertools

import pytest

from codegen.texts import PHRASINGS, Request, TextError, describe, parse, phrasing_index
from sweep.catalog import COMBOS, FAMILIES, SCHEDULERS, compatibility_matrix

MATRIX = compatibility_matrix()
CASES = [
    Request(model, sched, steps, combo, speedup, budget, metric, kind, res)
    for (model, sched, steps, combo, speedup, budget, metric, kind, res) in [
        ("sd15", "ddim", 50, "deepcache", 2.3, 0.02, "ssim", "H100", 512),
        ("sd21", "dpmpp", 25, "deepcache+tgate", 10.0, 0.05, "clip", "A100", 768),
        ("sdxl", "unipc", 30, "deepcache+tgate+tome", 1.07, 0.001, "ssim", "cpu", 1024),
        ("pixart_alpha", "euler", 20, "tgate", 1.5, 0.1, "clip", "H200", 1024),
        ("pixart_sigma", "pndm", 8, "tgate", 3.25, 0.02, "ssim", "L4", 64),
        ("sd15", "pndm", 4, "tgate+tome", 12.34, 0.5, "ssim", "RTX4090", 256),
    ]
]


@pytest.mark.parametrize("req", CASES, ids=lambda r: f"{r.model}-{r.method}")
@pytest.mark.parametrize("phrasing", range(len(PHRASINGS)))
def test_every_phrasing_round_trips(req, phrasing):
    task_id = next(f"{i:08x}0000" for i in itertools.count() if phrasing_index(f"{i:08x}0000") == phrasing)
    text = describe(req, task_id)
    assert parse(text) == req, text


def test_every_model_scheduler_and_combo_is_named_and_read_back():
    for model, sched, combo in itertools.product(FAMILIES, SCHEDULERS, COMBOS):
        if not MATRIX[combo][model]:
            continue
        req = Request(model, sched, 50, combo, 2.0, 0.02, "ssim", "H100", 512)
        assert parse(describe(req, "0123456789ab")) == req


def test_the_phrasing_follows_the_task_id_and_texts_name_hardware_and_resolution():
    req = CASES[0]
    texts = {describe(req, f"{i:08x}0000") for i in range(8)}
    assert len(texts) == len(PHRASINGS)
    assert all("an H100" in t and "512×512" in t and "2.30×" in t for t in texts)


def test_a_hand_written_text_without_hardware_or_metric_reads_with_those_left_open():
    req = parse("Speed up SDXL with the Euler scheduler and 30 steps using DeepCache and ToMe: "
                "at least 1.8x faster than the baseline, quality loss at most 0.05.")
    assert (req.model, req.scheduler, req.steps, req.method) == ("sdxl", "euler", 30, "deepcache+tome")
    assert (req.speedup, req.budget, req.metric, req.device_kind, req.resolution) == (1.8, 0.05, None, None, None)


@pytest.mark.parametrize("text, part", [
    ("Write inference code with the DDIM scheduler and 50 steps, accelerated by DeepCache, 2x faster, "
     "quality loss no greater than 0.02.", "could not read the model"),
    ("Write inference code for Stable Diffusion 1.5 with 50 steps, accelerated by DeepCache, 2x faster, "
     "quality loss no greater than 0.02.", "could not read the scheduler"),
    ("Write inference code for Stable Diffusion 1.5 with the DDIM scheduler, accelerated by DeepCache, "
     "2x faster, quality loss no greater than 0.02.", "could not read the number of steps"),
    ("Write inference code for Stable Diffusion 1.5 with the DDIM scheduler and 50 steps, 2x faster, "
     "quality loss no greater than 0.02.", "could not read the acceleration methods"),
    ("Write inference code for Stable Diffusion 1.5 with the DDIM scheduler and 50 steps, accelerated by "
     "DeepCache, quality loss no greater than 0.02.", "could not read the speedup"),
    ("Write inference code for Stable Diffusion 1.5 with the DDIM scheduler and 50 steps, accelerated by "
     "DeepCache, 2x faster.", "could not read the quality budget"),
    ("Make Stable Diffusion 1.5 or SDXL with the DDIM scheduler and 50 steps 2x faster with DeepCache, "
     "quality loss no greater than 0.02.", "the model is ambiguous"),
    ("Make Stable Diffusion 1.5 with the DDIM scheduler and 50 steps at 512×768 2x faster with DeepCache, "
     "quality loss no greater than 0.02.", "is not square"),
    ("", "the task text is empty"),
])
def test_bad_text_names_the_part_it_could_not_read(text, part):
    with pytest.raises(TextError, match=part):
        parse(text)


# Every combination, written with the libraries' own names and each joiner, in any order.
SPELLINGS = {"deepcache": ["DeepCache", "deepcache", "Deep Cache"],
             "tgate": ["T-GATE", "TGATE", "tgate", "T-Gate"],
             "tome": ["ToMe", "tomesd", "Token Merging"]}
JOINERS = ["+", " + ", " and ", ", ", " with ", " combined with "]


def _combo_texts(combo):
    methods = combo.split("+")
    out = []
    for k, order in enumerate(itertools.permutations(methods)):
        for j, joiner in enumerate(JOINERS):
            names = [SPELLINGS[m][(j + k + i) % len(SPELLINGS[m])] for i, m in enumerate(order)]
            out.append(joiner.join(names))
    return out


@pytest.mark.parametrize("combo", COMBOS)
def test_every_combination_parses_in_any_order_spelling_and_joiner(combo):
    assert len(COMBOS) == 7
    texts = _combo_texts(combo)
    assert len(texts) >= len(JOINERS)
    for methods in texts:
        text = (f"Accelerate Stable Diffusion 1.5 (DDIM scheduler, 50 steps) with {methods} so that it is "
                f"at least 1.5× faster, with a quality loss no greater than 0.02.")
        assert parse(text).method == combo, text


def test_the_issue_examples_keep_every_method():
    base = ("Make SDXL with the Euler scheduler and 30 steps at least 1.5× faster using {}, quality loss at "
            "most 0.02.")
    for methods, combo in [("DeepCache+T-GATE+ToMe", "deepcache+tgate+tome"), ("ToMe+DeepCache", "deepcache+tome"),
                           ("deepcache+tgate", "deepcache+tgate"), ("TGATE with tomesd", "tgate+tome")]:
        assert parse(base.format(methods)).method == combo


@pytest.mark.parametrize("combo", COMBOS)
@pytest.mark.parametrize("phrasing", range(len(PHRASINGS)))
def test_describe_then_parse_round_trips_for_every_combination(combo, phrasing):
    model = next(m for m in FAMILIES if MATRIX[combo][m])
    req = Request(model, "ddim", 50, combo, 2.3, 0.02, "ssim", "H100", 512)
    task_id = next(f"{i:08x}0000" for i in itertools.count() if phrasing_index(f"{i:08x}0000") == phrasing)
    assert parse(describe(req, task_id)) == req


@pytest.mark.parametrize("numbers, part", [
    (("1" * 401, "0.02", "50"), "the speedup"),
    (("5000", "0.02", "50"), "the speedup"),
    (("0", "0.02", "50"), "the speedup"),
    (("2", "3", "50"), "the quality budget"),
    (("2", "0.02", "0"), "the step count"),
    (("2", "0.02", "9" * 30), "the step count"),
])
def test_numbers_out_of_range_are_refused(numbers, part):
    speedup, budget, steps = numbers
    text = (f"Make Stable Diffusion 1.5 with the DDIM scheduler and {steps} steps at least {speedup}× faster with "
            f"DeepCache, quality loss no greater than {budget}.")
    with pytest.raises(TextError, match=part + r" .* is out of range"):
        parse(text)
