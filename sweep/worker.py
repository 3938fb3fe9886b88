"""The trial as it runs inside a Ray worker: one point of a sweep, on one GPU (or CPU).

A worker process keeps one `trial.TrialSession` resident (`_SESSION`): Tune reuses
the trial actors (``reuse_actors=True``), so consecutive trials of the same pipeline
config find the pipeline loaded and the baseline images cached, and a trial of another
config evicts it first, so a worker never holds two pipelines.

Per trial, `TrialSession.sweep_trial` owns the screen/confirm sequence: quality one
(prompt, seed) at a time with a `tune.report` after each; a point whose loss is clearly
over every budget (`pruning.clearly_over`) ends there as ``stopped`` and is never
timed; survivors get their compute ratio and their speed. The final report carries the
lake row as JSON (``row_json``), and, once per session, the baseline row.

Torch, diffusers and Ray are imported inside the functions: the driver imports this
module without them.
"""

from __future__ import annotations

import gc
import json
import time
from typing import Any

from sweep.catalog import Acceleration, PipelineConfig
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
    """Tune function trainable: measure one point (`TrialSession.sweep_trial`) and report
    its row, with the baseline row once per session."""
    import ray
    from ray import tune

    t0 = time.monotonic()
    cfg, acc = PipelineConfig(**config["config"]), Acceleration.from_params(config["combo"], config["params"])
    session, loaded = session_for(cfg, settings["dtype"], settings.get("clip_model"),
                                  settings.get("judge_model"))
    common = {"node_id": ray.get_runtime_context().get_node_id(), "key": config["key"],
              "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "loaded_pipeline": loaded,
              "load_seconds": time.monotonic() - t0}
    prompts, seeds = evaluation_pairs(settings["prompts"], settings["seeds"])
    rule, budgets = EarlyStop(**settings["early_stop"]), settings["budgets"]
    row, stats = session.sweep_trial(
        acc, prompts, seeds, phase=config["phase"], metric=settings["metric"], budgets=budgets,
        clearly_over=lambda losses: clearly_over(losses, budgets, rule, total=len(prompts)),
        settings=settings["measure"], reuse=config.get("reuse"),
        sweep_id=settings["sweep_id"], key_inputs=settings["key_inputs"],  # the driver's, as it keys
        on_prompt=lambda done, loss: tune.report({"prompts_done": done, "loss": loss, **common}))
    report = {"row_json": json.dumps(row, default=str), **stats, **common, "trial_seconds": time.monotonic() - t0}
    if not _SESSION["baseline_sent"] and session.baseline_key not in settings.get("known_baselines", ()):
        base = session.baseline_row(sweep_id=settings["sweep_id"], runs=settings["measure"]["screen_pairs"])
        report["baseline_json"] = json.dumps(base, default=str)
        _SESSION["baseline_sent"] = True
    tune.report(report)
