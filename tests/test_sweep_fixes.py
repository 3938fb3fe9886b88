"""Defects found in the 2×H200 `map-shapes` run and its review (progress count, SIGTERM,
ToMe determinism, duplicate lake warnings). The lake is real Parquet on disk."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from engine_helpers import one_thread  # noqa: F401
from lake_rows import baseline, trial
from sweep_helpers import reap, tiny_spec

from sweep.driver import stored_outcomes
from sweep.lake import LakeWriter, lake_warnings_as_lines


def test_a_bad_file_is_warned_about_once_however_often_a_sweep_reads_it(tmp_path):
    # A sweep reads trials before Ray starts, again after the lease, and baselines for its
    # sink: each bad file must still be one warning line, not one per read.
    lake = LakeWriter(str(tmp_path))
    lake.write_trials([trial("deepcache", {"cache_interval": 3}, speedup=2.0)])
    lake.write_baselines([baseline()])
    bad_base = next((tmp_path / "baselines").rglob("*.parquet")).parent / "part-notes.parquet"
    bad_base.write_text("baseline_key\nk\n")
    bad_trial = next((tmp_path / "trials").rglob("*.parquet")).parent / "part-foreign.parquet"
    pq.write_table(pa.table({"city": ["Oslo"]}), bad_trial)
    out = io.StringIO()
    with lake_warnings_as_lines(out):
        for _ in range(2):
            stored = stored_outcomes(lake, "ssim")
            keys = lake.existing_baseline_keys()
    assert len(stored) == 1 and len(keys) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert sum(str(bad_base) in ln for ln in lines) == 1 and sum(str(bad_trial) in ln for ln in lines) == 1


# ------------------------------------------------------------------ progress "running"


@pytest.mark.slow
def test_progress_counts_both_trials_in_flight_on_two_fake_gpus(tmp_path, monkeypatch, capsys):
    """The 2×H200 run said `running 1` on every line although two trials always ran: the
    line was written as a trial ended, before its GPU got the next one."""
    import re

    import ray

    from sweep.driver import run_sweep

    monkeypatch.setenv("DIFFACCEL_STATE_DIR", str(tmp_path / "state"))
    assert not ray.is_initialized()
    spec = tiny_spec(early_stop={"enabled": False, "prune": False})  # four points, all ready at once
    summary = run_sweep(spec, str(tmp_path / "lake"), num_cpus=2, num_gpus=2, progress=True)
    assert summary.concurrency == 2 and summary.total == 4
    lines = [ln for ln in capsys.readouterr().err.splitlines() if re.match(r"\[sweep\] \d+/\d+ done", ln)]
    assert len(lines) == len(set(lines)), "a line was printed twice"
    seen = {}
    for ln in lines[:-1]:
        m = re.match(r"\[sweep\] (\d+)/4 done .* running (\d+) ", ln)
        assert m, ln
        seen[int(m[1])] = int(m[2])
    # All four points are ready from the start, so while two or more are left to finish,
    # each GPU holds one: after the 1st and 2nd screen results, two trials are in flight.
    assert seen.get(1) == 2 and seen.get(2) == 2, lines
    # Afterwards at most one: the last screen point, then the confirmation.
    assert all(r <= 1 for d, r in seen.items() if d >= 3), lines
    assert lines[-1].startswith("[sweep] 4/4 done") and "running" not in lines[-1]


# ------------------------------------------------------------------ SIGTERM


@pytest.mark.slow
def test_sigterm_mid_sweep_releases_the_lease_and_a_rerun_finishes(tmp_path):
    """`timeout 380 python -m sweep.driver …` on the GPU host: Ray's handler printed a long
    stack and `_lease.json` stayed, so the next sweep waited for it to go stale."""
    import collections
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil
    from sweep_helpers import ROOT, expected_keys, trial_rows, write_spec

    from sweep.lake_schema import FAILED, SCREEN
    from sweep.lease import LEASE_FILE

    six = {"methods": {"deepcache": {"cache_interval": [2, 3], "cache_branch_id": [0, 1, 2]}},
           "early_stop": {"enabled": False, "prune": False}}
    spec_path, lake = write_spec(tmp_path / "spec.yaml", **six), tmp_path / "lake"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), DIFFACCEL_STATE_DIR=str(tmp_path / "state"))
    cmd = [sys.executable, "-m", "sweep.driver", str(spec_path), "--lake", str(lake), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    screen = lambda: collections.Counter(r["trial_key"] for r in trial_rows(lake) if r["phase"] == SCREEN)  # noqa: E731
    try:
        end = time.monotonic() + 300
        while sum(screen().values()) < 2:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < end, "no two rows within 300 s"
            time.sleep(0.2)
        assert (lake / LEASE_FILE).exists()  # held while the sweep runs
        proc.send_signal(signal.SIGTERM)  # the driver alone, as `timeout` does
        out, err = proc.communicate(timeout=120)
        group_left = [p for p in psutil.process_iter(["pid"]) if _pgid(p.pid) == proc.pid]
    finally:
        reap(proc)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "SIGTERM" in err, err[-3000:]
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err[-3000:]
    assert not (lake / LEASE_FILE).exists()
    assert not group_left, "Ray processes outlived the driver"
    landed = screen()
    expected = expected_keys(tiny_spec(**six))
    assert set(landed.values()) == {1} and 2 <= sum(landed.values()) < len(expected), landed

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{sum(landed.values())} already stored" in done.stdout
    keys = screen()
    assert set(keys) == expected and set(keys.values()) == {1}, keys
    assert not [r for r in trial_rows(lake) if r["status"] == FAILED]
    assert not (lake / LEASE_FILE).exists()


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except OSError:
        return None


# ------------------------------------------------------------------ ToMe determinism


def test_a_tome_points_images_do_not_depend_on_the_calls_before(one_thread):  # noqa: F811
    """tomesd's random partition drew from a generator every call advanced: the same point
    gave 1-SSIM 0.026 (screen) and 0.010 (confirm) in one sweep under DDIM."""
    import torch

    from sweep import methods, pipelines
    from sweep.catalog import Acceleration

    kw = {"num_inference_steps": 3, "height": 64, "width": 64}
    pipe = pipelines.set_scheduler(pipelines.build("sd15", "tiny"), "ddim")
    acc = Acceleration.from_params("tome", {"ratio": 0.5, "max_downsample": 1}, model="sd15", steps=3)
    first = methods.apply(pipelines.fork(pipe), acc, "sd15", steps=3)
    alone = first.generate("a lighthouse in a storm", seed=0, **kw)
    for seed in (1, 2):  # other prompts and seeds in between, as in a sweep
        first.generate("a bowl of fruit", seed=seed, **kw)
    again = first.generate("a lighthouse in a storm", seed=0, **kw)
    first.remove()
    assert torch.equal(alone, again)
    torch.manual_seed(1234)  # another global RNG state, as after other work in the worker
    fresh = methods.apply(pipelines.fork(pipe), acc, "sd15", steps=3)
    assert torch.equal(fresh.generate("a lighthouse in a storm", seed=0, **kw), alone)
    # Still tomesd's random partition: another seed gives another image.
    assert not torch.equal(fresh.generate("a lighthouse in a storm", seed=1, **kw), alone)


# ------------------------------------------------------------------ `diffaccel trial` progress


def test_trial_cli_shows_loading_and_measuring_progress_and_nothing_else(one_thread):  # noqa: F811
    """Issue #14: the README's first example printed one loading line, then nothing for minutes."""
    from engine_helpers import STEPS
    from typer.testing import CliRunner

    from diffaccel.cli import app

    args = ["trial", "--model", "sd15", "--preset", "tiny", "--scheduler", "ddim", "--steps", str(STEPS),
            "--method", "tome", "--n-prompts", "2", "--min-pairs", "2", "--max-pairs", "3",
            "--target-halfwidth", "0.9", "--device", "cpu", "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.stderr + repr(r.exception)
    lines = r.stderr.splitlines()
    assert all(ln.startswith("[diffaccel] ") for ln in lines), lines  # quiet otherwise: no library chatter
    said = [ln.removeprefix("[diffaccel] ") for ln in lines]
    want = ["loading sd15", "loading: building the VAE", "loading: building the UNet",
            "loading: building the text encoder", "loading: moving the pipeline to cpu, float32", "loaded in ",
            "quality TM50D1: 2 prompt(s)", "quality TM50D1: prompt 1/2 ", "quality TM50D1: prompt 2/2 ",
            "compute ratio TM50D1", "speed TM50D1: 1 warm-up pair(s), then 2–3 timed pairs",
            "speed TM50D1: pair 1/3 ", "speed TM50D1: pair 2/3 "]
    at = 0
    for w in want:  # in this order
        hits = [i for i, s in enumerate(said) if i >= at and s.startswith(w)]
        assert hits, (w, said)
        at = hits[0] + 1
    assert len(said) <= len(want) + 1, said  # at most one more pair: one line per stage, no repeats
