"""Sweep specs: loading, complete validation, expansion and dump round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep import spec as S

SWEEPS = Path(__file__).resolve().parent.parent / "datasets" / "sweeps"


def _default() -> dict:
    """The default spec with the tiny SD 1.5 grid these tests were written against pinned
    (the shipped default's model and grid may change; its keys and sections are used)."""
    data = yaml.safe_load((SWEEPS / "default.yaml").read_text())
    data["models"] = [{"model": "sd15", "preset": "tiny"}]
    data["steps"] = [4]
    data["methods"] = {
        "deepcache": {"cache_interval": [2, 3, 4], "cache_branch_id": [0, 1]},
        "tgate": {"gate_step": [2, 3], "sp_interval": [1], "fi_interval": [1], "warm_up": [1]},
        "tome": {"ratio": [0.25, 0.5, 0.75], "max_downsample": [1]},
    }
    return data


@pytest.mark.parametrize("name", ["default", "sd-h100", "study"])
def test_shipped_specs_load_and_expand(name):
    spec = S.load(SWEEPS / f"{name}.yaml")
    plan = S.expand(spec)
    assert plan.size > 0
    assert len(spec.prompts()) == spec.prompt_count
    # Every expanded point is valid for its config.
    for cp in plan.combos[:20]:
        for acc in list(cp.points())[:50]:
            acc.validate(cp.config.family, cp.config.steps)


def test_study_grid_drops_invalid_points_with_a_count():
    spec = S.load(SWEEPS / "study.yaml")
    plan = S.expand(spec)
    assert len(spec.configs()) == 27
    # max_downsample=1 is dropped on SDXL only, and every SDXL tome grid is smaller.
    by_key = {(cp.config.model, cp.config.scheduler, cp.config.steps, cp.combo): cp for cp in plan.combos}
    sd15, sdxl = by_key[("sd15", "ddim", 20, "tome")], by_key[("sdxl", "ddim", 20, "tome")]
    assert sd15.dropped == 0 and sdxl.dropped == sd15.size // 4
    assert {c.max_downsample for c in sdxl.method_points["tome"]} == {2, 4, 8}
    # gate_step 5–19 fits 20 steps; warm_up < gate_step always holds for warm_up 1–3.
    assert by_key[("sd15", "ddim", 20, "tgate")].size == 15 * 8 * 5 * 3
    assert "dropped" in plan.summary()


def test_validation_collects_every_problem_with_key_paths():
    data = _default()
    data["models"] = [{"model": "sdxl", "preset": "tiny"}]
    data["methods"]["deepcache"]["cache_branch_id"] = [0, 12]
    data["methds"] = {}
    data["steps"] = [4, "x"]
    data["quality"]["metric"] = "lpips"
    data["combos"].append("deepcache+toem")
    data["measure"]["scren_pairs"] = 3
    data["measure"]["count_flops"] = "sometimes"
    with pytest.raises(S.SpecError) as err:
        S.validate(data)
    text = str(err.value)
    assert len(err.value.problems) == 8, text
    assert "measure.count_flops: 'sometimes' is not one of always, confirm, never" in text
    assert "methods.tome.max_downsample: 1 is not valid on Stable Diffusion XL: use one of 2, 4, 8" in text
    assert "methds: unknown key: did you mean 'methods'?" in text
    assert "steps[1]: 'x' is not an integer" in text
    assert "quality.metric: unknown metric 'lpips'" in text
    assert "combos[3]: unknown method 'toem'" in text
    assert "measure.scren_pairs: unknown key: did you mean 'screen_pairs'?" in text
    assert "methods.deepcache.cache_branch_id: 12 is out of range on Stable Diffusion XL" in text
    assert "use 0–8" in text


def test_combo_for_no_family_is_an_error_but_mixed_families_skip_with_a_note():
    data = _default()
    data["models"] = [{"model": "pixart_alpha", "preset": "tiny"}]
    with pytest.raises(S.SpecError, match=r"combos\[0\]: 'deepcache' applies to none"):
        S.validate(data)
    data["models"].append({"model": "sd15", "preset": "tiny"})
    spec = S.validate(data)
    plan = S.expand(spec)
    assert {(cp.config.model, cp.combo) for cp in plan.combos} == {
        ("sd15", "deepcache"), ("sd15", "tgate"), ("sd15", "tome"), ("pixart_alpha", "tgate")}
    assert any("deepcache skipped on PixArt-α" in n for n in plan.notes)


def test_ranges_and_combo_grid_overrides():
    data = _default()
    data["methods"]["tome"]["ratio"] = {"from": 0.1, "to": 0.3, "step": 0.1}
    data["combos"] = ["tome", {"combo": "tome+deepcache", "grid": {"ratio": [0.5], "cache_interval": [2]}}]
    spec = S.validate(data)
    assert spec.methods["tome"]["ratio"] == [0.1, 0.2, 0.3]
    combo = {cg.combo: cg for cg in spec.combos}["deepcache+tome"]
    assert combo.grid["ratio"] == [0.5] and combo.grid["cache_branch_id"] == [0, 1]
    plan = S.expand(spec)
    assert {cp.combo: cp.size for cp in plan.combos} == {"tome": 3, "deepcache+tome": 2}


def test_a_value_valid_for_some_configs_is_dropped_elsewhere():
    data = _default()
    data["steps"] = [3, 4]
    data["methods"]["tgate"]["gate_step"] = [2, 4]  # 4 > 3 steps
    plan = S.expand(S.validate(data))
    sizes = {(cp.config.steps, cp.combo): (cp.size, cp.dropped) for cp in plan.combos}
    assert sizes[(3, "tgate")] == (1, 1) and sizes[(4, "tgate")] == (2, 0)


def test_dump_round_trips(tmp_path):
    spec = S.load(SWEEPS / "sd-h100.yaml")
    out = tmp_path / "written.yaml"
    S.dump(spec, out)
    again = S.load(out)
    assert again.to_dict() == spec.to_dict()
    assert S.expand(again).size == S.expand(spec).size


def test_dump_refuses_invalid_plain_data(tmp_path):
    data = _default()
    data["steps"] = [0]
    with pytest.raises(S.SpecError, match=r"steps\[0\]"):
        S.dump(data, tmp_path / "bad.yaml")
    assert not (tmp_path / "bad.yaml").exists()


def test_missing_prompt_file_and_too_many_prompts():
    data = _default()
    data["prompts"] = {"file": "nope/prompts.txt", "count": 2}
    with pytest.raises(S.SpecError, match=r"prompts.file: 'nope/prompts.txt' does not exist"):
        S.validate(data)
    data["prompts"] = {"file": "datasets/prompts/default.txt", "count": 500}
    with pytest.raises(S.SpecError, match=r"prompts: asked for 500 prompts"):
        S.validate(data)


def test_clip_budget_needs_a_clip_model():
    data = _default()
    data["quality"]["metric"] = "clip"
    with pytest.raises(S.SpecError, match="clip_model: quality.metric is 'clip' but no CLIP model"):
        S.validate(data)
    data["clip_model"] = "openai/clip-vit-large-patch14"
    assert S.validate(data).clip_model == "openai/clip-vit-large-patch14"
