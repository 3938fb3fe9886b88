"""Issue 10 §5: a spec is bounded and finite, or a clear error before Ray starts.

Also the structured errors of the split parser (issue 11 item 5): every problem is a
`SpecError` with the key path it is about.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from sweep_helpers import tiny
from typer.testing import CliRunner

from diffaccel.cli import app
from sweep import spec as S
from sweep.catalog import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _problems(data: dict, **kw) -> dict[str, str]:
    """path -> message of every problem `validate` finds."""
    with pytest.raises(S.InvalidSpec) as err:
        S.validate(data, base_dir=str(ROOT), **kw)
    assert isinstance(err.value, ConfigError) and isinstance(err.value, S.SpecError)
    assert all(isinstance(e, S.SpecError) for e in err.value.errors)
    return {e.path: e.message for e in err.value.errors}


def _set(data: dict, dotted: str, value) -> dict:
    node = data
    *head, last = dotted.split(".")
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value
    return data


@pytest.mark.parametrize(("key", "value", "path", "says"), [
    ("seeds", [], "seeds", "is empty: every trial needs at least one seed"),
    ("models", [], "models", "is empty: list at least one model"),
    ("models", None, "models", "is empty: list at least one model"),
    ("steps", [], "steps", "is empty: give at least one"),
    ("schedulers", [], "schedulers", "is empty: give at least one"),
    ("resolutions", [], "resolutions", "is empty: give at least one"),
    ("combos", [], "combos", "is empty: list at least one combination"),
    ("steps", [4, 1001], "steps[1]", "1001 is too large: use at most 1000"),
    ("resolutions", [4104], "resolutions[0]", "4104 is too large: use at most 4096"),
    ("resolutions", [100], "resolutions[0]", "100 is not a multiple of 8"),
    ("batch", 65, "batch", "65 is too large: use at most 64"),
    ("guidance_scale", math.nan, "guidance_scale", "nan is not a finite number"),
    ("guidance_scale", math.inf, "guidance_scale", "inf is not a finite number"),
    ("quality.budgets", [0.02, math.nan], "quality.budgets[1]", "nan is not a finite number"),
    ("quality.budgets", [math.inf], "quality.budgets[0]", "inf is not a finite number"),
    ("early_stop.margin", math.nan, "early_stop.margin", "nan is not a finite number"),
    ("early_stop.margin", math.inf, "early_stop.margin", "inf is not a finite number"),
    ("measure.ci_target", math.nan, "measure.ci_target", "nan is not a finite number"),
    ("methods.tome", {"ratio": [math.nan]}, "methods.tome.ratio", "is not a finite number"),
    ("methods.tome", {"ratio": {"from": 0.1, "to": math.inf, "step": 0.1}}, "methods.tome.ratio",
     "range bounds must be finite numbers"),
])
def test_unbounded_or_empty_values_are_errors_with_their_path(key, value, path, says):
    data = tiny()
    data["methods"]["tome"] = {"ratio": [0.5]}
    data["combos"] = ["deepcache", "tome"]
    probs = _problems(_set(data, key, value))
    assert path in probs, probs
    assert says in probs[path], probs[path]


def test_yaml_nan_and_inf_are_refused_as_written():
    data = tiny()
    del data["quality"]
    text = yaml.safe_dump(data) + "guidance_scale: .nan\nquality: {metric: ssim, budgets: [.inf]}\n"
    with pytest.raises(S.InvalidSpec) as err:
        S.loads(text, base_dir=str(ROOT))
    assert {e.path for e in err.value.errors} == {"guidance_scale", "quality.budgets[0]"}


def test_shipped_limits_still_load():
    data = tiny(steps=[1000], batch=64, resolutions=[4096])
    data["methods"] = {"deepcache": {"cache_interval": [2]}}
    spec = S.validate(data, base_dir=str(ROOT))
    assert spec.steps == (1000,) and spec.batch == 64 and spec.resolutions == (4096,)


def test_a_tiny_float_step_is_counted_not_expanded():
    """Issue 10: {from: 0.1, to: 0.75, step: 1e-9} reached 15 GB in --dry-run."""
    data = tiny()
    data["methods"] = {"tome": {"ratio": {"from": 0.1, "to": 0.75, "step": 1e-9}}}
    data["combos"] = ["tome"]
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        probs = _problems(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 2 and peak < 20 * 2**20
    assert "650,000,001 values, more than the 100,000 points" in probs["methods.tome.ratio"]


def test_a_grid_too_large_is_refused_with_its_size_before_enumerating(monkeypatch):
    data = tiny(steps=[8, 9], schedulers=["ddim", "euler"])
    data["methods"] = {"deepcache": {"cache_interval": [2, 3, 4, 5], "cache_branch_id": list(range(12))},
                       "tgate": {"gate_step": [4, 5, 6], "sp_interval": [1, 2, 3], "warm_up": [0, 1, 2]}}
    data["combos"] = ["deepcache+tgate"]
    spec = S.validate(data, base_dir=str(ROOT))
    size = S.expand(spec).size
    assert size == 2 * 2 * (4 * 12) * (3 * 3 * 3)  # 4 configs, every point valid
    # Over the limit: the exact count, when expanding to find it is cheap.
    probs = _problems(data, max_points=size - 1)
    assert probs[""].startswith(f"the spec would run {size:,} points, more than --max-points {size - 1:,}")
    # Far over it: counted from the grid lengths, and no point is built.
    data["methods"]["tgate"] = {"gate_step": {"from": 2, "to": 7}, "sp_interval": {"from": 1, "to": 8},
                                "fi_interval": {"from": 1, "to": 8}, "warm_up": {"from": 0, "to": 6}}
    monkeypatch.setattr(S, "_MAX_CHECKS", 1000)
    monkeypatch.setattr(S, "expand", lambda spec: pytest.fail("expanded a grid too large to run"))
    probs = _problems(data, max_points=1000)
    assert probs[""].startswith("the spec's grids hold up to 516,096 points (10,944 method configurations "
                                "to check), more than --max-points 1,000")


def test_planning_time_follows_the_points_run():
    """A grid of which only a few points are valid is planned at the cost of those few."""
    data = tiny(steps=[4])
    data["methods"] = {"deepcache": {"cache_interval": {"from": 1, "to": 20_000}}}
    data["combos"] = ["deepcache"]
    t0 = time.monotonic()
    _problems(data, max_points=100_000)
    # 20,000 values checked once each (never a point built for them); 4 fit 4 steps.
    assert time.monotonic() - t0 < 5
    # 5–20,000 can be used by no config: a few are named, the rest counted.
    with pytest.raises(S.InvalidSpec) as err:
        S.validate(data, base_dir=str(ROOT))
    assert [e.path for e in err.value.errors] == ["methods.deepcache.cache_interval"] * 6
    assert "5 is out of range for 4 steps: use 1–4" in err.value.problems[0]
    assert "and 19,991 more value(s) no config can use" in err.value.problems[-1]
    data["methods"]["deepcache"]["cache_interval"] = {"from": 1, "to": 4}
    assert S.expand(S.validate(data, base_dir=str(ROOT))).size == 4


def test_sweep_cli_refuses_above_max_points_before_ray(tmp_path):
    import ray

    data = tiny()
    data["methods"] = {"deepcache": {"cache_interval": [1, 2, 3], "cache_branch_id": [0, 1]}}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    lake = tmp_path / "lake"
    r = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(lake), "--dry-run", "--max-points", "5"])
    assert r.exit_code == 2
    assert "the spec would run 6 points, more than --max-points 5" in r.output
    r = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(lake), "--max-points", "5"])
    assert r.exit_code == 2 and "--max-points 5" in r.output
    assert not ray.is_initialized() and not lake.exists()
    r = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(lake), "--dry-run", "--max-points", "6"])
    assert r.exit_code == 0 and "6 point(s)" in r.output
    r = CliRunner().invoke(app, ["sweep", str(spec), "--lake", str(lake), "--dry-run", "--max-points", "0"])
    assert r.exit_code == 2


def test_errors_are_structured_not_parsed():
    """Grid values no config can use are blamed on the parameter the method names."""
    data = tiny(steps=[4])
    data["methods"] = {"tgate": {"gate_step": [2], "sp_interval": [1], "warm_up": [1, 3]}}
    data["combos"] = ["tgate"]
    probs = _problems(data)
    assert probs == {"methods.tgate.warm_up": "3 is out of range with gate_step=2 (warm-up must end before "
                                              "the gate): use 0–1"}


def test_section_defaults_come_from_their_dataclasses():
    data = {"models": [{"model": "sd15", "preset": "tiny"}], "methods": {"deepcache": {}}}
    spec = S.validate(data, base_dir=str(ROOT))
    assert spec.measure == S.Measure() and spec.early_stop == S.EarlyStop()
    work = S.Workload()
    assert (spec.schedulers, spec.steps, spec.resolutions, spec.batch, spec.dtype, spec.guidance_scale) == (
        work.schedulers, work.steps, work.resolutions, work.batch, work.dtype, work.guidance_scale)
    assert (spec.prompts_file, spec.prompt_count) == (S.PromptSet().file, S.PromptSet().count)
    assert (spec.metric, spec.budgets) == (S.Quality().metric, S.Quality().budgets)
    assert spec.models == (S.ModelEntry("sd15", "tiny"),)
