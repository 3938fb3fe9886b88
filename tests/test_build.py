"""`diffaccel build` on CPU with tiny presets: real Ray, real sweeps, a real lake."""

from __future__ import annotations

import json

import pytest
from sweep_helpers import tiny_spec, trial_rows, write_spec  # tests/ is on sys.path under pytest

from codegen.tasks import Task
from diffaccel.build import missing_work, refinement_points
from sweep import spec as S


def test_refinement_steps_past_the_frontier_in_each_parameters_faster_direction():
    spec = tiny_spec(steps=[8], methods={"deepcache": {"cache_interval": [2, 3], "cache_branch_id": [0, 1]},
                                         "tome": {"ratio": [0.25, 0.5], "max_downsample": [1]}},
                     combos=["deepcache", "deepcache+tome"])
    config = {"model": "sd15", "steps": 8}
    # From DC3B1: a larger interval (by the grid's step, 1) and a smaller branch.
    pts = refinement_points(spec, config, "deepcache", [{"cache_interval": 3, "cache_branch_id": 1}], set())
    assert pts == [{"cache_interval": 4, "cache_branch_id": 1}, {"cache_interval": 3, "cache_branch_id": 0}]
    # Already measured points are not proposed; past the valid range (branch < 0) neither.
    pts = refinement_points(spec, config, "deepcache", [{"cache_interval": 3, "cache_branch_id": 0}], {"DC4B0"})
    assert pts == []
    # ToMe: a stronger ratio by the grid's step (0.25), capped at 0.75; max_downsample to the next choice.
    pts = refinement_points(spec, config, "deepcache+tome",
                            [{"cache_interval": 8, "cache_branch_id": 0, "ratio": 0.5, "max_downsample": 1}], set())
    assert {(p["ratio"], p["max_downsample"]) for p in pts} == {(0.75, 1), (0.5, 2)}  # interval 9 > 8 steps
    assert refinement_points(spec, config, "deepcache+tome",
                             [{"cache_interval": 8, "cache_branch_id": 0, "ratio": 0.75, "max_downsample": 8}],
                             set()) == []


def test_missing_work_keeps_its_three_kinds_apart():
    spec = tiny_spec(steps=[8], models=[{"model": "sd15", "preset": "tiny"}, {"model": "sd21", "preset": "tiny"}])
    cfg = {"device_kind": "cpu", "model": "sd15", "scheduler": "ddim", "steps": 8, "resolution": 64,
           "method": "deepcache"}
    point = {"cache_interval": 2, "cache_branch_id": 1}
    base = dict(budget=0.05, metric="ssim", policy="closest")
    targets = [
        Task("a" * 12, "missing", {**cfg, "model": "sd21"}, **base),
        Task("b" * 12, "unconfirmed", cfg, requested_speedup=1.5, band="normal", **base,
             candidates=[{"params": point, "confirmed": False}]),
        Task("c" * 12, "open", cfg, requested_speedup=2.0, band="normal", **base, reference={"params": point}),
        Task("d" * 12, "open", cfg, requested_speedup=9.0, band="hard", **base, reference={"params": point}),
    ]
    trials = {"tag": ["DC2B1"], "status": ["ok"], "speedup": [1.6], "quality_loss_ssim": [0.01],
              "params_json": [json.dumps(point)], **{k: [cfg[k]] for k in cfg}}
    work = {w.why: w for w in missing_work(spec, targets, trials)}
    assert sorted(work) == ["confirm", "missing", "refine"]
    assert [m.model for m in work["missing"].spec.models] == ["sd21"]
    assert [cg.grid for cg in work["confirm"].spec.combos] == [{"cache_interval": [2], "cache_branch_id": [1]}]
    refined = {(cg.grid["cache_interval"][0], cg.grid["cache_branch_id"][0]) for cg in work["refine"].spec.combos}
    assert refined == {(3, 1), (2, 0)}  # from the normal open target only; the hard one is not searched
    for w in work.values():  # every sub-spec is a valid spec of one config
        assert S.expand(w.spec).size >= 1 and len(w.spec.configs()) == 1


REFINE = dict(steps=[8], methods={"deepcache": {"cache_interval": [2], "cache_branch_id": [0]}},
              prompts={"file": "datasets/prompts/default.txt", "count": 1},
              quality={"metric": "ssim", "budgets": [0.5]},
              measure={"screen_pairs": 2, "confirm_pairs": 3, "ci_target": 0.1})


@pytest.mark.slow
def test_a_normal_request_the_first_grid_leaves_unmet_is_met_by_refinement(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from diffaccel.cli import app

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = write_spec(tmp_path / "refine.yaml", **REFINE)
    lake, out = tmp_path / "lake", tmp_path / "out"
    result = CliRunner().invoke(app, ["build", str(spec), "--lake", str(lake), "--out", str(out), "--rounds", "4",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    state = json.loads((out / "build.json").read_text())
    rounds = state["rounds"]
    assert rounds[0]["swept"] == {"spec": 1} and rounds[0]["rows_added"] >= 2 and rounds[0]["gpu_seconds"] > 0
    targets = [Task.from_dict(t) for t in state["targets"]]
    (target,) = [t for t in targets if t.scale == 1.2]  # 1.2 × the first grid's bound: normal, unmet then
    assert target.band is not None
    assert rounds[0]["statuses"].get("feasible", 0) < len([t for t in targets if t.status != "trivial"])
    # Met in a later round, by a point past the first grid (cache_interval > 2), confirmed, CI clearing it.
    assert target.status == "feasible", (target.reason, rounds)
    assert target.choice["params"]["cache_interval"] > 2 and target.choice["phase"] == "confirm"
    assert target.choice["speedup_ci_low"] >= target.requested_speedup
    met = [r for r in rounds[1:] if any(c["task_id"] == target.task_id and c["to"] == "feasible" for c in r["changed"])]
    assert met and met[0]["swept"].get("refine") and met[0]["rows_added"] > 0
    assert "[build] round 2:" in result.stderr and "targets:" in result.stderr
    assert (out / "tasks.jsonl").is_file() and (out / "manifest.json").is_file()
    # Every row once; a rerun resumes: the first sweep adds nothing, and the round log goes on.
    keys = [(r["trial_key"], r["phase"]) for r in trial_rows(lake)]
    assert len(keys) == len(set(keys))
    # The GPU budget counts the build's device time over reruns (build.json): already spent.
    again = CliRunner().invoke(app, ["build", str(spec), "--lake", str(lake), "--out", str(out), "--rounds", "3",
                                     "--max-gpu-minutes", "0.01", "--quiet"])
    assert again.exit_code == 0, again.output
    rounds2 = json.loads((out / "build.json").read_text())["rounds"]
    assert len(rounds2) == len(rounds) + 1 and rounds2[-1]["rows_added"] == 0
    assert rounds2[-1]["stopped"].startswith("GPU budget spent") and "stopped: GPU budget spent" in again.stderr
    assert sorted((r["trial_key"], r["phase"]) for r in trial_rows(lake)) == sorted(keys)


def test_bad_input_fails_before_any_sweep(tmp_path):
    from typer.testing import CliRunner

    from diffaccel.cli import app

    spec = write_spec(tmp_path / "s.yaml", **REFINE)
    afile = tmp_path / "f"
    afile.write_text("x")
    for args, needle in [(["--rounds", "0"], "at least 1"), (["--max-gpu-minutes", "-1"], "positive number"),
                         (["--confidence", "p90"], "unknown confidence"), (["--out", str(afile)], "is a file")]:
        base = ["build", str(spec), "--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "o")]
        r = CliRunner().invoke(app, base + args)
        assert r.exit_code == 2 and needle in r.stderr, r.output
        assert not (tmp_path / "lake").exists()
