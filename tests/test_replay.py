"""The replay simulator (bench/replay.py) on the shipped exhaustive lake of the shapes
model: the sweep's own `SweepState` replayed with the lake as the oracle."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.replay import ReplayError, main, markdown, replay
from sweep.pruning import SweepState
from sweep.spec import load

ROOT = Path(__file__).resolve().parent.parent
LAKE = str(ROOT / "datasets" / "example-lake")
SPEC = ROOT / "datasets" / "sweeps" / "map-shapes.yaml"


@pytest.fixture(scope="module")
def spec():
    return load(SPEC)


@pytest.fixture(scope="module")
def result(spec):
    return replay(spec, LAKE, metrics=("ssim", "judge"))


def test_policy_finds_the_exhaustive_bounds_for_less(result):
    assert {(r.config.split()[1], r.metric) for r in result.results} == {
        ("ddim", "ssim"), ("ddim", "judge"), ("dpmpp", "ssim"), ("dpmpp", "judge")}
    table = markdown(result)
    for r in result.results:
        assert all(r.agreement), f"policy and exhaustive bounds disagree:\n{table}"
        assert set(r.combo_agreement) == {"deepcache", "tgate", "tome", "deepcache+tgate", "deepcache+tome",
                                          "tgate+tome", "deepcache+tgate+tome"}
        assert all(all(v) for v in r.combo_agreement.values()), table
        # No trial stops at the spec's margin, so nothing can beat a clairvoyant pruner.
        assert not r.policy.counts.get("screen_stopped"), table
        assert r.policy.seconds >= r.floor - 1e-9, table
        assert r.policy.seconds <= r.exhaustive.seconds + 1e-9, table
        assert [b.budget for b in r.policy.bounds] == [0.01, 0.02, 0.05]
    # Pruning bites on this model on SSIM (deepcache interval 3 is over 0.05): if the
    # scheduler stopped pruning, these counts would drop to zero.
    ssim = [r for r in result.results if r.metric == "ssim"]
    assert all(r.policy.counts.get("screen_pruned", 0) >= 1 for r in ssim), table
    assert all(r.policy.seconds < r.exhaustive.seconds for r in ssim), table
    # Euler 25 (one point) and the 50-step configs are not in the lake yet.
    assert any("euler 25" in s for s in result.incomplete)


def test_exhaustive_cost_is_the_lakes_own_seconds(result):
    """On SSIM the exhaustive side confirms exactly the points the map confirmed, so its
    cost must equal the lake's gpu_seconds for that config, summed independently."""
    total = 0.0
    for f in (Path(LAKE) / "trials" / "model=shapes").rglob("*.parquet"):
        t = pq.read_table(f, columns=["scheduler", "steps", "status", "gpu_seconds"]).to_pylist()
        total += sum(r["gpu_seconds"] for r in t if r["scheduler"] == "ddim" and r["steps"] == 25 and r["status"] == "ok")
    (ddim,) = [r for r in result.results if r.metric == "ssim" and " ddim " in f" {r.config} "]
    assert ddim.exhaustive.seconds == pytest.approx(total)
    assert not any(t.estimated for t in ddim.exhaustive.trials)


def test_replay_is_deterministic(spec, result):
    again = replay(spec, LAKE, metrics=("ssim", "judge"))
    assert again.to_dict() == result.to_dict()


class PrunesEverything(SweepState):
    """A broken policy: every screened point counts as over budget."""

    def _over(self, outcome):
        return True


def test_a_broken_policy_is_caught(spec):
    broken = replay(spec, LAKE, metrics=("ssim",), state_cls=PrunesEverything)
    assert any(not all(r.agreement) for r in broken.results), markdown(broken)
    assert all(r.policy.seconds < r.floor for r in broken.results), markdown(broken)
    assert "**no**" in markdown(broken)


def test_bad_input_is_one_line_error(spec, tmp_path, capsys):
    with pytest.raises(ReplayError, match="--workers"):
        replay(spec, LAKE, workers=0)
    with pytest.raises(ReplayError, match="no trial rows"):
        replay(spec, str(tmp_path / "empty-lake"))
    assert main([str(SPEC), "--lake", str(tmp_path / "empty-lake")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
