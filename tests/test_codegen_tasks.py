"""Bounds, tasks and batches from lakes these tests write themselves (real Parquet, real DuckDB)."""

import ast
import json
import subprocess
import sys

import pytest
from codegen_helpers import trial_row, write_lake  # tests/ is on sys.path under pytest
from typer.testing import CliRunner

from codegen.lake import open_lake
from codegen.tasks import build_tasks, floor2, read_tasks, scaled_speedup
from codegen.texts import parse
from diffaccel.cli import app  # the commands as `diffaccel` registers them
from sweep import spec as sweep_spec
from sweep.catalog import FAMILIES

DC = "deepcache"


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def dc(i, b=0):
    return {"cache_interval": i, "cache_branch_id": b}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    rows = [
        # sd15 ddim 50 512 deepcache on H100: bound 2.3 (tie on speedup, lower loss wins)
        trial_row(params=dc(2), speedup=1.9, loss=0.004),
        trial_row(params=dc(3), speedup=2.3, loss=0.015),
        trial_row(params=dc(3, 1), speedup=2.3, loss=0.012),
        trial_row(params=dc(5), speedup=3.4, loss=0.05),            # over budget
        trial_row(params=dc(6), speedup=4.0, loss=0.001, status="failed"),
        # the same config on an A100: its own bound
        trial_row(params=dc(2), speedup=1.6, loss=0.004, device_kind="A100", device="NVIDIA A100-SXM4-80GB"),
        trial_row(params=dc(3), speedup=1.95, loss=0.018, device_kind="A100", device="NVIDIA A100-SXM4-80GB"),
        # a config with no point within budget
        trial_row(model="sdxl", steps=25, resolution=1024, method="tgate",
                  params={"gate_step": 5, "warm_up": 1}, speedup=1.5, loss=0.2),
    ]
    return write_lake(tmp_path_factory.mktemp("lake"), rows)


def test_floor_to_two_decimals_keeps_exact_values():
    assert scaled_speedup(2.3, 1.0) == 2.30
    assert scaled_speedup(2.3, 0.8) == 1.84
    assert scaled_speedup(1.15, 1.2) == 1.38
    assert floor2(2.999) == 2.99 and floor2(0.29) == 0.29


def test_bounds_are_per_gpu_kind_with_ties_to_the_lower_loss_and_empty_configs_absent(lake):
    result = run("bounds", "--lake", lake, "--format", "json")
    assert result.exit_code == 0, result.output
    bounds = json.loads(result.stdout)
    got = {(b["device_kind"], b["model"]): (b["speedup"], b["quality_loss"], b["tag"]) for b in bounds}
    assert got == {("H100", "sd15"): (2.3, 0.012, "DC3B1"), ("A100", "sd15"): (1.95, 0.018, "DC3B0")}
    assert all(b["device"] for b in bounds)
    assert "1 of 3 config(s) have no ok point within 0.02" in result.stderr
    loose = json.loads(run("bounds", "--lake", lake, "--format", "json", "--budget", "0.3").stdout)
    assert {(b["model"], b["device_kind"]): b["speedup"] for b in loose} == {
        ("sd15", "H100"): 3.4, ("sd15", "A100"): 1.95, ("sdxl", "H100"): 1.5}


def test_pareto_fronts_keep_only_non_dominated_ok_points(lake):
    result = run("bounds", "--lake", lake, "--pareto", "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, ln.split(","), strict=True)) for ln in lines[1:]]
    h100 = sorted((float(r["speedup"]), float(r["quality_loss"])) for r in rows
                  if r["device_kind"] == "H100" and r["model"] == "sd15")
    # 2.3 @ 0.015 is dominated by 2.3 @ 0.012; the failed 4.0× point is not a measurement.
    assert h100 == [(1.9, 0.004), (2.3, 0.012), (3.4, 0.05)]


def test_tasks_scale_each_bound_and_record_the_choice(lake, tmp_path):
    # --confidence median: the median alone must reach the request (the old behaviour).
    result = run("tasks", "--lake", lake, "--out", tmp_path, "--scales", "0.8,1.0,1.2", "--confidence", "median")
    assert result.exit_code == 0, result.output
    tasks = list(read_tasks(tmp_path / "tasks.jsonl"))
    h100 = {t.difficulty: t for t in tasks if t.config["device_kind"] == "H100" and t.config["model"] == "sd15"}
    assert {d: t.requested_speedup for d, t in h100.items()} == {"easy": 1.84, "normal": 2.30, "hard": 2.76}
    assert h100["normal"].status == "feasible" and h100["normal"].choice["tag"] == "DC3B1"
    assert h100["easy"].choice["tag"] == "DC2B0"  # 1.9× is the closest to 1.84×
    assert h100["easy"].choice["speedup"] == 1.9 and h100["easy"].choice["device_kind"] == "H100"
    assert {d: t.band for d, t in h100.items()} == {"easy": "normal", "normal": "normal", "hard": "normal"}
    hard = h100["hard"]  # beyond every point: open, with the best known point as its reference
    assert hard.status == "open" and hard.choice is None and hard.best_speedup == 2.3
    assert hard.reference["tag"] == "DC3B1" and hard.reference["speedup"] == 2.3
    assert hard.reference["speedup_ci_low"] == pytest.approx(2.3 * 0.97) and hard.text
    assert "beyond every known point: the best reaches 2.300×" in hard.reason
    a100 = [t for t in tasks if t.config["device_kind"] == "A100"]
    assert sorted(t.requested_speedup for t in a100) == [1.56, 1.95, 2.34]
    sdxl = [t for t in tasks if t.config["model"] == "sdxl"]
    assert len(sdxl) == 1 and sdxl[0].status == "infeasible" and "lowest measured is 0.2" in sdxl[0].reason
    for t in tasks:
        if t.text:
            req = parse(t.text)
            assert req == t.request(), t.text
    # Stable ids: a second run writes the same tasks.
    again = tmp_path / "again"
    run("tasks", "--lake", lake, "--out", again, "--confidence", "median")
    assert (again / "tasks.jsonl").read_text() == (tmp_path / "tasks.jsonl").read_text()


GRID_SPEC = """
name: grid
models: [{model: sd15, preset: arch}, {model: sdxl, preset: arch}]
schedulers: [ddim]
steps: [50]
resolutions: [512]
methods:
  deepcache: {cache_interval: [2, 3], cache_branch_id: [0, 10]}
  tome: {ratio: [0.5], max_downsample: [1, 2]}
combos: [deepcache, tome]
prompts: {file: datasets/prompts/default.txt, count: 2}
"""


def test_grid_strategy_marks_missing_configs_and_writes_a_spec_for_exactly_those(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(2), speedup=2.0, loss=0.01)])
    spec = tmp_path / "grid.yaml"
    spec.write_text(GRID_SPEC)
    out = tmp_path / "out"
    result = run("tasks", "--lake", lake, "--out", out, "--strategy", "grid", "--spec", spec)
    assert result.exit_code == 0, result.output
    tasks = list(read_tasks(out / "tasks.jsonl"))
    missing = sorted((t.config["model"], t.config["method"]) for t in tasks if t.status == "missing")
    assert missing == [("sd15", "tome"), ("sdxl", "deepcache"), ("sdxl", "tome")]
    assert {t.config["model"] for t in tasks if t.status == "feasible"} == {"sd15"}
    # sd15 lacks only ToMe and sdxl lacks both: no single product spec is exact, so two.
    files = sorted(out.glob("missing-spec*.yaml"))
    assert [f.name for f in files] == ["missing-spec-1.yaml", "missing-spec-2.yaml"]
    assert f"(run: diffaccel sweep {files[0]} --lake {lake})" in result.output  # a hint that runs as printed
    plans = [sweep_spec.expand(sweep_spec.load(f)) for f in files]  # each loads and validates
    covered = sorted((cp.config.model, cp.combo) for plan in plans for cp in plan.combos)
    assert covered == missing
    # Grid values no missing config can use were dropped (branch 10 does not exist on SDXL
    # but exists on SD 1.5, whose DeepCache is not missing; max_downsample 1 is SD-only).
    sdxl_dc = next(cp for plan in plans for cp in plan.combos if cp.config.model == "sdxl" and cp.combo == DC)
    assert {m.cache_branch_id for m in sdxl_dc.method_points[DC]} == {0}


def test_grid_needs_a_spec_and_bad_input_fails_before_writing(tmp_path, lake):
    for args, needle in [
        (["--strategy", "grid"], "--strategy grid needs --spec"),
        (["--scales", "0.8,abc"], "scale 'abc' is not a number"),
        (["--policy", "first"], "use one of closest, min-loss, max-speedup"),
        (["--metric", "lpips"], "unknown quality metric 'lpips'"),
    ]:
        result = run("tasks", "--lake", lake, "--out", tmp_path / "o", *args)
        assert result.exit_code == 2 and needle in result.stderr, result.output
        assert not (tmp_path / "o" / "tasks.jsonl").exists()
    result = run("tasks", "--lake", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "error:" in result.stderr


def test_a_batch_with_bad_points_and_bad_tasks_goes_on_and_records_reasons(tmp_path):
    rows = [
        trial_row(params=dc(2), speedup=2.0, loss=0.01),
        trial_row(params=dc(3), speedup=2.6, loss=0.01),
        # params out of range for 50 steps: the highest speedup, and never chosen
        trial_row(params=dc(80), speedup=5.0, loss=0.01, validate=False),
    ]
    lake = write_lake(tmp_path / "lake", rows)
    out = tmp_path / "out"
    assert run("tasks", "--lake", lake, "--out", out, "--scales", "1.0,1.2").exit_code == 0
    lines = (out / "tasks.jsonl").read_text().splitlines()
    broken = json.loads(lines[0])
    broken["task_id"] = "edited000001"
    broken["choice"]["params"]["cache_interval"] = 99
    lines += ["{not json", json.dumps({"task_id": "x", "status": "feasible"}), json.dumps(broken)]
    (out / "tasks.jsonl").write_text("\n".join(lines) + "\n")

    result = run("codegen", "--tasks", out / "tasks.jsonl", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    by_status = {}
    for e in manifest["tasks"]:
        by_status.setdefault(e["status"], []).append(e)
    assert manifest["counts"] == {"open": 1, "malformed": 3, "rendered": 1}
    reasons = " | ".join(e["reason"] for e in by_status["malformed"])
    assert "not valid JSON" in reasons and "task has no 'config'" in reasons
    assert "cache_interval=99 is out of range for 50 steps" in reasons
    rendered = by_status["rendered"][0]
    assert rendered["tag"] == "DC3B0" and rendered["speedup"] == 2.6  # bound 2.6, not the bad 5.0
    assert "cache_interval=80 is out of range" in rendered["skipped_points"][0]["reason"]
    (open_task,) = by_status["open"]  # 1.2 × the bound: beyond every point, with its best known script
    assert "the best reaches 2.600×" in open_task["reason"] and open_task["speedup"] == 2.6
    script = (out / open_task["script"]).read_text()
    assert f"OPEN: this point reaches 2.60×, short of the target {open_task['requested_speedup']:.2f}×" in script
    assert (out / rendered["script"]).is_file()
    assert "3 malformed" in result.stdout and "1 rendered" in result.stdout

    strict = run("codegen", "--tasks", out / "tasks.jsonl", "--out", tmp_path / "strict", "--strict")
    assert strict.exit_code == 1
    # Without the malformed lines, the open task alone is no failure.
    (out / "good.jsonl").write_text("\n".join(lines[:2]) + "\n")
    assert run("codegen", "--tasks", out / "good.jsonl", "--out", tmp_path / "ok", "--strict").exit_code == 0


def test_search_params_keys_hold_the_model_and_values_hold_the_measurement(tmp_path, lake):
    from codegen.scripts import lookup_search_params

    out = tmp_path / "out"
    # 0.99 and 1.0 of the confident bound: the same point answers both.
    run("tasks", "--lake", lake, "--out", out, "--scales", "0.99,1.0")
    assert run("codegen", "--tasks", out / "tasks.jsonl", "--out", out).exit_code == 0
    search = json.loads((out / "search_params.json").read_text())
    hub = FAMILIES["sd15"].hub_id
    h100_request = floor2(2.3 * 0.97)  # the H100 bound: DC3B1's CI low end
    key = str(("StableDiffusionPipeline", "DDIMScheduler", 50, h100_request, 0.02, ["deepcache"], hub))
    entry = search[key]
    assert entry["params"] == {"cache_interval": 3, "cache_branch_id": 1}
    assert entry["speedup"] == 2.3 and entry["speedup_ci"] == [pytest.approx(2.231), pytest.approx(2.369)]
    assert (entry["quality_loss"], entry["metric"], entry["device_kind"]) == (0.012, "ssim", "H100")
    assert len(entry["trial_key"]) == 16
    rendered = [e for e in json.loads((out / "manifest.json").read_text())["tasks"] if e["status"] == "rendered"]
    assert len(search) == len(rendered) == 4  # every rendered task, also those sharing a script
    assert {e["search_params_key"] for e in rendered} == set(search)
    assert len({e["script"] for e in rendered}) == 2 == len(list((out / "scripts").glob("*.py")))
    assert ast.literal_eval(key)[-1] == hub
    # The lookup finds it by its parts, and in the original tool chain's form (steps as a
    # string, no model id).
    assert lookup_search_params(search, "StableDiffusionPipeline", "DDIMScheduler", 50, h100_request, 0.02,
                                "deepcache", hub) == entry
    original = {str(("StableDiffusionPipeline", "DDIMScheduler", "50", 2.3, 0.02, ["deepcache"])): {"x": 1}}
    assert lookup_search_params(original, "StableDiffusionPipeline", "DDIMScheduler", 50, 2.3, 0.02,
                                ["deepcache"]) == {"x": 1}
    assert lookup_search_params(original, "StableDiffusionPipeline", "DDIMScheduler", "50", 2.3, 0.02,
                                "deepcache", hub) == {"x": 1}
    assert lookup_search_params(search, "StableDiffusionPipeline", "DDIMScheduler", 50, h100_request, 0.02,
                                "deepcache", "someone/fine-tune") is None


def test_search_params_do_not_collide_across_models(tmp_path):
    from codegen.scripts import write_batch
    from codegen.tasks import Task

    lake = write_lake(tmp_path / "lake", [trial_row(params=dc(3), speedup=2.3, loss=0.01)])
    (task,) = build_tasks(open_lake(lake).trials(), scales=(1.0,))
    other = Task.from_dict(json.loads(json.dumps(task.to_dict())))
    other.task_id = "0" * 12
    other.choice["model_id"] = "someone/sd15-fine-tune"  # same request, another checkpoint
    result = write_batch([task, other], tmp_path / "out")
    search = json.loads((tmp_path / "out" / "search_params.json").read_text())
    assert {ast.literal_eval(k)[-1] for k in search} == {"someone/sd15-fine-tune", FAMILIES["sd15"].hub_id}
    # Two scripts: the model id differs, so the point is not shared.
    assert len({e["script"] for e in result.entries}) == 2


def test_a_task_stated_in_english_is_answered_from_the_lake(tmp_path, lake):
    text = ("Write inference code for Stable Diffusion 1.5 with the DDIM scheduler and 50 steps at 512×512, "
            "accelerated by DeepCache, that is at least 1.85× faster than the baseline on an A100 with a "
            "quality loss no greater than 0.02 (1 − SSIM).")
    out = tmp_path / "out"
    result = run("codegen", "--task", text, "--lake", lake, "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = manifest["tasks"]
    assert entry["status"] == "rendered" and entry["tag"] == "DC3B0" and entry["speedup"] == 1.95
    assert entry["margin"] == round(1.95 * 0.97 / 1.85, 4) and entry["band"] == "normal"
    assert "band: normal (1.85× against the bound 1.891×" in result.stdout
    assert entry["script"].endswith("sd15_ddim_50s_512px_DC3B0_a100.py")
    # Without the hardware the text matches two configs of the lake: say so, write nothing.
    vague = text.replace(" on an A100", "")
    result = run("codegen", "--task", vague, "--lake", lake, "--out", tmp_path / "vague")
    assert result.exit_code == 2 and "name the hardware" in result.stderr
    assert not (tmp_path / "vague").exists()


def test_codegen_modules_import_no_torch_ray_or_diffusers():
    code = ("import sys, codegen.commands, codegen.scripts, codegen.tasks, codegen.texts, codegen.policy, "
            "codegen.lake; print(sorted(m for m in ('torch', 'ray', 'diffusers', 'transformers') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_config_whose_trials_all_failed_is_recorded_with_the_reason(tmp_path):
    lake = write_lake(tmp_path / "lake", [trial_row(status="failed", speedup=None, loss=None,
                                                    error="OutOfMemoryError: CUDA out of memory")])
    tasks = build_tasks(open_lake(lake).trials())
    assert [t.status for t in tasks] == ["infeasible"]
    assert tasks[0].reason.startswith("failed: 1 trial(s) raised (first error: OutOfMemoryError: CUDA out of memory)")


def test_bounds_table_is_compact_by_default_wide_on_request_and_names_configs_without_a_point(lake):
    result = run("bounds", "--lake", lake)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["config", "method", "speedup", "[95%", "CI]", "loss", "tag"]
    assert max(len(line) for line in lines) <= 100
    assert any("H100 sd15 ddim 50s 512px" in line and "2.30× [2.23–2.37]" in line and "DC3B1" in line
               for line in lines)
    assert "trial_key" not in result.stdout
    assert "1 of 3 config(s) have no ok point within 0.02" in result.stderr
    assert "  H100 sdxl ddim 25s 1024px tgate" in result.stderr  # named, not just counted
    wide = run("bounds", "--lake", lake, "--wide")
    header = wide.stdout.splitlines()[0].split()
    assert header[:3] == ["device_kind", "device", "model"] and "trial_key" in header and "n_ok" in header
