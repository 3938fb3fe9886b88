"""The catalog: parameter schema, validation messages, compatibility, tags and keys."""

import subprocess
import sys

import pytest

from sweep.catalog import (
    COMBOS,
    FAMILIES,
    Acceleration,
    ConfigError,
    PipelineConfig,
    canonical_combo,
    compatibility_matrix,
    iter_points,
    parse_tag,
    trial_key,
)


@pytest.mark.parametrize(
    "methods, params, model, steps, needle",
    [
        ("blur", {}, "sd15", 50, "unknown method 'blur'"),
        ("deepcache", {}, "pixart_alpha", 20, "DeepCache does not apply to PixArt-α"),
        ("tome+tgate", {}, "pixart_sigma", 20, "ToMe does not apply to PixArt-Σ"),
        ("deepcache", {"cache_branch_id": 12}, "sdxl", 25, "use 0–8"),
        ("deepcache", {"cache_branch_id": 12}, "sd15", 25, "use 0–11"),
        ("tome", {"ratio": 0.8}, "sd15", 50, "above 0.75"),
        ("tome", {"ratio": 0.0}, "sd15", 50, "merges nothing"),
        ("tgate", {"gate_step": 51}, "sd15", 50, "gate_step=51 is out of range for 50 steps"),
        ("tgate", {"gate_step": 10, "warm_up": 10}, "sd15", 50, "warm-up must end before the gate"),
        ("tome", {"max_downsample": 3}, "sd15", 50, "use one of 1, 2, 4, 8"),
        ("tome", {"max_downsample": 1}, "sdxl", 25, "use one of 2, 4, 8"),
        ("deepcache", {"gate_step": 3}, "sd15", 50, "belongs to T-GATE"),
        ("deepcache", {"cache_intervall": 3}, "sd15", 50, "unknown parameter 'cache_intervall'"),
        ("deepcache", {"cache_interval": "three"}, "sd15", 50, "is not an int"),
        ("deepcache+deepcache", {}, "sd15", 50, "names a method twice"),
    ],
)
def test_invalid_points_fail_with_a_message_that_names_the_fix(methods, params, model, steps, needle):
    with pytest.raises(ConfigError) as err:
        Acceleration.from_params(methods, params, model=model, steps=steps)
    assert needle in str(err.value)


def test_compatibility_matrix_keeps_unet_methods_off_pixart():
    matrix = compatibility_matrix()
    assert set(matrix) == set(COMBOS)
    for combo, row in matrix.items():
        for fam, ok in row.items():
            needs_unet = "deepcache" in combo or "tome" in combo
            assert ok == (FAMILIES[fam].has_unet or not needs_unet), (combo, fam)


def test_combo_names_are_canonical():
    assert canonical_combo("tome+deepcache") == "deepcache+tome"
    assert canonical_combo(["tgate", "DeepCache"]) == "deepcache+tgate"
    assert canonical_combo("t-gate,tome") == "tgate+tome"


@pytest.mark.parametrize("combo", COMBOS)
def test_tags_round_trip(combo):
    params = {"cache_interval": 4, "cache_branch_id": 2, "gate_step": 12, "sp_interval": 3,
              "fi_interval": 2, "warm_up": 1, "ratio": 0.375, "max_downsample": 2}
    chosen = {k: v for k, v in params.items()
              if any(k in Acceleration.from_params(m).params for m in combo.split("+"))}
    acc = Acceleration.from_params(combo, chosen, model="sd15", steps=25)
    assert acc.combo == combo
    assert parse_tag(acc.tag) == acc
    assert acc.params == chosen


def test_tag_is_short_and_readable():
    acc = Acceleration.from_params("deepcache+tgate", {"cache_interval": 3, "cache_branch_id": 0,
                                                      "gate_step": 10})
    assert acc.tag == "DC3B0_TG10S5F1W2"


def test_trial_key_changes_with_each_input_and_nothing_else():
    cfg = PipelineConfig("sd15", "ddim", 50, resolution=512)
    acc = Acceleration.from_params("deepcache", {"cache_interval": 3})
    versions = {"torch": "2.13", "diffusers": "0.42.1"}
    base = trial_key(cfg, acc, "H100", versions)
    assert base == trial_key(PipelineConfig("sd15", "ddim", 50, resolution=512), acc, "H100", dict(versions))
    others = {
        trial_key(PipelineConfig("sd15", "ddim", 25, resolution=512), acc, "H100", versions),
        trial_key(cfg, Acceleration.from_params("deepcache", {"cache_interval": 4}), "H100", versions),
        trial_key(cfg, acc, "H200", versions),
        trial_key(cfg, acc, "H100", {**versions, "diffusers": "0.43.0"}),
    }
    assert base not in others and len(others) == 4


def test_iter_points_covers_the_grid_of_the_combo_only():
    grid = {"cache_interval": [2, 3], "cache_branch_id": [0, 1, 2], "ratio": [0.5]}
    points = list(iter_points("deepcache", grid))
    assert len(points) == 6 and all(set(p) == {"cache_interval", "cache_branch_id"} for p in points)


@pytest.mark.parametrize("bad, needle", [
    (dict(model="sd3"), "unknown model 'sd3'"),
    (dict(scheduler="lms"), "unknown scheduler 'lms'"),
    (dict(preset="full"), "unknown preset 'full'"),
    (dict(steps=0), "steps=0"),
    (dict(resolution=500), "multiple of 8"),
    (dict(model_path="/models/sd"), "only used by the 'hub' preset"),
])
def test_pipeline_config_validation(bad, needle):
    kw = dict(model="sd15", scheduler="ddim", steps=20, preset="arch") | bad
    with pytest.raises(ConfigError, match=needle):
        PipelineConfig(**kw).validate()


def test_catalog_imports_no_heavy_library():
    code = ("import sys, sweep.catalog, sweep.lake_schema, sweep.lake; "
            "print(sorted(m for m in ('torch', 'ray', 'diffusers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
