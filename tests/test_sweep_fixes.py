"""Defects found in the 2×H200 `map-shapes` run and its review (progress count, SIGTERM,
ToMe determinism, duplicate lake warnings). The lake is real Parquet on disk."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
from lake_rows import baseline, trial

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
