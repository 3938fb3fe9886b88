"""Measurement: pair statistics, adaptive stopping, FLOPs, device and version info."""

from __future__ import annotations

import math
import time

import pytest
import torch

from sweep import measure


@pytest.mark.parametrize(("name", "kind"), [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA GH200 480GB", "GH200"),
    ("NVIDIA A100-SXM4-40GB", "A100"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 4090", "RTX4090"),
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "H100-MIG"),
    ("cpu", "cpu"),
])
def test_device_kind(name, kind):
    assert measure.device_kind(name) == kind


def test_device_info_and_versions():
    info = measure.device_info("cpu")
    assert info["device"] == "cpu" and info["device_kind"] == "cpu"
    assert info["host_cpu"] and info["hostname"]
    versions = measure.library_versions()
    assert set(versions) == {"torch", "diffusers", "transformers", "DeepCache", "tgate", "tomesd", "python"}
    assert versions["diffusers"] == "0.42.1" and info["torch_version"] == versions["torch"] == torch.__version__


def test_t_quantiles():
    assert measure.t975(1) == 12.706 and measure.t975(30) == 2.042
    assert measure.t975(31) == pytest.approx(2.040, abs=1e-3)
    assert measure.t975(120) == pytest.approx(1.980, abs=1e-3)
    with pytest.raises(ValueError):
        measure.t975(0)


def test_speedup_interval_on_log_ratios():
    low, high = measure.speedup_interval([2.0, 2.0, 2.0])
    assert low == high == pytest.approx(2.0)
    ratios = [1.8, 2.0, 2.2, 1.9, 2.1]
    low, high = measure.speedup_interval(ratios)
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / 5
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 4)
    assert math.log(high) == pytest.approx(mean + 2.776 * sd / math.sqrt(5))
    assert low < 2.0 < high
    # Fewer pairs with the same spread: a wider interval (t grows as df shrinks).
    low3, high3 = measure.speedup_interval(ratios[:3])
    assert high3 / low3 > high / low


def test_speed_result_row():
    r = measure.SpeedResult(baseline_times=[2.0, 2.2, 1.8, 2.0], accel_times=[1.0, 1.0, 1.0, 1.0],
                            pairs_stop="target")
    row = r.row()
    assert row["speedup"] == pytest.approx(2.0) and row["n_pairs"] == 4
    assert row["baseline_latency_s"] == pytest.approx(2.0) and row["accel_latency_s"] == pytest.approx(1.0)
    assert row["baseline_latency_spread_s"] == pytest.approx(0.1)
    assert row["speedup_ci_low"] < 2.0 < row["speedup_ci_high"]
    hw = (row["speedup_ci_high"] - row["speedup_ci_low"]) / 2 / row["speedup"]
    assert row["speedup_ci_halfwidth"] == pytest.approx(hw)
    assert row["baseline_peak_mem_bytes"] is None


def _sleeper(seconds: float, calls: list[str], name: str):
    def run():
        calls.append(name)
        time.sleep(seconds)
    return run


def test_pairs_interleave_and_stop_at_the_target():
    calls: list[str] = []
    seen: list[int] = []
    result = measure.measure_pairs(_sleeper(0.04, calls, "b"), _sleeper(0.02, calls, "a"), device="cpu",
                                   min_pairs=3, max_pairs=30, target_halfwidth=0.2, warmup=1,
                                   on_pair=lambda r: seen.append(r.n_pairs))
    assert result.pairs_stop == "target" and 3 <= result.n_pairs < 30
    assert result.speedup == pytest.approx(2.0, rel=0.25)
    assert seen == list(range(1, result.n_pairs + 1))
    # Warm-up of both, then pairs whose order alternates: b a, a b, b a, ...
    assert calls[:2] == ["b", "a"]
    timed = calls[2:]
    assert timed[:6] == ["b", "a", "a", "b", "b", "a"]


def test_pairs_stop_at_the_cap():
    calls: list[str] = []
    result = measure.measure_pairs(_sleeper(0.002, calls, "b"), _sleeper(0.001, calls, "a"), device="cpu",
                                   min_pairs=2, max_pairs=4, target_halfwidth=1e-9, warmup=0)
    assert result.pairs_stop == "cap" and result.n_pairs == 4
    assert len(calls) == 2 + 8  # one untimed call each (peak memory), then 4 pairs
    assert result.baseline_peak_mem_bytes is None  # no honest per-call peak on a CPU


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_pairs": 1}, "at least 2 pairs"),
    ({"min_pairs": 5, "max_pairs": 4}, "below min_pairs"),
    ({"target_halfwidth": 0}, "must be positive"),
])
def test_pair_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        measure.measure_pairs(lambda: None, lambda: None, device="cpu", **kwargs)


def test_count_flops_is_exact_for_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert measure.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    assert measure.count_flops(lambda: (a @ b, a @ b)) == 2 * 2 * 8 * 16 * 4


def test_timed_and_peak_memory_on_cpu():
    assert measure.timed(lambda: time.sleep(0.01), "cpu") >= 0.01
    assert measure.peak_memory(lambda: None, "cpu") is None
    assert measure.utc_now().tzinfo is not None
