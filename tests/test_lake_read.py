"""Reading the lake: views, deduplication, schema evolution, bad files, bounds and Pareto."""

from __future__ import annotations

import os
import random
import re
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from lake_rows import baseline, trial

from codegen.lake import LakeError, LakeWarning, open_lake
from sweep.lake import LakeWriter
from sweep.lake_schema import BOUND_GROUP, TRIAL_PARTITIONS, TRIAL_SCHEMA, file_schema


def listing(root) -> dict[str, tuple[int, int]]:
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            out[os.path.join(folder, name)] = (st.st_size, st.st_mtime_ns)
    return out


def test_trials_dedupe_latest_wins_and_confirm_beats_screen(tmp_path):
    lake = LakeWriter(str(tmp_path))
    a = trial("deepcache", {"cache_interval": 2}, speedup=1.5, minute=0)
    a_later = trial("deepcache", {"cache_interval": 2}, speedup=1.6, minute=10)
    b_confirm = trial("tgate", {"gate_step": 5}, speedup=1.2, phase="confirm", minute=0)
    b_screen_later = trial("tgate", {"gate_step": 5}, speedup=1.9, phase="screen", minute=30)
    lake.write_trials([a, b_confirm])
    lake.write_trials([a_later, b_screen_later])
    lake.write_baselines([baseline(minute=0, latency=1.0)])
    lake.write_baselines([baseline(minute=5, latency=1.2)])

    lk = open_lake(str(tmp_path))
    t = lk.trials().set_index("trial_key")
    assert len(t) == 2
    assert t.loc[a["trial_key"], "speedup"] == 1.6
    assert t.loc[b_confirm["trial_key"], ("speedup", "phase")].tolist() == [1.2, "confirm"]
    assert len(lk.trials_all()) == 4
    assert lk.baselines()["latency_s"].tolist() == [1.2]
    # the whole schema, in its order, with partition columns as strings
    assert list(lk.trials().columns) == TRIAL_SCHEMA.names
    assert t["model"].tolist() == ["sd15", "sd15"] and set(t["method"]) == {"deepcache", "tgate"}
    con = lk.connect()
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE trials)").fetchall())
    assert types["model"] == types["method"] == "VARCHAR" and types["steps"] == "INTEGER"


def test_schema_evolution_and_empty_partition(tmp_path):
    lake = LakeWriter(str(tmp_path))
    lake.write_trials([trial("deepcache", {"cache_interval": 3}, speedup=2.0)])
    # A newer tgate file with a column only T-GATE writes...
    row = trial("tgate", {"gate_step": 4}, speedup=1.4)
    newer = pa.Table.from_pylist([{k: v for k, v in row.items() if k not in TRIAL_PARTITIONS}],
                                 schema=file_schema(TRIAL_SCHEMA, TRIAL_PARTITIONS))
    newer = newer.append_column("tgate_cross_attn_saved", pa.array([0.42]))
    folder = tmp_path / "trials" / "model=sd15" / "method=tgate"
    folder.mkdir(parents=True)
    pq.write_table(newer, folder / "part-newer.parquet")
    # ...and an older tome file from before device_kind and the CLIP loss existed.
    old_row = trial("tome", {"ratio": 0.5}, speedup=1.3)
    old_cols = [f for f in file_schema(TRIAL_SCHEMA, TRIAL_PARTITIONS)
                if f.name not in ("device_kind", "quality_loss_clip", "phase", "final")]
    older = pa.Table.from_pylist([{f.name: old_row[f.name] for f in old_cols if f.name in old_row}],
                                 schema=pa.schema(old_cols))
    folder = tmp_path / "trials" / "model=sd15" / "method=tome"
    folder.mkdir(parents=True)
    pq.write_table(older, folder / "part-older.parquet")
    # An empty partition folder, as a crashed writer can leave.
    (tmp_path / "trials" / "model=sdxl" / "method=deepcache").mkdir(parents=True)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing here deserves a warning
        lk = open_lake(str(tmp_path))
        t = lk.trials().set_index("method")
    assert sorted(t.index) == ["deepcache", "tgate", "tome"]
    assert t.loc["tgate", "tgate_cross_attn_saved"] == 0.42
    assert pd.isna(t.loc["deepcache", "tgate_cross_attn_saved"])
    assert pd.isna(t.loc["tome", "device_kind"]) and pd.isna(t.loc["tome", "quality_loss_clip"])
    assert t.loc["tome", "quality_loss_ssim"] == old_row["quality_loss_ssim"]
    # the older row still has a bound (its group has a NULL device_kind)
    assert "tome" in set(lk.bounds()["method"])


def test_empty_lake_and_baselines_only(tmp_path):
    (tmp_path / "trials").mkdir()
    lk = open_lake(str(tmp_path))
    assert lk.trials().empty and list(lk.trials().columns) == TRIAL_SCHEMA.names
    assert lk.bounds().empty and lk.pareto().empty and lk.baselines().empty


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "misplaced"])
def test_bad_file_is_skipped_with_a_warning_and_nothing_is_written(tmp_path, kind):
    lake = LakeWriter(str(tmp_path))
    lake.write_trials([trial("deepcache", {"cache_interval": 3}, speedup=2.0)])
    part = tmp_path / "trials" / "model=sd15" / "method=deepcache"
    if kind == "corrupt":
        bad = part / "part-corrupt.parquet"
        bad.write_bytes(b"PAR1 this is not really parquet")
    elif kind == "foreign":
        bad = part / "part-foreign.parquet"
        pq.write_table(pa.table({"city": ["Oslo"], "population": [700000]}), bad)
    else:
        bad = tmp_path / "trials" / "stray.parquet"
        pq.write_table(pa.table({"trial_key": ["x"]}), bad)
    before = listing(tmp_path)

    with pytest.warns(LakeWarning, match=str(bad)):
        lk = open_lake(str(tmp_path))
    assert len(lk.trials()) == 1 and len(lk.bounds()) == 1
    with pytest.raises(LakeError, match=str(bad)):
        open_lake(str(tmp_path), on_bad_file="error")
    assert listing(tmp_path) == before


def test_wrongly_typed_column_is_foreign(tmp_path):
    lake = LakeWriter(str(tmp_path))
    lake.write_trials([trial("deepcache", {"cache_interval": 3}, speedup=2.0)])
    bad = tmp_path / "trials" / "model=sd15" / "method=deepcache" / "part-strings.parquet"
    pq.write_table(pa.table({"trial_key": ["k"], "speedup": ["fast"]}), bad)
    with pytest.warns(LakeWarning, match="speedup is string"):
        assert len(open_lake(str(tmp_path)).trials()) == 1


def test_missing_or_foreign_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LakeError, match="does not exist"):
        open_lake(str(tmp_path / "nope"))
    (tmp_path / "stuff").mkdir()
    with pytest.raises(LakeError, match="not a diffaccel lake"):
        open_lake(str(tmp_path / "stuff"))
    with pytest.raises(LakeError, match="unknown quality metric 'lpips'"):
        (tmp_path / "stuff" / "trials").mkdir()
        open_lake(str(tmp_path / "stuff")).bounds(metric="lpips")
    with pytest.raises(LakeError, match="budget"):
        open_lake(str(tmp_path / "stuff")).bounds(budget=-1)


def test_bounds_ties_nothing_in_budget_and_device_kinds(tmp_path):
    rows = [
        # sd15/ddim deepcache on H100: two points tie on speedup -> lower loss wins
        trial("deepcache", {"cache_interval": 3}, speedup=2.5, loss=0.018),
        trial("deepcache", {"cache_interval": 4}, speedup=2.5, loss=0.011),
        trial("deepcache", {"cache_interval": 5}, speedup=3.5, loss=0.05, clip_loss=0.015),  # ssim over
        trial("deepcache", {"cache_interval": 2}, speedup=1.5, loss=0.001),
        trial("deepcache", {"cache_interval": 6}, speedup=9.0, loss=0.001, status="failed"),
        # same config on H200: its own bound
        trial("deepcache", {"cache_interval": 3}, speedup=2.9, loss=0.015, device_kind="H200"),
        # tgate: nothing within budget -> absent
        trial("tgate", {"gate_step": 3}, speedup=1.8, loss=0.04),
        # tome: exact tie on speedup and loss -> smaller trial_key
        trial("tome", {"ratio": 0.5}, speedup=1.4, loss=0.01, key="k-b"),
        trial("tome", {"ratio": 0.6}, speedup=1.4, loss=0.01, key="k-a"),
    ]
    LakeWriter(str(tmp_path)).write_trials(rows)
    lk = open_lake(str(tmp_path))
    b = lk.bounds(budget=0.02, metric="ssim").set_index(["device_kind", "method"])
    assert sorted(b.index) == [("H100", "deepcache"), ("H100", "tome"), ("H200", "deepcache")]
    win = b.loc[("H100", "deepcache")]
    assert (win["tag"], win["speedup"], win["quality_loss"]) == ("DC4B0", 2.5, 0.011)
    assert (win["n_ok"], win["n_in_budget"]) == (4, 3)
    assert (win["speedup_ci_low"], win["cache_interval"]) == (2.5 * 0.97, 4)
    assert b.loc[("H200", "deepcache"), "speedup"] == 2.9
    assert b.loc[("H100", "tome"), "trial_key"] == "k-a"
    # a looser budget admits the tgate point; the clip metric reads its own column
    assert "tgate" in set(lk.bounds(budget=0.05)["method"])
    clip = lk.bounds(budget=0.02, metric="clip").set_index(["device_kind", "method"])
    assert clip.loc[("H100", "deepcache"), ("speedup", "quality_loss", "metric")].tolist() == [3.5, 0.015, "clip"]


def test_pareto_front(tmp_path):
    rows = [
        trial("deepcache", {"cache_interval": 2}, speedup=1.5, loss=0.002),
        trial("deepcache", {"cache_interval": 3}, speedup=2.0, loss=0.010),
        trial("deepcache", {"cache_interval": 4}, speedup=1.9, loss=0.012),   # dominated
        trial("deepcache", {"cache_interval": 5}, speedup=2.0, loss=0.015),   # ties speed, more loss
        trial("deepcache", {"cache_interval": 6}, speedup=3.0, loss=0.040),
        trial("deepcache", {"cache_interval": 7}, speedup=2.8, loss=0.040),   # same loss, slower
        trial("deepcache", {"cache_interval": 8}, speedup=9.0, loss=0.001, status="stopped"),
        trial("deepcache", {"cache_interval": 3}, speedup=2.2, loss=0.030, device_kind="H200"),
    ]
    LakeWriter(str(tmp_path)).write_trials(rows)
    p = open_lake(str(tmp_path)).pareto()
    assert p[["device_kind", "tag", "speedup"]].values.tolist() == [
        ["H100", "DC2B0", 1.5], ["H100", "DC3B0", 2.0], ["H100", "DC6B0", 3.0], ["H200", "DC3B0", 2.2]]


def brute_force(df: pd.DataFrame, budget: float, metric: str) -> tuple[dict, dict]:
    """Bounds and fronts by the definitions, point by point."""
    ok = df[(df.status == "ok") & df.speedup.notna() & df[f"quality_loss_{metric}"].notna()]
    bounds, fronts = {}, {}
    for g, pts in ok.groupby(list(BOUND_GROUP), dropna=False):
        pts = list(zip(pts.speedup, pts[f"quality_loss_{metric}"], pts.trial_key, strict=True))
        inside = [p for p in pts if p[1] <= budget]
        if inside:
            bounds[g] = min(inside, key=lambda p: (-p[0], p[1], p[2]))[2]
        front = {p for p in pts if not any(q[0] >= p[0] and q[1] <= p[1] and (q[0], q[1]) != (p[0], p[1])
                                           for q in pts)}
        # identical points: the smaller key stands for them
        fronts[g] = sorted(min(k for s, lo, k in front if (s, lo) == sl) for sl in {(s, lo) for s, lo, _ in front})
    return bounds, fronts


@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_and_pareto_match_the_definitions(tmp_path, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(400):
        # coarse values so that ties on speedup, on loss and on both are common
        rows.append(trial(
            rng.choice(["deepcache", "tgate"]), key=f"k{i:04d}",
            scheduler=rng.choice(["ddim", "euler"]), device_kind=rng.choice(["H100", "H200"]),
            speedup=rng.choice([1.0, 1.5, 2.0, 2.5, 3.0]) + rng.choice([0, 0, 0.1]),
            loss=round(rng.uniform(0, 0.05), 2) + rng.choice([0, 0.001]),
            clip_loss=rng.choice([0.0, 0.01, 0.03]),
            status=rng.choice(["ok"] * 6 + ["failed", "pruned", "stopped"]),
            phase=rng.choice(["screen", "confirm"]), minute=rng.randint(0, 100)))
    # re-measurements of some keys, in a later file
    again = [dict(r, speedup=r["speedup"] + 0.5 if r["speedup"] else None, finished_at=r["finished_at"]
                  + pd.Timedelta(minutes=1)) for r in rng.sample(rows, 60)]
    LakeWriter(str(tmp_path)).write_trials(rows[:200])
    LakeWriter(str(tmp_path)).write_trials(rows[200:] + again)
    lk = open_lake(str(tmp_path))
    trials = lk.trials()
    assert len(trials) == 400
    for metric, budget in (("ssim", 0.02), ("clip", 0.01), ("ssim", 0.0)):
        want_bounds, want_fronts = brute_force(trials, budget, metric)
        got = lk.bounds(budget=budget, metric=metric)
        assert dict(zip(got[list(BOUND_GROUP)].itertuples(index=False, name=None), got.trial_key,
                        strict=True)) == want_bounds
        front = lk.pareto(metric=metric)
        got_fronts = {g: sorted(p.trial_key) for g, p in front.groupby(list(BOUND_GROUP), dropna=False)}
        assert got_fronts == {g: f for g, f in want_fronts.items() if f}
        # each front is sorted by rising loss and rising speedup
        for _, p in front.groupby(list(BOUND_GROUP)):
            assert p.quality_loss.is_monotonic_increasing and p.speedup.is_monotonic_increasing
        # every bound lies on its front
        assert set(got.trial_key) <= set(front.trial_key)


def test_views_are_the_same_through_a_non_local_filesystem(tmp_path):
    rows = [trial("deepcache", {"cache_interval": i}, speedup=1 + i / 2, loss=i / 200) for i in range(1, 6)]
    rows.append(trial("deepcache", {"cache_interval": 2}, speedup=5.0, loss=0.001, phase="confirm"))
    LakeWriter(str(tmp_path)).write_trials(rows[:3])
    LakeWriter(str(tmp_path)).write_trials(rows[3:])
    LakeWriter(str(tmp_path)).write_baselines([baseline()])
    local = open_lake(str(tmp_path))
    # A SubTreeFileSystem is not a LocalFileSystem, so this goes through pyarrow.
    remote = open_lake("/", filesystem=pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    assert not remote.local
    assert open_lake(f"file://{tmp_path}").local
    pd.testing.assert_frame_equal(open_lake(f"file://{tmp_path}").bounds(), local.bounds())
    for name in ("trials", "bounds", "pareto", "baselines"):
        a, b = getattr(local, name)(), getattr(remote, name)()
        assert len(a) > 0
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# ----------------------------------------------------------------- one reader, resume and analysts

def _plant(tmp_path, kind: str):
    """A lake with two good trials and one fault of `kind`; returns the path to name (or None)."""
    good = [trial("deepcache", {"cache_interval": 3}, speedup=2.0), trial("tgate", {"gate_step": 4}, speedup=1.5)]
    LakeWriter(str(tmp_path)).write_trials(good)
    part = tmp_path / "trials" / "model=sd15" / "method=deepcache"
    if kind == "truncated":  # a real trial file cut short, as a kill mid-copy leaves it
        src = next(part.glob("*.parquet"))
        bad = part / "part-truncated.parquet"
        bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif kind == "foreign":
        bad = part / "part-foreign.parquet"
        pq.write_table(pa.table({"city": ["Oslo"], "population": [700000]}), bad)
    elif kind == "not-parquet":
        bad = part / "part-notes.parquet"
        bad.write_text("trial_key,speedup\nk,9.9\n")
    else:  # an empty partition folder: nothing to read, nothing to warn about
        (tmp_path / "trials" / "model=sdxl" / "method=tome").mkdir(parents=True)
        bad = None
    return good, bad


@pytest.mark.parametrize("kind", ["truncated", "foreign", "not-parquet", "empty-folder"])
def test_resume_and_analysts_skip_the_same_bad_files(tmp_path, kind):
    from sweep.driver import stored_outcomes

    good, bad = _plant(tmp_path, kind)
    before = listing(tmp_path)
    want = {r["trial_key"] for r in good}
    with warnings.catch_warnings(record=True) as resume_warned:
        warnings.simplefilter("always")
        stored = stored_outcomes(LakeWriter(str(tmp_path)), "ssim")
    with warnings.catch_warnings(record=True) as analyst_warned:
        warnings.simplefilter("always")
        lk = open_lake(str(tmp_path))
    assert set(stored) == want and set(lk.trials().trial_key) == want
    assert stored[good[0]["trial_key"]][1].speedup == 2.0
    named = [[str(w.message) for w in ws if issubclass(w.category, LakeWarning)]
             for ws in (resume_warned, analyst_warned)]
    if bad is None:
        assert named == [[], []]
    else:  # one warning each, naming the file; the same skip in both readers
        assert [len(n) for n in named] == [1, 1] and all(str(bad) in n[0] for n in named)
        for strict_read in (lambda: stored_outcomes(LakeWriter(str(tmp_path), on_bad_file="error"), "ssim"),
                            lambda: open_lake(str(tmp_path), on_bad_file="error")):
            with pytest.raises(LakeError, match=re.escape(str(bad))):
                strict_read()
    assert listing(tmp_path) == before


def test_sweep_cli_strict_stops_before_ray_and_plain_warns_in_one_line(tmp_path):
    """`diffaccel sweep --strict` on a lake with a truncated file: one line naming it, exit 2,
    before Ray starts (a --dry-run spec would not read the lake, so this runs the real CLI)."""
    import subprocess
    import sys

    from sweep_helpers import ROOT, write_spec

    _good, bad = _plant(tmp_path / "lake", "truncated")
    spec = write_spec(tmp_path / "spec.yaml")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "diffaccel.cli", "sweep", str(spec), "--lake", str(tmp_path / "lake"),
                          "--strict", "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read the lake: ") and str(bad) in lines[0]
    assert "Traceback" not in res.stderr and "ray" not in res.stderr.lower()
