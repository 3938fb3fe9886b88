"""Large batches: tasks and scripts built in worker processes equal those built in one,
a rerun reuses unchanged script files, the lake is read without pandas, and each CLI
command loads only what it needs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from codegen_helpers import trial_row, write_lake  # tests/ is on sys.path under pytest

from codegen import scripts, tasks
from codegen.lake import open_lake
from codegen.tasks import BadLine, Task, build_tasks, read_trials
from sweep.catalog import Acceleration, compatibility_matrix

REPO = Path(__file__).resolve().parent.parent


def task_for(fam, combo, steps=20, i=0, key=None, **choice):
    params = {}
    if "deepcache" in combo:
        params.update(cache_interval=2 + i % 4, cache_branch_id=0)
    if "tgate" in combo:
        params.update(gate_step=1 + i % 5, sp_interval=1, fi_interval=1, warm_up=0)
    if "tome" in combo:
        params.update(ratio=0.5, max_downsample=2 if fam == "sdxl" else 1)
    acc = Acceleration.from_params(combo, params, model=fam, steps=steps)
    config = {"device_kind": "H100", "model": fam, "scheduler": "ddim", "steps": steps, "resolution": 512,
              "method": acc.combo}
    ch = {"method": acc.combo, "params": acc.params, "tag": acc.tag, "speedup": 1.5 + i / 100,
          "quality_loss": 0.01, "trial_key": key or f"{i:016x}", "device": "NVIDIA H100 80GB HBM3",
          "device_kind": "H100", "preset": "arch", "dtype": "float16", **choice}
    return Task(task_id=f"{i:012x}", status="feasible", config=config, budget=0.02, metric="ssim",
                policy="closest", requested_speedup=1.5, difficulty="normal", scale=1.0, best_speedup=1.6,
                choice=ch, text=f"task text {i}")


def batch():
    combos = [(f, c) for c, row in compatibility_matrix().items() for f, ok in row.items() if ok]
    items = [task_for(f, c, i=i) for i, (f, c) in enumerate(combos * 3)]
    items.append(task_for("sd15", "deepcache", i=0))  # the same point again: the same script
    items.append(task_for("sd15", "deepcache", i=0, key="ffffffffffffffff"))  # same name, another trial
    bad = task_for("sd15", "deepcache", i=1)
    bad.choice["params"] = {"cache_interval": 99}
    items += [bad, BadLine(7, "not valid JSON")]
    for choice in (None, ["not", "an", "object"]):
        t = task_for("sd21", "tgate", i=2)
        t.choice = choice
        items.append(t)
    items.append(Task(task_id="f" * 12, status="infeasible", config=items[0].config, budget=0.02, metric="ssim",
                      policy="closest", reason="no point reaches 9×"))
    return items


def files(out):
    return {p.name: p.read_bytes() for p in (out / "scripts").iterdir()}


def test_scripts_rendered_in_workers_equal_those_rendered_here(tmp_path, monkeypatch):
    monkeypatch.setattr(scripts, "_CHUNK", 5)  # several chunks for two workers
    items = batch()
    one = scripts.write_batch(items, tmp_path / "one", workers=1)
    two = scripts.write_batch(items, tmp_path / "two", workers=2)
    assert one.entries == two.entries
    for name in ("manifest.json", "search_params.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert files(tmp_path / "one") == files(tmp_path / "two")
    # A bad task, or a feasible one with no usable choice, is recorded and the batch goes on.
    malformed = [e for e in two.entries if e["status"] == "malformed"]
    assert len(malformed) == 4 and one.counts["rendered"] == len(items) - 5
    assert any("choice must be an object" in e["reason"] for e in malformed)
    assert any(n.endswith("_ffffffff.py") for n in files(tmp_path / "two"))


def test_a_rerun_links_unchanged_scripts_and_rewrites_the_rest(tmp_path):
    items = batch()
    out = tmp_path / "out"
    scripts.write_batch(items, out)
    before = {p.name: p.stat().st_ino for p in (out / "scripts").iterdir()}
    edited, shared = sorted(before)[:2]
    (out / "scripts" / edited).write_text("# edited by hand\n")
    os.link(out / "scripts" / shared, tmp_path / "elsewhere.py")  # a file someone else also holds
    items[3].text = "another text"  # changes that task's script
    changed = scripts.render(items[3]).name

    scripts.write_batch(items, out)
    after = {p.name: p.stat().st_ino for p in (out / "scripts").iterdir()}
    assert sorted(after) == sorted(before)
    renewed = {n for n in after if after[n] != before[n]}
    assert renewed == {edited, shared, changed}
    assert (out / "scripts" / edited).read_text() != "# edited by hand\n"
    assert (out / "scripts" / changed).read_text().count("another text") == 1
    assert (tmp_path / "elsewhere.py").stat().st_nlink == 1  # not linked into the batch
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or old folder left


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    rows = []
    for i, (model, steps) in enumerate([("sd15", 50), ("sd15", 25), ("sd21", 50), ("sdxl", 30)]):
        for j in range(4):
            rows.append(trial_row(model=model, steps=steps, resolution=1024 if model == "sdxl" else 512,
                                  params={"cache_interval": 2 + j}, speedup=1.5 + j / 2 + i / 10,
                                  loss=0.005 * (j + 1)))
    rows += [
        trial_row(params={"cache_interval": 9}, speedup=float("nan"), loss=0.001),  # NaN: not a measurement
        trial_row(params={"cache_interval": 8}, speedup=7.0, loss=float("nan")),
        trial_row(params={"cache_interval": 7}, speedup=6.0, loss=None),
        trial_row(params={"cache_interval": 80}, speedup=5.0, loss=0.01, validate=False),  # skipped point
        trial_row(params={"cache_interval": 3}, speedup=2.2, loss=0.01, device_kind="A100", device="NVIDIA A100"),
        trial_row(model="sdxl", steps=25, resolution=1024, method="tgate", params={"gate_step": 5},
                  speedup=1.4, loss=0.3),
    ]
    return write_lake(tmp_path_factory.mktemp("lake"), rows)


def test_tasks_from_columns_in_workers_equal_tasks_from_a_dataframe(lake, monkeypatch):
    monkeypatch.setattr(tasks, "_CONFIG_CHUNK", 1)  # a chunk per config
    lk = open_lake(lake)
    frame, columns = lk.trials(), read_trials(lk)
    lk.close()
    assert "pandas" not in type(columns).__module__
    results = [[t.to_dict() for t in build_tasks(trials, scales=(0.8, 1.0, 1.2), workers=w)]
               for trials, w in ((frame, 1), (columns, 1), (columns, 3))]
    assert results[0] == results[1] == results[2]
    by_config = {(t["config"]["device_kind"], t["config"]["model"], t["config"]["steps"]): t for t in results[0]}
    assert len(by_config) == 6
    sd15 = [t for t in results[0] if t["config"]["model"] == "sd15" and t["config"]["steps"] == 50
            and t["config"]["device_kind"] == "H100"]
    assert sd15[0]["best_speedup"] == 3.0  # neither the NaN nor the NULL-loss points count
    assert "cache_interval=80" in sd15[0]["skipped_points"][0]["reason"]
    assert all(not isinstance(v, float) or math.isfinite(v) for t in results[0] for v in (t["choice"] or {}).values())


def _modules_after(args, modules):
    code = ("import json, sys\nfrom typer.testing import CliRunner\nfrom diffaccel.cli import app\n"
            f"r = CliRunner().invoke(app, {args!r})\n"
            "assert r.exit_code == 0, r.output\n"
            f"print(json.dumps({{m: m in sys.modules for m in {modules!r}}}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_each_command_loads_only_what_it_needs(lake, tmp_path):
    heavy = ["pandas", "duckdb", "sweep.driver", "codegen.report", "codegen.query", "codegen.lake"]
    loaded = _modules_after(["tasks", "--lake", lake, "--out", str(tmp_path)], heavy)
    assert loaded == {**dict.fromkeys(heavy, False), "duckdb": True, "codegen.lake": True}
    loaded = _modules_after(["codegen", "--tasks", str(tmp_path / "tasks.jsonl"), "--out", str(tmp_path)], heavy)
    assert loaded == dict.fromkeys(heavy, False)
    assert (tmp_path / "manifest.json").is_file()
    loaded = _modules_after(["sweep", "--help"], heavy)
    assert not loaded["duckdb"] and not loaded["codegen.lake"] and loaded["sweep.driver"]
    proc = subprocess.run([sys.executable, "-m", "diffaccel.cli", "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0
    for name in ("trial", "sweep", "query", "report", "bounds", "tasks", "codegen"):
        assert f" {name} " in proc.stdout


def test_without_duckdb_the_help_and_sweep_still_work():
    code = ("import sys\nsys.modules['duckdb'] = None  # as on a host without it\n"
            "from typer.testing import CliRunner\nfrom diffaccel.cli import app\n"
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
            "assert 'Unavailable here: needs duckdb' in r.output and 'codegen' in r.output, r.output\n"
            "r = CliRunner().invoke(app, ['sweep', '--help']); assert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(app, ['report', '--lake', 'x', '--out', 'y'])\n"
            "assert r.exit_code == 2 and 'needs duckdb' in r.stderr, r.output\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
