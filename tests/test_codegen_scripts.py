"""Generated scripts: every family × method combination renders, is ruff-clean, keeps
hostile values as data, and RUNS on tiny pipelines saved with save_pretrained, with each
method's real state checked in the running process."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codegen.scripts import render, write_batch
from codegen.tasks import Task
from sweep.catalog import Acceleration, compatibility_matrix

REPO = Path(__file__).resolve().parent.parent
STEPS, RES = 2, 64
# One thread: on a busy 2-core machine torch's spinning OpenMP threads made a two-step
# tiny run take seconds instead of a fraction of one.
RUN_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
CASES = [(fam, combo) for combo, row in compatibility_matrix().items() for fam, ok in row.items() if ok]


def task_for(fam, combo, scheduler="ddim", **choice):
    params = {}
    if "deepcache" in combo:
        params.update(cache_interval=2, cache_branch_id=0)
    if "tgate" in combo:  # gate after the first of two steps, so both T-GATE phases run
        params.update(gate_step=1, sp_interval=1, fi_interval=1, warm_up=0)
    if "tome" in combo:
        params.update(ratio=0.5, max_downsample=2 if fam == "sdxl" else 1)
    acc = Acceleration.from_params(combo, params, model=fam, steps=STEPS)
    config = {"device_kind": "H100", "model": fam, "scheduler": scheduler, "steps": STEPS,
              "resolution": RES, "method": acc.combo}
    ch = {"method": acc.combo, "params": acc.params, "tag": acc.tag, "speedup": 1.8, "speedup_ci_low": 1.7,
          "speedup_ci_high": 1.9, "quality_loss": 0.012, "trial_key": "0123abcd4567ef89",
          "device": "NVIDIA H100 80GB HBM3", "device_kind": "H100", "preset": "arch", "dtype": "float16",
          "guidance_scale": 7.5, "measured_at": "2025-05-01T12:00:00+00:00", **choice}
    return Task(task_id=f"{abs(hash((fam, combo))) % 16**12:012x}", status="feasible", config=config,
                budget=0.02, metric="ssim", policy="closest", requested_speedup=1.75, difficulty="normal",
                scale=1.0, best_speedup=1.8, choice=ch, text="a task text")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("scripts")
    result = write_batch([task_for(f, c) for f, c in CASES], out)
    assert result.counts == {"rendered": len(CASES)}, result.entries
    return {(e["config"]["model"], e["config"]["method"]): out / e["script"] for e in result.entries}


def test_every_family_and_combination_renders_ruff_clean(rendered):
    assert len(rendered) == len(CASES) == 30  # 7 combinations on 4 UNet families, T-GATE on 2 PixArts
    files = [str(p) for p in rendered.values()]
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
                           str(REPO / "pyproject.toml"), *files], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    src = rendered[("sdxl", "deepcache+tgate+tome")].read_text()
    assert "TgateSDXLDeepCacheLoader(pipe, **DEEPCACHE)" in src and "tomesd.apply_patch(pipe, **TOME)" in src
    assert "pipe.tgate(" in src and "NVIDIA H100 80GB HBM3" in src and "0123abcd4567ef89" in src
    assert "TgatePixArtSigmaLoader(pipe)" in rendered[("pixart_sigma", "tgate")].read_text()
    assert "DeepCacheSDHelper(pipe=pipe)" in rendered[("sd21", "deepcache")].read_text()
    assert rendered[("sd15", "deepcache")].name == "sd15_ddim_2s_64px_DC2B0_h100.py"


def test_scheduler_kwargs_are_passed():
    src = render(task_for("sd15", "tome", scheduler="dpmpp")).source
    assert "DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type=\"dpmsolver++\")" in src


def test_hostile_values_stay_data(tmp_path):
    evil = "x'\"\nimport os; os.system('echo pwned')  # \\\r\n'''\"\"\""
    task = task_for("sd15", "deepcache", model_id=evil, device=evil, trial_key=evil)
    task.text = evil
    source = render(task).source
    clean = render(task_for("sd15", "deepcache")).source
    tree, clean_tree = ast.parse(source), ast.parse(clean)
    # Same statements, same shape: nothing was injected.
    assert [type(n).__name__ for n in tree.body] == [type(n).__name__ for n in clean_tree.body]
    model = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "MODEL")
    assert ast.literal_eval(model.value) == evil
    assert "os.system" not in [getattr(n, "attr", None) for n in ast.walk(tree)]
    assert all(line.startswith("#") or not line or line == "import argparse"
               for line in source.split("import argparse")[0].splitlines())


RUNNER = textwrap.dedent('''
    import contextlib, io, json, runpy, sys, time, traceback
    from pathlib import Path

    from sweep.pipelines import quiet_libraries, save_preset

    quiet_libraries()
    jobs, models, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
    for fam in sorted({j["model"] for j in jobs}):
        save_preset(fam, "tiny", models / fam)
    results = {}
    for j in jobs:
        sys.argv = [j["script"], "--model", str(models / j["model"]), "--device", "cpu", "--steps", "2",
                    "--resolution", "64", "--output", j["png"], "--check"]
        buf = io.StringIO()
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(buf):
                runpy.run_path(j["script"], run_name="__main__")
            results[j["script"]] = {"ok": True, "stdout": buf.getvalue(), "s": time.perf_counter() - t0}
        except BaseException:
            results[j["script"]] = {"ok": False, "stdout": buf.getvalue(), "error": traceback.format_exc()}
    # Controls: the checks read real state, so an unpatched pipeline reports nothing active.
    for j in jobs:
        if j["control"]:
            g = runpy.run_path(j["script"], run_name="control")
            pipe = g["load_pipeline"](str(models / j["model"]), "cpu")
            pipe(prompt="a cat", num_inference_steps=2, height=64, width=64)
            helper = None
            if "DeepCacheSDHelper" in g:
                helper = g["DeepCacheSDHelper"](pipe=pipe)
                helper.reset_states()
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                g["report"](pipe, helper)
            results["control:" + j["script"]] = {"ok": True, "stdout": buf.getvalue()}
    (out / "results.json").write_text(json.dumps(results))
''')


@pytest.fixture(scope="module")
def ran(rendered, tmp_path_factory):
    """All scripts in one process (imports take seconds; a run on a tiny pipeline takes less)."""
    tmp = tmp_path_factory.mktemp("runs")
    jobs = [{"script": str(p), "model": fam, "png": str(tmp / (p.stem + ".png")),
             "control": fam == "sd15" and combo in ("deepcache", "tgate+tome")}
            for (fam, combo), p in rendered.items()]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    runner = tmp / "runner.py"
    runner.write_text(RUNNER)
    env = {**os.environ, **RUN_ENV, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(runner), str(tmp / "jobs.json"), str(tmp / "models"), str(tmp)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, json.loads((tmp / "results.json").read_text())


@pytest.mark.slow
def test_every_script_runs_on_a_saved_tiny_pipeline_with_its_methods_active(rendered, ran):
    from PIL import Image

    tmp, results = ran
    for (_, combo), path in rendered.items():
        r = results[str(path)]
        assert r["ok"], f"{path.name}:\n{r.get('error')}"
        lines = r["stdout"].splitlines()
        for method, word in (("deepcache", "enabled"), ("tgate", "active"), ("tome", "patched")):
            line = next((ln for ln in lines if ln.startswith(method + ":")), None)
            if method in combo.split("+"):
                assert line and line.startswith(f"{method}: {word},"), (path.name, r["stdout"])
            else:
                assert line is None, (path.name, r["stdout"])
        with Image.open(tmp / (path.stem + ".png")) as img:
            assert img.size == (RES, RES)
    controls = {k: v["stdout"] for k, v in results.items() if k.startswith("control:")}
    assert len(controls) == 2
    text = "\n".join(controls.values())
    assert "deepcache: NOT enabled" in text and "tgate: NOT active" in text and "tome: NOT patched" in text


@pytest.mark.slow
def test_a_script_runs_as_it_stands(rendered, ran):
    """One script exactly as a user runs it: `python script.py ...`, in its own process."""
    tmp, _ = ran
    script = rendered[("sd15", "deepcache+tome")]
    cwd = tmp / "standalone"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, str(script), "--model", str(tmp / "models" / "sd15"), "--device", "cpu",
                           "--steps", "2", "--resolution", "64", "--check"], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, **RUN_ENV}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deepcache: enabled" in proc.stdout and "tome: patched" in proc.stdout
    assert (cwd / (script.stem + ".png")).is_file()  # the default --output


@pytest.mark.slow
def test_baseline_mode_runs_the_plain_pipeline(rendered, ran):
    """`--baseline` skips the acceleration: two scripts of different methods, same model and
    seed, make the same image (a T-GATE script's plain call is pipe(...), not pipe.tgate)."""
    import numpy as np
    from PIL import Image

    tmp, _ = ran
    cwd = tmp / "baseline"
    cwd.mkdir()
    images = []
    for combo in ("tgate", "deepcache+tome"):
        out = cwd / f"{combo}.png"
        proc = subprocess.run([sys.executable, str(rendered[("sd15", combo)]), "--model", str(tmp / "models" / "sd15"),
                               "--device", "cpu", "--steps", "2", "--resolution", "64", "--baseline",
                               "--output", str(out)],
                              cwd=cwd, capture_output=True, text=True, env={**os.environ, **RUN_ENV}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with Image.open(out) as img:
            images.append(np.array(img))
    assert images[0].shape == (RES, RES, 3) and np.array_equal(images[0], images[1])


@pytest.mark.slow  # over 5 s: `make check` stays under 2 minutes
def test_time_measures_interleaved_pairs_and_prints_the_speedup_with_its_interval(rendered, ran):
    """`--time` on a tiny pipeline: it runs standalone (no import of diffaccel: PYTHONPATH
    is not set), and prints a speedup inside its own 95% interval."""
    import re

    tmp, _ = ran
    script = rendered[("sd15", "deepcache")]
    assert "import codegen" not in script.read_text() and "import sweep" not in script.read_text()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), "--model", str(tmp / "models" / "sd15"), "--device", "cpu",
                           "--steps", "2", "--resolution", "64", "--time", "--pairs", "3"],
                          cwd=tmp, capture_output=True, text=True, env={**env, **RUN_ENV}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"speedup (\d+\.\d+)× \(95% CI (\d+\.\d+)–(\d+\.\d+)\) over 3 pairs on cpu; "
                  r"diffaccel measured 1\.80×", proc.stdout)
    assert m, proc.stdout
    speedup, low, high = map(float, m.groups())
    assert 0 < low <= speedup <= high
    bad = subprocess.run([sys.executable, str(script), "--time", "--pairs", "1"], cwd=tmp,
                         capture_output=True, text=True, env={**env, **RUN_ENV}, timeout=300)
    assert bad.returncode == 2 and "at least 2 pairs" in bad.stderr


def test_a_shared_script_lists_every_task_and_random_weights_say_so(tmp_path):
    first, second = task_for("sd15", "deepcache"), task_for("sd15", "deepcache")
    second.task_id, second.requested_speedup, second.text = "0000000000ff", 1.6, "another task text"
    mirror = task_for("sd15", "deepcache", model_id="someone/sd15-mirror")  # same point, other checkpoint
    mirror.task_id = "0000000000aa"
    result = write_batch([first, second, mirror], tmp_path)
    scripts = {e["task_id"]: e["script"] for e in result.entries}
    assert scripts[first.task_id] == scripts[second.task_id] != scripts[mirror.task_id]
    header = (tmp_path / scripts[first.task_id]).read_text().split("import argparse")[0]
    assert "This point serves 2 tasks:" in header
    assert f"Task {first.task_id} (feasible" in header and f"Task {second.task_id} (feasible" in header
    assert "asks at least 1.75×" in header and "asks at least 1.60×" in header
    assert "RANDOM WEIGHTS" in header and "'arch'" in header
    trained = task_for("sd15", "deepcache", preset="hub", model_path="/models/sd15")
    assert "RANDOM WEIGHTS" not in render(trained).source and '"/models/sd15"' in render(trained).source
