"""`diffaccel trial`: clear errors before any model loads, and a full run on tiny."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import STEPS, one_thread  # noqa: F401
from typer.testing import CliRunner

from diffaccel.cli import app
from sweep import lake_schema, quality

ROOT = Path(__file__).resolve().parent.parent
BASE = ["trial", "--model", "sd15", "--scheduler", "ddim", "--steps", "50"]

# (extra arguments, what the message must say)
INVALID = [
    (["--method", "foo"], "unknown method 'foo'"),
    (["--model", "pixart_alpha", "--method", "deepcache"], "DeepCache does not apply to PixArt-α"),
    (["--model", "pixart_sigma", "--method", "tome"], "ToMe does not apply to PixArt-Σ"),
    (["--model", "sdxl", "--method", "deepcache", "--param", "cache_branch_id=12"],
     "cache_branch_id=12 is out of range on Stable Diffusion XL"),
    (["--method", "tome", "--param", "ratio=0.8"], "ratio=0.8 is above 0.75"),
    (["--method", "tgate", "--param", "gate_step=51"], "gate_step=51 is out of range for 50 steps"),
    (["--method", "tome", "--param", "max_downsample=3"], "max_downsample=3 is not valid"),
    (["--method", "deepcache", "--param", "cache_interval"], "is not NAME=VALUE"),
    (["--method", "deepcache", "--param", "gate_step=3"], "belongs to T-GATE"),
    (["--method", "deepcache", "--param", "cache_interval=two"], "is not an int"),
    (["--method", "deepcache", "--scheduler", "lms"], "unknown scheduler 'lms'"),
    (["--method", "deepcache", "--preset", "big"], "unknown preset 'big'"),
    (["--method", "deepcache", "--prompts", "/no/such/prompts.txt"], "does not exist"),
    (["--method", "deepcache", "--max-pairs", "1"], "need 2 <= min <= max"),
    (["--method", "deepcache", "--clip-model", "./no/such/clip"], "is not a folder"),
    # Issue 10 §6: each of these used to reach the model (or diffusers) first.
    (["--method", "tome", "--param", "ratio=nan"], "ratio='nan' is not a finite number"),
    (["--method", "tome", "--param", "ratio=inf"], "ratio='inf' is not a finite number"),
    (["--method", "deepcache", "--device", "tpu"], "--device tpu: not a device diffaccel runs on: use cpu, cuda"),
    (["--method", "deepcache", "--device", "cuda:x"], "--device cuda:x: not a device"),
    (["--method", "deepcache", "--guidance-scale", "nan"], "guidance_scale=nan must be a finite number"),
    (["--method", "deepcache", "--guidance-scale", "inf"], "guidance_scale=inf must be a finite number"),
    (["--method", "deepcache", "--preset", "hub", "--model-path", "/missing"],
     "--model-path /missing: no such folder: pass a folder saved with save_pretrained"),
    (["--method", "deepcache", "--preset", "hub", "--model-path", "tests"],
     "--model-path tests: the folder has no model_index.json"),
    (["--method", "deepcache", "--resolution", "8192"], "resolution=8192 must be a multiple of 8 in 8–4096"),
    (["--method", "deepcache", "--batch", "65"], "batch=65 must be an integer in 1–64"),
]


def _args(extra: list[str]) -> list[str]:
    args = list(BASE)
    for flag in ("--model", "--scheduler"):
        if flag in extra:  # a later flag wins in typer, but keep the command readable
            i = args.index(flag)
            del args[i:i + 2]
    return args + extra


def test_invalid_input_fails_before_loading_anything():
    """Every invalid input exits 2 with its message, no traceback, and torch never imported."""
    script = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from diffaccel.cli import app\n"
        f"cases = {json.dumps([_args(e) for e, _ in INVALID])}\n"
        "out = []\n"
        "for args in cases:\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    out.append([r.exit_code, r.stderr, repr(r.exception) if r.exit_code not in (0, 2) else ''])\n"
        "print(json.dumps({'results': out, 'torch': 'torch' in sys.modules,"
        " 'diffusers': 'diffusers' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["torch"] is False and report["diffusers"] is False
    for (extra, message), (code, err, exc) in zip(INVALID, report["results"], strict=True):
        assert code == 2, (extra, err, exc)
        assert message in err, (extra, err)
        assert err.startswith("error: ") and "Traceback" not in err


def test_a_hub_id_that_cannot_be_loaded_is_one_line(monkeypatch):
    """Offline, an uncached hub id fails inside diffusers: the error names it and the fix."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["trial", "--model", "sd15", "--scheduler", "ddim", "--steps", "4", "--method", "deepcache",
            "--preset", "hub", "--model-path", "nobody/no-such-pipeline", "--device", "cpu", "--no-speed"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.stderr + repr(r.exception)
    (err,) = [line for line in r.stderr.splitlines() if not line.startswith("[diffaccel] ")]
    assert err.startswith("error: cannot load Stable Diffusion 1.5 from 'nobody/no-such-pipeline'")
    assert "--preset arch" in err and "Traceback" not in r.output


def test_help_does_not_import_torch():
    script = ("import sys\nfrom typer.testing import CliRunner\nfrom diffaccel.cli import app\n"
              "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
              "r = CliRunner().invoke(app, ['trial', '--help']); assert '--target-halfwidth' in r.output\n"
              "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return quality.make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.mark.usefixtures("one_thread")
def test_trial_json_end_to_end(clip_dir):
    args = ["trial", "--model", "sd15", "--preset", "tiny", "--scheduler", "ddim", "--steps", str(STEPS),
            "--method", "deepcache+tgate", "--param", "cache_interval=2", "--param", "gate_step=2",
            "--param", "sp_interval=2", "--param", "warm_up=1", "--n-prompts", "2", "--min-pairs", "2",
            "--max-pairs", "2", "--clip-model", str(clip_dir), "--device", "cpu", "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr + repr(r.exception)
    row = json.loads(r.stdout)
    assert list(row) == lake_schema.TRIAL_SCHEMA.names
    assert row["method"] == "deepcache+tgate" and row["tag"] == "DC2B0_TG2S2F1W1"
    assert row["n_pairs"] == 2 and row["speedup"] > 0 and row["compute_ratio"] < 1
    assert 0 < row["ssim"] < 1 and row["clip_score"] is not None and row["n_prompts"] == 2
    assert json.loads(row["versions_json"])["tgate"] == "1.0.0"
    # Progress goes to stderr, one line per stage; stdout holds only the JSON.
    assert "[diffaccel] loading" in r.stderr and "[diffaccel] speed" in r.stderr


@pytest.mark.usefixtures("one_thread")
def test_trial_table_output(tmp_path):
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"prompt": "a cat on a sofa"}\n')
    args = ["trial", "--model", "pixart_alpha", "--preset", "tiny", "--scheduler", "euler", "--steps",
            str(STEPS), "--method", "tgate", "--param", "gate_step=2", "--param", "sp_interval=2",
            "--param", "warm_up=0", "--prompts", str(prompts), "--n-prompts", "1", "--no-speed"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr + repr(r.exception)
    out = r.stdout
    assert "method    tgate" in out and "compute " in out and "quality   SSIM" in out
    assert "speedup" not in out  # --no-speed
    assert "tgate 1.0.0" in out and "host CPU" in out
