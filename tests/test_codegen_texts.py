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
