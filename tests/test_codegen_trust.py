"""Tasks a benchmark can trust: confident references, kept-apart reasons, numbers out of
range refused, and codegen output that always matches its manifest (real Parquet lakes,
real DuckDB, the CLI as `diffaccel` registers it)."""

import json
import math

import pytest
from codegen_helpers import trial_row, write_lake  # tests/ is on sys.path under pytest
from typer.testing import CliRunner

from codegen.lake import open_lake
from codegen.scripts import write_batch
from codegen.tasks import Task, build_tasks, read_tasks, read_trials
from diffaccel.cli import app
from sweep.catalog import ConfigError

EXAMPLE_LAKE = "datasets/example-lake"


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def dc(i, b=0):
    return {"cache_interval": i, "cache_branch_id": b}


def tasks_of(lake, **kw):
    lk = open_lake(lake)
    trials = read_trials(lk)
    lk.close()
    return build_tasks(trials, **kw)


# --------------------------------------------------------------------- confidence


def test_on_the_example_lake_every_feasible_reference_is_confirmed_and_clears_the_request():
    tasks = tasks_of(EXAMPLE_LAKE)
    feasible = [t for t in tasks if t.status == "feasible"]
    assert len(feasible) >= 10
    for t in feasible:
        ch = t.choice
        assert ch["phase"] == "confirm" and ch["confirmed"], t.task_id
        assert ch["speedup_ci_low"] >= t.requested_speedup, (t.task_id, ch["speedup_ci_low"], t.requested_speedup)
        assert ch["margin"] == round(ch["speedup_ci_low"] / t.requested_speedup, 4) >= 1
    for t in tasks:
        if t.status == "unconfirmed":
            assert t.candidates and all(c["speedup"] >= t.requested_speedup for c in t.candidates)
    # The old behaviour (median) picks references whose interval does not clear the request.
    old = [t for t in tasks_of(EXAMPLE_LAKE, confidence="median") if t.status == "feasible"]
    assert any(t.choice["speedup_ci_low"] < t.requested_speedup or not t.choice["confirmed"] for t in old)


def test_hard_tasks_are_open_with_text_reference_and_best_known_script(tmp_path):
    tasks = tasks_of(EXAMPLE_LAKE, scales=(1.0, 1.5))
    open_ = [t for t in tasks if t.status == "open"]
    assert open_ and {t.band for t in open_} == {"hard"}  # 1.5 × the bound: above 1.2 B
    for t in open_:
        assert t.text and t.reference["speedup"] == t.best_speedup < t.requested_speedup
        assert t.reference["speedup_ci_low"] is not None and t.reference["speedup_ci_high"] is not None
    result = write_batch(tasks, tmp_path / "out")
    entries = {e["task_id"]: e for e in result.entries}
    t = open_[0]
    script = (tmp_path / "out" / entries[t.task_id]["script"]).read_text()
    assert (f"OPEN: this point reaches {t.reference['speedup']:.2f}×, short of the target "
            f"{t.requested_speedup:.2f}×") in script
    assert "RANDOM WEIGHTS" in script  # the example lake was measured with preset arch
    assert not result.failed() or any(e["status"] in ("infeasible", "unconfirmed") for e in result.entries)


def test_bands_place_any_request_and_their_edges_are_options(tmp_path):
    from codegen.tasks import band

    # easy < 0.8 B <= normal <= 1.2 B < hard, exactly at the edges (decimal, not float)
    got = {x: band(x, 2.3) for x in (1.83, 1.84, 2.3, 2.76, 2.77)}
    assert got == {1.83: "easy", 1.84: "normal", 2.3: "normal", 2.76: "normal", 2.77: "hard"}
    assert band(1.83, 2.3, (0.5, 2.0)) == "normal" and band(1.83, 2.3, (0.9, 1.0)) == "easy"
    # `codegen --task` states the band of a request; the bound is the confirmed point's CI low end, 1.94.
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(3), speedup=2.0, loss=0.01)])
    text = ("Write inference code for Stable Diffusion 1.5 with the DDIM scheduler and 50 steps at 512×512, "
            "accelerated by DeepCache, that is at least {}× faster than the baseline on an H100 with a "
            "quality loss no greater than 0.02 (1 − SSIM).")
    for speedup, level, status, edges in [("1.50", "easy", "feasible", "0.8,1.2"),
                                          ("2.32", "normal", "open", "0.8,1.2"),
                                          ("2.33", "hard", "open", "0.8,1.2"),
                                          ("2.33", "normal", "open", "0.5,1.25")]:
        result = run("codegen", "--task", text.format(speedup), "--lake", lake, "--out", tmp_path / speedup,
                     "--bands", edges)
        assert result.exit_code == 0, result.output
        assert f"band: {level} ({speedup}× against the bound 1.940×" in result.stdout
        assert f"status: {status}" in result.stdout
    result = run("tasks", "--lake", lake, "--out", tmp_path / "o", "--bands", "1.2,0.8")
    assert result.exit_code == 2 and "low then high" in result.stderr


# ------------------------------------------------------------------------- reasons


def test_reasons_are_kept_apart(tmp_path):
    rows = [
        # over budget: stopped and pruned, with the measured loss
        trial_row(model="sd21", params=dc(5), speedup=None, loss=0.85, status="stopped"),
        trial_row(model="sd21", params=dc(6), speedup=None, loss=None, status="pruned"),
        # failed, with the error
        trial_row(model="sd15", steps=25, params=dc(3), speedup=None, loss=None, status="failed",
                  error="RuntimeError: shapes do not match"),
        # ok but over budget
        trial_row(model="sd15", steps=30, params=dc(4), speedup=3.0, loss=0.3),
        # a config with a bound, so the lake has SSIM scores
        trial_row(params=dc(2), speedup=2.0, loss=0.01),
    ]
    lake = write_lake(tmp_path / "lake", rows)
    reasons = {(t.config["model"], t.config["steps"]): t.reason for t in tasks_of(lake) if t.status == "infeasible"}
    assert reasons[("sd21", 50)].startswith("over budget: 2 trial(s) stopped or pruned over every budget, "
                                            "lowest measured loss 0.85")
    assert reasons[("sd15", 25)].startswith("failed: 1 trial(s) raised (first error: RuntimeError: shapes do not match)")
    assert reasons[("sd15", 30)].startswith("over budget: no ok point has a ssim quality loss within 0.02 "
                                            "(the lowest measured is 0.3)")
    assert "error` column" not in " ".join(reasons.values())


def test_a_metric_absent_from_the_lake_says_how_to_get_it(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01, quality_loss_clip=None),
                                          trial_row(model="sd21", params=dc(2), speedup=2.0, loss=0.01,
                                                    quality_loss_clip=None)])
    tasks = tasks_of(lake, metric="clip")
    assert [t.status for t in tasks] == ["infeasible"] * 2
    assert {t.reason for t in tasks} == {"no trial in the lake has a CLIP score: sweep with `quality.clip_model`"}
    # Every budget metric has its hint: the judge's absence is a reason too, not a KeyError.
    tasks = tasks_of(lake, metric="judge")
    assert [t.status for t in tasks] == ["infeasible"] * 2
    assert all(t.reason.startswith("no trial in the lake has a ") and "judge_model" in t.reason for t in tasks)


def test_a_config_with_no_trials_at_all_says_so(tmp_path):
    from codegen.tasks import grid_configs
    from sweep.spec import load

    spec = tmp_path / "s.yaml"
    spec.write_text("name: g\nmodels: [{model: sd15, preset: arch}, {model: sd21, preset: arch}]\n"
                    "schedulers: [ddim]\nsteps: [50]\nresolutions: [512]\n"
                    "methods:\n  deepcache: {cache_interval: [2], cache_branch_id: [0]}\ncombos: [deepcache]\n"
                    "prompts: {file: datasets/prompts/default.txt, count: 2}\n")
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    tasks = tasks_of(lake, grid=grid_configs(load(spec)))
    (missing,) = [t for t in tasks if t.status == "missing"]
    assert missing.config["model"] == "sd21" and missing.reason.startswith("no trials at all")


# ------------------------------------------------------------- numbers and names


def test_infinite_speedups_and_rows_without_device_kind_give_reasons_not_tracebacks(tmp_path):
    rows = [trial_row(params=dc(2), speedup=2.0, loss=0.01),
            trial_row(params=dc(3), speedup=float("1" * 401), loss=0.01),  # overflowed: inf
            trial_row(model="sd21", params=dc(2), speedup=2.0, loss=0.01, device_kind=None, device=None)]
    lake = write_lake(tmp_path / "lake", rows)
    out = tmp_path / "out"
    result = run("tasks", "--lake", lake, "--out", out)
    assert result.exit_code == 0, result.output
    text = (out / "tasks.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    tasks = list(read_tasks(out / "tasks.jsonl"))
    sd15 = [t for t in tasks if t.config["model"] == "sd15"]
    assert {t.best_speedup for t in sd15} == {2.0} and all("inf×" not in (t.text or "") for t in sd15)
    assert "not a finite measurement" in sd15[0].skipped_points[0]["reason"]
    (sd21,) = [t for t in tasks if t.config["model"] == "sd21"]
    assert sd21.status == "infeasible" and "no device_kind" in sd21.reason
    # `bounds` agrees with the tasks (`sweep.bounds`): the infinite point is no bound, the
    # finite 2.0x is, and the infinite one is named so it can be swept again.
    bounds = run("bounds", "--lake", lake, "--format", "json")
    assert bounds.exit_code == 0 and "inf" not in bounds.stdout.lower()
    (sd15_bound,) = [r for r in json.loads(bounds.stdout) if r["model"] == "sd15"]
    assert sd15_bound["speedup"] == 2.0
    assert "non-finite speedup" in bounds.stderr and "H100 sd15 ddim 50s 512px deepcache" in bounds.stderr


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.update(requested_speedup=float("inf")), "only finite numbers"),
    (lambda t: t.update(requested_speedup="1e400"), "only finite numbers"),
    (lambda t: t.update(requested_speedup=5000.0), "the speedup 5000.0 of task"),
    (lambda t: t.update(budget=float("nan")), "only finite numbers"),
    (lambda t: t["config"].update(steps=10 ** 9), "the step count"),
    (lambda t: t.update(task_id="ab\ud800cd"), "task_id"),
    (lambda t: t.update(task_id="../../etc"), "task_id"),
])
def test_tasks_files_with_numbers_or_ids_out_of_range_are_malformed_lines(tmp_path, edit, needle):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    (task,) = tasks_of(lake, scales=(1.0,))
    data = json.loads(json.dumps(task.to_dict()))  # a deep copy
    edit(data)
    line = json.dumps(data, allow_nan=True).replace('"1e400"', "1e400")  # a number json reads as inf
    path = tmp_path / "tasks.jsonl"
    path.write_bytes((json.dumps(task.to_dict()) + "\n" + line + "\n").encode("utf-8", "surrogatepass"))
    items = list(read_tasks(path))
    assert isinstance(items[0], Task)
    assert not isinstance(items[1], Task) and needle in items[1].reason, items[1]
    result = run("codegen", "--tasks", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == {"malformed": 1, "rendered": 1}


def test_a_non_utf8_tasks_file_gives_malformed_lines_not_a_traceback(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    (task,) = tasks_of(lake, scales=(1.0,))
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(json.dumps(task.to_dict()).encode() + b"\n" + b'{"task_id": "\xff\xfe"}\n')
    result = run("codegen", "--tasks", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "line 2: not UTF-8" in result.stderr or "not UTF-8 text" in result.stderr


def test_hostile_trial_keys_and_device_kinds_give_safe_file_names(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    (task,) = tasks_of(lake, scales=(1.0,))
    twin = Task.from_dict(json.loads(json.dumps(task.to_dict())))
    twin.task_id = "0" * 12
    twin.choice["trial_key"] = "../a/b\nc"  # another measurement of the same tag: its key names the file
    for t in (task, twin):
        t.config["device_kind"] = t.choice["device_kind"] = "H100\n/../x"
    out = tmp_path / "out"
    result = write_batch([task, twin], out)
    names = sorted(p.name for p in (out / "scripts").iterdir())
    assert len(names) == 2 and all(n.replace("_", "").replace("-", "").replace(".", "").isalnum() for n in names)
    assert all(n.isascii() for n in names)
    assert {e["script"] for e in result.entries} == {f"scripts/{n}" for n in names}


def test_a_batch_that_cannot_be_written_leaves_the_previous_output_whole(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    (task,) = tasks_of(lake, scales=(1.0,))
    out = tmp_path / "out"
    write_batch([task], out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = Task.from_dict(json.loads(json.dumps(task.to_dict())))
    bad.task_id = "1" * 12
    bad.config["note"] = "\ud800"  # a lone surrogate reaches the manifest: cannot be written as UTF-8
    other = Task.from_dict(json.loads(json.dumps(task.to_dict())))
    other.task_id, other.choice["params"] = "2" * 12, dc(3)
    other.choice["tag"] = "DC3B0"
    with pytest.raises(ConfigError, match="cannot write"):
        write_batch([other, bad], out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # scripts and manifest as they were; no .manifest.json.tmp, no staging folder
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "scripts", "search_params.json"]


def test_out_pointing_at_a_file_is_refused(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    afile = tmp_path / "file"
    afile.write_text("keep me")
    for args in (["tasks", "--lake", lake, "--out", afile], ["tasks", "--lake", lake, "--out", afile / "sub"],
                 ["codegen", "--task", "x", "--lake", lake, "--out", afile]):
        result = run(*args)
        assert result.exit_code == 2 and "is a file" in result.stderr, result.output
    assert afile.read_text() == "keep me"


def test_nothing_non_finite_is_ever_written(tmp_path):
    from codegen.tasks import write_tasks

    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    (task,) = tasks_of(lake, scales=(1.0,))
    task.best_speedup = math.inf
    with pytest.raises(ConfigError, match="only finite numbers"):
        write_tasks(tmp_path / "t" / "tasks.jsonl", [task])
    assert not (tmp_path / "t" / "tasks.jsonl").exists() and not list((tmp_path / "t").glob(".*"))


def test_screen_only_points_make_a_task_unconfirmed_with_its_candidates(tmp_path):
    rows = [trial_row(params=dc(2), speedup=2.0, loss=0.01, phase="screen"),
            trial_row(params=dc(3), speedup=2.4, loss=0.015, phase="screen", speedup_ci_low=1.6)]
    lake = write_lake(tmp_path / "lake", rows)
    tasks = {t.scale: t for t in tasks_of(lake, scales=(0.8, 1.0))}
    # No confirmed point: the bound is the best median, and nothing confidently meets it.
    assert {t.status for t in tasks.values()} == {"unconfirmed"}
    t = tasks[1.0]
    assert t.requested_speedup == 2.4 and [c["params"] for c in t.candidates] == [dc(3)]
    assert [c["params"] for c in tasks[0.8].candidates] == [dc(2), dc(3)]  # closest first
    assert "confirm the candidates" in t.reason and t.text
    out = tmp_path / "out"
    result = write_batch(tasks.values(), out)
    assert result.counts == {"unconfirmed": 2} and result.failed()
    (entry,) = [e for e in result.entries if e["task_id"] == t.task_id]
    assert entry["candidates"][0]["trial_key"] == t.candidates[0]["trial_key"]
    assert not list((out / "scripts").iterdir())
    # With --confidence median the same lake answers them (the old behaviour).
    assert {t.status for t in tasks_of(lake, scales=(0.8, 1.0), confidence="median")} == {"feasible"}


def test_reanswer_keeps_the_requests_and_follows_the_grown_lake(tmp_path):
    from codegen.tasks import reanswer

    first = [trial_row(params=dc(2), speedup=2.0, loss=0.01)]
    lake1 = write_lake(tmp_path / "l1", first)
    targets = tasks_of(lake1, scales=(1.0, 1.2))
    hard = next(t for t in targets if t.scale == 1.2)
    assert hard.status == "open" and hard.band == "normal"
    # A missing config, as `--strategy grid` states it before any sweep: no device kind or resolution yet.
    missing = Task(task_id="m" * 12, status="missing", config={
        "device_kind": None, "model": "sd21", "scheduler": "ddim", "steps": 50, "resolution": None,
        "method": "deepcache"}, budget=0.02, metric="ssim", policy="closest")
    grown = write_lake(tmp_path / "l2", [*first, trial_row(params=dc(3), speedup=2.8, loss=0.015),
                                         trial_row(model="sd21", params=dc(2), speedup=1.8, loss=0.01)])
    lk = open_lake(grown)
    trials = read_trials(lk)
    lk.close()
    again = reanswer(trials, [*targets, missing], scales=(1.0,))
    by_id = {t.task_id: t for t in again}
    now = by_id[hard.task_id]  # the same request, now met by the new point
    assert now.requested_speedup == hard.requested_speedup and now.status == "feasible"
    assert now.choice["params"] == dc(3) and now.scale == 1.2
    sd21 = [t for t in again if t.config["model"] == "sd21"]
    assert [(t.status, t.config["device_kind"], t.config["resolution"]) for t in sd21] == [("feasible", "H100", 512)]
    assert "m" * 12 not in by_id
