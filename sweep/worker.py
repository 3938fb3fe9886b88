"""The trial as it runs inside a Ray worker: one point of a sweep, on one GPU (or CPU).

A worker process keeps one `trial.TrialSession` resident (`_SESSION`): Tune reuses
the trial actors (``reuse_actors=True``), so consecutive trials of the same pipeline
config find the pipeline loaded and the baseline images cached, and a trial of another
config evicts it first, so a worker never holds two pipelines.

Per trial: quality one (prompt, seed) at a time with a `tune.report` after each; a
point whose loss is clearly over every budget (`pruning.clearly_over`) ends there as
``stopped`` and is never timed. Survivors get their compute ratio and their speed
(interleaved pairs: a fixed `screen_pairs` when screening; at least `confirm_pairs`
and up to three times that, until the CI target, when confirming). The final report
carries the lake row as JSON (``row_json``), and, once per session, the baseline row.

Torch, diffusers and Ray are imported inside the functions: the driver imports this
module without them.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from sweep.catalog import Acceleration, PipelineConfig
from sweep.lake_schema import CONFIRM, OK, STOPPED
from sweep.pruning import clearly_over
from sweep.spec import EarlyStop

_SESSION: dict[str, Any] = {"key": None, "session": None, "baseline_sent": False}


def probe() -> dict[str, Any]:
    """Device columns and library versions, as a trial on this worker would record them."""
    import torch

    from sweep import measure

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return measure.device_info(device)


def _torch_dtype(name: str):
    import torch

    return {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def session_for(cfg: PipelineConfig, dtype: str, clip_model: str | None, judge_model: str | None = None):
    """(session, loaded): the resident session for `cfg`, and whether this call had to
    load it (evicting another first)."""
    import torch

    from sweep.pipelines import quiet_libraries
    from sweep.trial import TrialSession, default_device

    device = default_device()
    key = (cfg, device, dtype, clip_model, judge_model)
    loaded = _SESSION["key"] != key
    if loaded:
        old = _SESSION["session"]
        _SESSION.update(key=None, session=None, baseline_sent=False)
        if old is not None:
            old.close()
            del old
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        quiet_libraries()
        _SESSION["session"] = TrialSession(cfg, device=device, dtype=_torch_dtype(dtype), clip_model=clip_model,
                                           judge_model=judge_model)
        _SESSION["key"] = key
    return _SESSION["session"], loaded


def evaluation_pairs(prompts: list[str], seeds: list[int]) -> tuple[list[str], list[int]]:
    """Every prompt with every seed, prompt-major."""
    ps = [p for p in prompts for _ in seeds]
    ss = [s for _ in prompts for s in seeds]
    return ps, ss


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable: measure one point and report its row (see module doc)."""
    import ray
    from ray import tune

    from sweep import measure

    started = measure.utc_now()
    t0 = time.monotonic()
    cfg = PipelineConfig(**config["config"])
    acc = Acceleration.from_params(config["combo"], config["params"])
    phase = config["phase"]
    rule = EarlyStop(**settings["early_stop"])
    budgets = settings["budgets"]
    metric = settings["metric"]
    session, loaded = session_for(cfg, settings["dtype"], settings.get("clip_model"), settings.get("judge_model"))
    load_s = time.monotonic() - t0
    prompts, seeds = evaluation_pairs(settings["prompts"], settings["seeds"])
    common = {"node_id": ray.get_runtime_context().get_node_id(), "key": config["key"],
              "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "loaded_pipeline": loaded}

    t_infer = time.monotonic()
    busy0 = session.pipeline_seconds
    summary = None
    status, stop_reason = OK, None
    done = 0
    for summary in session.iter_quality(acc, prompts, seeds):
        done = summary.n_prompts
        losses = [p.loss(metric) for p in summary.prompts]
        if done < len(prompts):
            tune.report({"prompts_done": done, "loss": summary.loss(metric), **common})
        # Confirmation re-measures a point that already passed: never cut it short.
        if phase != CONFIRM and clearly_over(losses, budgets, rule):
            status = STOPPED
            stop_reason = (f"quality loss ({metric}) {summary.loss(metric):.4f} after {done} of "
                           f"{len(prompts)} prompt(s) is clearly over every budget (max {max(budgets):g})")
            break
    timed_s = 0.0
    ratio = speed = None
    if status == OK:
        m = settings["measure"]
        if m["count_flops"] == "always" or (m["count_flops"] == "confirm" and phase == CONFIRM):
            ratio = session.compute_ratio(acc, prompt=prompts[0], seed=seeds[0])
        if phase == CONFIRM:
            pairs = {"min_pairs": m["confirm_pairs"], "max_pairs": 3 * m["confirm_pairs"]}
        else:
            pairs = {"min_pairs": m["screen_pairs"], "max_pairs": m["screen_pairs"]}
        speed = session.speed(acc, prompt=prompts[0], seed=seeds[0], target_halfwidth=m["ci_target"], **pairs)
        timed_s = sum(speed.baseline_times) + sum(speed.accel_times)
    inference_s = time.monotonic() - t_infer
    session.release()
    row = session.trial_row(acc, quality=summary, speed=speed, compute_ratio=ratio, status=status,
                            phase=phase, final=phase == CONFIRM, sweep_id=settings["sweep_id"],
                            stop_reason=stop_reason, started_at=started)
    if row["trial_key"] != config["key"]:
        # Surfaced by the driver; the row keeps the key it was measured under.
        common["key_mismatch"] = True
    report: dict[str, Any] = {"row_json": json.dumps(row, default=str), "prompts_done": done,
                              "timed_seconds": timed_s, "load_seconds": load_s,
                              "inference_seconds": inference_s,
                              "pipeline_seconds": session.pipeline_seconds - busy0,
                              "trial_seconds": time.monotonic() - t0, **common}
    if not _SESSION["baseline_sent"] and session.baseline_key not in settings.get("known_baselines", ()):
        base = session.baseline_row(sweep_id=settings["sweep_id"], runs=settings["measure"]["screen_pairs"])
        report["baseline_json"] = json.dumps(base, default=str)
        _SESSION["baseline_sent"] = True
    tune.report(report)
