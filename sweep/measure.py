"""Measuring speed, memory and compute of a baseline against an accelerated pipeline.

Latency is measured in interleaved pairs on one device: each pair times one baseline
call and one accelerated call back to back, alternating which goes first so slow drift
(clocks, thermals, a neighbour's load) hits both sides equally. The speedup of a pair
is baseline / accelerated; the reported speedup is the median of the pair ratios, and
its 95% confidence interval is a Student-t interval on the log ratios, mapped back with
exp. We use the t-interval rather than a bootstrap because it stays honest with the
handful of pairs a screen uses (a bootstrap of 3 pairs cannot be wider than their
range), and it needs no random seed. Ratios of run times are close to log-normal, so
the interval is for the typical ratio, which the median estimates.

Pairs are added until the interval's relative half-width, (high - low) / 2 / speedup,
is at most the target (`pairs_stop = "target"`) or the cap is reached ("cap"), with a
minimum number of pairs first.

Timing uses ``time.perf_counter`` around a whole pipeline call, with
``torch.cuda.synchronize()`` before and after on CUDA: SD 1.5 at batch 1 is launch
bound, so host overhead is part of the latency a user sees, and CUDA events (which
time only the GPU stream) would hide it.

Peak memory is ``torch.cuda.max_memory_allocated`` over a warm-up call (weights
included). On a CPU there is no per-call peak we could trust (RSS high-water marks only
grow), so it is recorded as null.

The compute ratio counts FLOPs with ``torch.utils.flop_counter.FlopCounterMode``: the
FLOPs of one accelerated call over those of one baseline call. It is deterministic,
needs no GPU, and is what the tests check.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import re
import socket
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

DEFAULT_MIN_PAIRS = 3
DEFAULT_MAX_PAIRS = 30
DEFAULT_TARGET_HALFWIDTH = 0.03

# Distributions whose versions decide what a measurement means (they are part of the
# trial key: a new DeepCache release is a new experiment).
LIBRARIES = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "DeepCache": "DeepCache",
    "tgate": "tgate",
    "tomesd": "tomesd",
}


# --------------------------------------------------------------------------- device info


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """{library: version} of the measured stack, plus the Python version."""
    out = {}
    for key, dist in LIBRARIES.items():
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = "absent"
    out["python"] = platform.python_version()
    return out


_GPU_KINDS = ("GH200", "H200", "H100", "H800", "H20", "B200", "B100", "A100", "A800", "A10G", "A10",
              "L40S", "L40", "L4", "T4", "V100", "A6000", "A5000", "A4000")


def device_kind(device_name: str) -> str:
    """Normalise a device name to a kind that groups comparable machines.

    'NVIDIA H100 80GB HBM3' -> 'H100'; 'NVIDIA A100-SXM4-40GB' -> 'A100';
    'NVIDIA GeForce RTX 4090' -> 'RTX4090'; a MIG slice gets '-MIG'; 'cpu' -> 'cpu'.
    """
    if device_name == "cpu":
        return "cpu"
    upper = device_name.upper()
    suffix = "-MIG" if "MIG" in upper else ""
    for kind in _GPU_KINDS:
        if re.search(rf"(?<![A-Z0-9]){kind}(?![0-9])", upper):
            return kind + suffix
    m = re.search(r"RTX\s*(\w+)", upper)
    if m:
        return "RTX" + m.group(1) + suffix
    return re.sub(r"^(NVIDIA|AMD)\s+", "", device_name).strip().replace(" ", "_") + suffix


def host_cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


def device_info(device) -> dict[str, Any]:
    """The lake's device columns for `device` ('cpu', 'cuda', 'cuda:1', ...)."""
    import json

    name = device_name(device)
    versions = library_versions()
    return {
        "device": name,
        "device_kind": device_kind(name),
        "host_cpu": host_cpu(),
        "hostname": socket.gethostname(),
        "versions_json": json.dumps(versions, sort_keys=True),
        "torch_version": versions["torch"],
        "diffusers_version": versions["diffusers"],
    }


def is_cuda(device) -> bool:
    import torch

    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    import torch

    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


# ---------------------------------------------------------------------------- primitives


def timed(fn: Callable[[], Any], device) -> float:
    """Seconds one call of `fn` takes on `device`, queued GPU work included."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def peak_memory(fn: Callable[[], Any], device) -> int | None:
    """Peak bytes allocated on `device` during one call of `fn` (None on a CPU)."""
    import torch

    if not is_cuda(device):
        fn()
        return None
    dev = torch.device(device)
    synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    synchronize(dev)
    return int(torch.cuda.max_memory_allocated(dev))


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of one call of `fn`, as counted by torch's FlopCounterMode (matmuls,
    convolutions and attention: the ops that dominate a diffusion model)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# --------------------------------------------------------------------------- statistics

# Two-sided 95% Student-t quantiles, t_{0.975, df}, for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("a t-interval needs at least two observations")
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish-Fisher expansion around the normal quantile; exact to 3 decimals past df=30.
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def speedup_interval(ratios: list[float]) -> tuple[float, float]:
    """95% interval of the typical pair ratio: a t-interval on log ratios, exponentiated."""
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    if n < 2:
        return (-math.inf, math.inf) if n == 0 else (0.0, math.inf)
    mean = statistics.fmean(logs)
    half = t975(n - 1) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(mean - half), math.exp(mean + half)


def iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


@dataclass
class SpeedResult:
    """Interleaved pair timings of a baseline and an accelerated call, summarised."""

    baseline_times: list[float] = field(default_factory=list)
    accel_times: list[float] = field(default_factory=list)
    pairs_stop: str = "cap"
    baseline_peak_mem_bytes: int | None = None
    accel_peak_mem_bytes: int | None = None
    reused: int = 0  # leading pairs taken from an earlier measurement (`measure_pairs(prior=)`)

    @property
    def ratios(self) -> list[float]:
        return [b / a for b, a in zip(self.baseline_times, self.accel_times, strict=True)]

    @property
    def n_pairs(self) -> int:
        return len(self.accel_times)

    @property
    def speedup(self) -> float:
        return statistics.median(self.ratios)

    @property
    def interval(self) -> tuple[float, float]:
        return speedup_interval(self.ratios)

    @property
    def halfwidth(self) -> float:
        """Relative half-width of the interval: (high - low) / 2 / speedup."""
        low, high = self.interval
        return (high - low) / 2 / self.speedup

    def row(self) -> dict[str, Any]:
        """The lake's latency columns."""
        low, high = self.interval
        return {
            "baseline_latency_s": statistics.median(self.baseline_times),
            "baseline_latency_spread_s": iqr(self.baseline_times),
            "accel_latency_s": statistics.median(self.accel_times),
            "accel_latency_spread_s": iqr(self.accel_times),
            "speedup": self.speedup,
            "speedup_ci_low": low,
            "speedup_ci_high": high,
            "speedup_ci_halfwidth": self.halfwidth,
            "n_pairs": self.n_pairs,
            "pairs_stop": self.pairs_stop,
            "baseline_peak_mem_bytes": self.baseline_peak_mem_bytes,
            "accel_peak_mem_bytes": self.accel_peak_mem_bytes,
            "pair_times_json": json.dumps({"baseline": self.baseline_times, "accel": self.accel_times}),
            "pairs_reused": self.reused,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), **self.row()}


def measure_pairs(
    run_baseline: Callable[[], Any],
    run_accel: Callable[[], Any],
    *,
    device,
    min_pairs: int = DEFAULT_MIN_PAIRS,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    target_halfwidth: float = DEFAULT_TARGET_HALFWIDTH,
    warmup: int = 1,
    on_pair: Callable[[SpeedResult], None] | None = None,
    prior: Mapping[str, Sequence[float]] | None = None,
) -> SpeedResult:
    """Time `run_baseline` against `run_accel` in interleaved pairs until the speedup's
    95% interval is tight enough (see the module docstring).

    `warmup` untimed calls of each come first (compilation, cuDNN autotuning, allocator
    growth); the first of them also records each side's peak memory. `on_pair` is
    called with the running result after every pair.

    `prior` ({"baseline": [...], "accel": [...]}, as a row's ``pair_times_json``) are
    pairs already timed of the same two calls on the same kind of device: they count
    towards `min_pairs`, `max_pairs` and the interval, so a confirmation tops up its
    screen instead of starting over. Each pair's ratio is taken within the pair, so
    pairs from another process on another GPU of the same kind pool honestly.
    """
    if min_pairs < 2:
        raise ValueError(f"min_pairs={min_pairs}: an interval needs at least 2 pairs")
    if max_pairs < min_pairs:
        raise ValueError(f"max_pairs={max_pairs} is below min_pairs={min_pairs}")
    if not target_halfwidth > 0:
        raise ValueError(f"target_halfwidth={target_halfwidth} must be positive, e.g. 0.03")
    result = SpeedResult()
    if prior is not None:
        base, accel = [float(x) for x in prior["baseline"]], [float(x) for x in prior["accel"]]
        if len(base) != len(accel) or not all(x > 0 for x in base + accel):
            raise ValueError(f"prior pairs {len(base)} baseline / {len(accel)} accelerated times: give as many "
                             "of each, all positive (a row's pair_times_json)")
        result.baseline_times, result.accel_times = base[:max_pairs], accel[:max_pairs]
        result.reused = len(result.accel_times)
    for i in range(max(warmup, 1)):
        if i == 0:
            result.baseline_peak_mem_bytes = peak_memory(run_baseline, device)
            result.accel_peak_mem_bytes = peak_memory(run_accel, device)
        else:
            run_baseline()
            run_accel()
    for i in range(result.reused, max_pairs):
        if i % 2 == 0:
            b = timed(run_baseline, device)
            a = timed(run_accel, device)
        else:
            a = timed(run_accel, device)
            b = timed(run_baseline, device)
        result.baseline_times.append(b)
        result.accel_times.append(a)
        if on_pair is not None:
            on_pair(result)
        if result.n_pairs >= min_pairs and result.halfwidth <= target_halfwidth:
            result.pairs_stop = "target"
            break
    else:
        result.pairs_stop = "cap"
    return result


def utc_now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


__all__ = [
    "DEFAULT_MAX_PAIRS", "DEFAULT_MIN_PAIRS", "DEFAULT_TARGET_HALFWIDTH", "SpeedResult", "count_flops",
    "device_info", "device_kind", "device_name", "host_cpu", "iqr", "library_versions", "measure_pairs",
    "peak_memory", "speedup_interval", "synchronize", "t975", "timed", "utc_now",
]
