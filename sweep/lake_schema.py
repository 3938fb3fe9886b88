"""The lake's canonical schema: one place that says what a trial row and a baseline row hold.

Layout of a lake (a local folder or any `pyarrow.fs` URI such as ``s3://bucket/lake``)::

    LAKE/trials/model=sd15/method=deepcache+tgate/part-<uuid>.parquet
    LAKE/baselines/model=sd15/part-<uuid>.parquet

`model` and `method` are hive partition keys; they are stored as strings and are not
repeated inside the files. Pure pyarrow and the pure-Python catalog (whose method
configs give the parameter columns), so codegen and the analysts can use it without
torch or Ray.
"""

from __future__ import annotations

import pyarrow as pa

from sweep.catalog import ALL_PARAMS, METHODS, Methods

SCHEMA_VERSION = 1

TRIALS_DIR = "trials"
BASELINES_DIR = "baselines"
SWEEPS_DIR = "sweeps"  # one row per run of a spec: what the report names a sweep by
TRIAL_PARTITIONS = ("model", "method")
BASELINE_PARTITIONS = ("model",)

# Trial status values.
OK = "ok"            # measured to the end
STOPPED = "stopped"  # started, then ended early: quality loss clearly over every budget
PRUNED = "pruned"    # never run: dominated by a point already over every budget
FAILED = "failed"    # raised (OOM, library error); `error` says why
STATUSES = (OK, STOPPED, PRUNED, FAILED)

# Measurement phases: a cheap screen for every point, then a confirmation with more
# pairs for the points that decide a bound. `final` marks the row to believe.
SCREEN = "screen"
CONFIRM = "confirm"

# Quality metrics a budget may be stated in; `quality_loss_<metric>` columns hold them.
# ssim: 1 - SSIM. clip: relative CLIP-score drop (base - accel) / base. judge: the same
# relative drop of the shapes judge's score (sweep/judge.py). psnr is stored as a raw
# value only (dB), since it has no natural "loss".
BUDGET_METRICS = ("ssim", "clip", "judge")

_CONFIG = [
    ("model", pa.string()),            # family: sd15, sd21, sdxl, pixart_alpha, pixart_sigma
    ("preset", pa.string()),           # hub, arch, tiny
    ("model_path", pa.string()),       # hub id or local path (hub preset), else null
    ("scheduler", pa.string()),
    ("steps", pa.int32()),
    ("resolution", pa.int32()),
    ("batch", pa.int32()),
    ("dtype", pa.string()),            # float16, float32, bfloat16
    ("guidance_scale", pa.float64()),
]

_DEVICE = [
    ("device", pa.string()),           # e.g. "NVIDIA H100 80GB HBM3", or "cpu"
    ("device_kind", pa.string()),      # normalised: H100, H200, A100, cpu, ...
    ("host_cpu", pa.string()),
    ("hostname", pa.string()),
    ("versions_json", pa.string()),    # {"torch": ..., "diffusers": ..., ...}
    ("torch_version", pa.string()),
    ("diffusers_version", pa.string()),
]

_LATENCY = [
    ("baseline_latency_s", pa.float64()),         # median over pairs
    ("baseline_latency_spread_s", pa.float64()),  # IQR over pairs
    ("accel_latency_s", pa.float64()),
    ("accel_latency_spread_s", pa.float64()),
    ("speedup", pa.float64()),                    # median of per-pair ratios base/accel
    ("speedup_ci_low", pa.float64()),             # 95% CI of the speedup
    ("speedup_ci_high", pa.float64()),
    ("speedup_ci_halfwidth", pa.float64()),       # relative: (high - low) / 2 / speedup
    ("n_pairs", pa.int32()),
    ("pairs_stop", pa.string()),                  # "target" (CI met) or "cap" (max pairs)
    ("compute_ratio", pa.float64()),              # FLOPs accel / FLOPs baseline
    ("baseline_peak_mem_bytes", pa.int64()),
    ("accel_peak_mem_bytes", pa.int64()),
]

_QUALITY = [
    ("ssim", pa.float64()),
    ("psnr", pa.float64()),
    ("clip_score", pa.float64()),
    ("clip_score_base", pa.float64()),
    ("judge_score", pa.float64()),       # fraction of the prompt's attributes the judge recognises
    ("judge_score_base", pa.float64()),
    ("quality_loss_ssim", pa.float64()),
    ("quality_loss_clip", pa.float64()),
    ("quality_loss_judge", pa.float64()),
    ("n_prompts", pa.int32()),
    ("clip_model", pa.string()),
    ("judge_model", pa.string()),
]

# A parameter's column type follows its field's type in the method's config.
_ARROW = {int: pa.int32(), float: pa.float64()}


def param_columns(methods: Methods = METHODS) -> list[tuple[str, pa.DataType]]:
    """One column per method parameter, in the registry's order, then `params_json`."""
    return [*((n, _ARROW[s.type]) for specs in methods.params.values() for n, s in specs.items()),
            ("params_json", pa.string())]


def _dedupe(cols):
    seen, out = set(), []
    for name, typ in cols:
        if name not in seen:
            seen.add(name)
            out.append(pa.field(name, typ))
    return pa.schema(out)


def trial_schema(methods: Methods = METHODS) -> pa.Schema:
    """The trial rows' schema, with the parameter columns of `methods`."""
    return _dedupe([
        ("schema_version", pa.int32()),
        ("trial_key", pa.string()),
        ("baseline_key", pa.string()),
        ("tag", pa.string()),
        ("sweep_id", pa.string()),
        *_CONFIG,
        ("method", pa.string()),
        *param_columns(methods),
        ("status", pa.string()),
        ("phase", pa.string()),
        ("final", pa.bool_()),
        ("error", pa.string()),
        ("stop_reason", pa.string()),
        *_LATENCY,
        *_QUALITY,
        *_DEVICE,
        ("gpu_seconds", pa.float64()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("finished_at", pa.timestamp("us", tz="UTC")),
        # What a search policy needs to be replayed offline (bench/replay.py): how a sweep
        # trial's seconds split, and each prompt's loss, which early stopping acts on.
        # Null in rows written before them and in rows not written by a sweep trial.
        ("quality_seconds", pa.float64()),    # the quality prompts (both images, metrics)
        ("timing_seconds", pa.float64()),     # compute ratio and timing pairs; 0 when stopped
        ("prompt_losses_json", pa.string()),  # {"ssim": [...], "clip": [...], "judge": [...]}, prompt order
        # What a confirmation reuses from its screen (`TrialSession.sweep_trial`): each
        # prompt's measurements and the timed pairs; and, on a confirm row, how many of
        # its pairs came from the screen (0 or null: none, all measured afresh).
        ("prompt_quality_json", pa.string()),  # [{"prompt", "seed", "ssim", "psnr", "clip_score", ...}]
        ("pair_times_json", pa.string()),      # {"baseline": [s, ...], "accel": [s, ...]}, pair order
        ("pairs_reused", pa.int32()),
    ])


TRIAL_SCHEMA = trial_schema()

BASELINE_SCHEMA = _dedupe([
    ("schema_version", pa.int32()),
    ("baseline_key", pa.string()),  # hash of config, device kind, versions
    ("sweep_id", pa.string()),
    *_CONFIG,
    ("latency_s", pa.float64()),         # median of the baseline runs
    ("latency_spread_s", pa.float64()),  # IQR
    ("n_runs", pa.int32()),
    ("peak_mem_bytes", pa.int64()),
    ("flops", pa.float64()),
    ("clip_score", pa.float64()),
    ("judge_score", pa.float64()),
    ("n_prompts", pa.int32()),
    *_DEVICE,
    ("created_at", pa.timestamp("us", tz="UTC")),
])

# One row per sweep run (a rerun of one spec is a new run, with a new sweep_id). Not
# partitioned: LAKE/sweeps/part-<time>-<uuid>.parquet.
SWEEP_SCHEMA = _dedupe([
    ("schema_version", pa.int32()),
    ("sweep_id", pa.string()),
    ("spec_name", pa.string()),
    ("metric", pa.string()),
    ("budgets_json", pa.string()),   # the spec's budgets, e.g. [0.02, 0.05]
    ("spec_json", pa.string()),      # the whole spec, as `SweepSpec.to_dict`
    ("device_kind", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
])
SWEEP_PARTITIONS: tuple[str, ...] = ()

# Columns that are hive partitions: present in the logical schema, absent in files.
PARAM_COLUMNS = tuple(ALL_PARAMS)
# What identifies a config for bounds and Pareto fronts (per device kind).
BOUND_GROUP = ("device_kind", "model", "scheduler", "steps", "resolution", "method")


def file_schema(schema: pa.Schema, partitions: tuple[str, ...]) -> pa.Schema:
    """The schema of one Parquet file: the logical schema less the partition keys."""
    return pa.schema([f for f in schema if f.name not in partitions])
