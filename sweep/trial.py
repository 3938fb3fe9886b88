"""One trial: one pipeline config, one parameter point, measured against the baseline.

A `TrialSession` loads a pipeline once and keeps it resident, so a sweep worker (one
Ray actor per GPU) pays for loading and for the baseline once per config and device,
not once per point:

    session = TrialSession(cfg, device="cuda", clip_model="openai/clip-vit-large-patch14")
    for q in session.iter_quality(acc, prompts, seeds):    # one prompt at a time
        report(q.loss("ssim"), q.n_prompts)                 # a tuner may stop early here
        if clearly_over_budget(q):
            break
    speed = session.speed(acc, max_pairs=16)                # interleaved pairs, adaptive
    row = session.trial_row(acc, quality=q, speed=speed,
                            compute_ratio=session.compute_ratio(acc), phase="screen")

Public API (all on `TrialSession` unless noted):

* ``TrialSession(cfg, device=None, dtype=None, clip_model=None, *, judge_model=None, seed=0,
  progress=None)``: validates `cfg` and loads its pipeline (float16 on CUDA, float32 on
  CPU by default); `clip_model` / `judge_model` add the CLIP / judge score columns.
  `session.cfg` is the config with its resolution resolved; keys and rows use it.
* ``baseline_images(prompt, seed)``: the baseline images, cached per (prompt, seed).
* ``accelerated_images(acc, prompt, seed)``: the accelerated images.
* ``prompt_quality(acc, prompt, seed) -> PromptQuality``: one prompt.
* ``iter_quality(acc, prompts, seeds=None) -> Iterator[QualitySummary]``: yields
  the running summary after each prompt (``summary.prompts[-1]`` is the newest).
* ``quality(acc, prompts, seeds=None) -> QualitySummary``: all prompts.
* ``speed(acc, *, prompt=None, seed=0, min_pairs=3, max_pairs=30, target_halfwidth=0.03,
  warmup=1, on_pair=None) -> measure.SpeedResult``.
* ``compute_ratio(acc, *, prompt=None, seed=0) -> float`` and ``baseline_flops(...)``.
* ``baseline_row(*, sweep_id=None, runs=5) -> dict`` (`lake_schema.BASELINE_SCHEMA`).
* ``trial_row(acc, *, quality=None, speed=None, compute_ratio=None, status="ok",
  phase="screen", final=True, ...) -> dict`` (`lake_schema.TRIAL_SCHEMA`, every column).
* ``run(acc, prompts, seeds=None, *, measure_speed=True, ...) -> dict``: all of the above
  for one point; returns the trial row.
* ``release()`` / ``close()``: drop the accelerated pipeline (also a context manager).
* module level: ``run_trial(cfg, acc, prompts, seeds=None, ...) -> dict`` (one-shot),
  ``resolve_config(cfg)``, ``default_device()``, ``default_dtype(device)``.

How the baseline stays pristine: the accelerated pipeline is a `pipelines.fork` of
the baseline one (it shares every weight but owns its denoiser modules and scheduler),
and methods are applied to the fork only. DeepCache and ToMe are removed from the fork
exactly; a T-GATE point leaves the fork patched for good (`Applied.needs_rebuild`), so
the next point gets a fresh fork, built on the meta device around the same weights in
milliseconds. `session.rebuilds` counts those.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from sweep import catalog, lake_schema, measure, methods, pipelines
from sweep import prompts as prompt_sets
from sweep.catalog import Acceleration, PipelineConfig
from sweep.quality import ClipScorer, JudgeScorer, PromptQuality, QualitySummary, ssim_psnr

log = logging.getLogger("diffaccel.trial")

Progress = Callable[[str], None]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device) -> Any:
    """float16 on CUDA (what these pipelines are deployed in), float32 on CPU (where
    float16 kernels are slow or missing)."""
    import torch

    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def resolve_config(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with its resolution filled in: the form rows store and keys are computed from."""
    return dataclasses.replace(cfg, resolution=pipelines.resolve_resolution(cfg))


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


class TrialSession:
    """A resident pipeline with its cached baseline; see the module docstring."""

    def __init__(self, cfg: PipelineConfig, device=None, dtype=None, clip_model=None, *, judge_model=None,
                 seed: int = 0, progress: Progress | None = None):
        cfg.validate()
        self.cfg = resolve_config(cfg)
        self.family = cfg.family
        self.device = str(device or default_device())
        self.dtype = dtype or default_dtype(self.device)
        self._progress = progress or (lambda _msg: None)
        self._progress(f"loading {self.cfg.label()} ({self.cfg.preset}) on {self.device}, {_dtype_name(self.dtype)}")
        loading = time.monotonic()
        self.pipe = pipelines.load(self.cfg, device=self.device, dtype=self.dtype, seed=seed,
                                   progress=lambda msg: self._progress(f"loading: {msg}"))
        self._progress(f"loaded in {time.monotonic() - loading:.0f} s")
        self.call_kwargs = pipelines.call_kwargs(self.cfg.model, self.cfg.preset)
        self.device_columns = measure.device_info(self.device)
        self.versions = measure.library_versions()
        self.baseline_key = catalog.baseline_key(self.cfg, self.device_kind, self.versions)
        self.clip_model = str(clip_model) if clip_model else None
        self._clip = ClipScorer(clip_model, device=self.device) if clip_model else None
        self._baseline_images: dict[tuple[str, int], Any] = {}
        self._baseline_clip: dict[tuple[str, int], float] = {}
        self._judge = JudgeScorer(judge_model, device=self.device) if judge_model else None
        self.judge_model = self._judge.name if self._judge else None
        self._baseline_judge: dict[tuple[str, int], float] = {}
        self._baseline_flops: float | None = None
        self._baseline_times: list[float] = []
        self._baseline_peak: int | None = None
        self._fork = None
        self._applied: methods.Applied | None = None
        self.rebuilds = 0
        # Seconds spent inside pipeline calls (any kind): what a sweep's GPU utilisation
        # counts as useful work.
        self.pipeline_seconds = 0.0

    # ------------------------------------------------------------------------ basics

    @property
    def device_kind(self) -> str:
        return self.device_columns["device_kind"]

    def __enter__(self) -> TrialSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.release()

    def generation_kwargs(self) -> dict[str, Any]:
        """The arguments of every call, baseline and accelerated alike."""
        res = self.cfg.resolution
        return {
            "num_inference_steps": self.cfg.steps,
            "height": res,
            "width": res,
            "guidance_scale": self.cfg.guidance_scale,
            "num_images_per_prompt": self.cfg.batch,
            "output_type": "pt",
            **self.call_kwargs,
        }

    def trial_key(self, acc: Acceleration, inputs: Mapping[str, Any] | None = None) -> str:
        """`acc`'s key on this session; `inputs` (`catalog.measurement_inputs`) says what
        it was measured with."""
        return catalog.trial_key(self.cfg, acc, self.device_kind, self.versions, inputs)

    def validate(self, acc: Acceleration) -> None:
        acc.validate(self.family, self.cfg.steps)

    # ------------------------------------------------------------- patching the fork

    def accelerate(self, acc: Acceleration) -> methods.Applied:
        """The accelerated pipeline for `acc`, patching (or re-using) the fork."""
        if self._applied is not None and not self._applied.removed and self._applied.acc == acc:
            return self._applied
        self.validate(acc)
        self.release()
        if self._fork is None:
            self._fork = pipelines.fork(self.pipe)
        self._applied = methods.apply(self._fork, acc, self.family, call_kwargs=self.call_kwargs)
        return self._applied

    def release(self) -> None:
        """Undo the current point; drop the fork when the point cannot be undone."""
        applied, self._applied = self._applied, None
        if applied is None:
            return
        applied.remove()
        if applied.needs_rebuild:
            self._fork = None
            self.rebuilds += 1
            # DeepCache and T-GATE closures form reference cycles that hold cached
            # activations; free them now rather than at the next collection.
            gc.collect()

    # ----------------------------------------------------------------------- images

    def _pipeline_call(self, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.synchronize(self.device)
            self.pipeline_seconds += time.perf_counter() - t0

    def _run_baseline(self, prompt: str, seed: int):
        if methods.applied_to(self.pipe) is not None:  # never measure a patched baseline
            raise RuntimeError("the baseline pipeline carries an acceleration patch")
        return self._pipeline_call(lambda: methods.generate(self.pipe, prompt, seed=seed,
                                                            **self.generation_kwargs()))

    def baseline_images(self, prompt: str, seed: int):
        """Baseline images of (prompt, seed), on the CPU; computed once per session."""
        key = (prompt, int(seed))
        if key not in self._baseline_images:
            self._baseline_images[key] = self._run_baseline(prompt, seed).float().cpu()
        return self._baseline_images[key]

    def accelerated_images(self, acc: Acceleration, prompt: str, seed: int):
        applied = self.accelerate(acc)
        kwargs = self.generation_kwargs()
        return self._pipeline_call(lambda: applied.generate(prompt, seed=seed, **kwargs)).float().cpu()

    # ----------------------------------------------------------------------- quality

    @staticmethod
    def _mean_score(scorer, images, prompt: str) -> float:
        return sum(scorer.score(images, [prompt] * len(images))) / len(images)

    def _clip_scores(self, images, prompt: str) -> float:
        return self._mean_score(self._clip, images, prompt)

    def prompt_quality(self, acc: Acceleration, prompt: str, seed: int) -> PromptQuality:
        """Quality of `acc` on one prompt and seed, against the cached baseline."""
        base = self.baseline_images(prompt, seed)
        accel = self.accelerated_images(acc, prompt, seed)
        ssim, psnr = ssim_psnr(accel, base)
        clip_score = clip_base = None
        if self._clip is not None:
            key = (prompt, int(seed))
            if key not in self._baseline_clip:
                self._baseline_clip[key] = self._clip_scores(base, prompt)
            clip_base = self._baseline_clip[key]
            clip_score = self._clip_scores(accel, prompt)
        judge_score = judge_base = None
        if self._judge is not None:
            key = (prompt, int(seed))
            if key not in self._baseline_judge:
                self._baseline_judge[key] = self._mean_score(self._judge, base, prompt)
            judge_base = self._baseline_judge[key]
            judge_score = self._mean_score(self._judge, accel, prompt)
        return PromptQuality(prompt=prompt, seed=int(seed), ssim=ssim, psnr=psnr,
                             clip_score=clip_score, clip_score_base=clip_base,
                             judge_score=judge_score, judge_score_base=judge_base)

    def iter_quality(self, acc: Acceleration, prompts: Sequence[str],
                     seeds: Sequence[int] | None = None) -> Iterator[QualitySummary]:
        """Evaluate one prompt at a time, yielding the running summary after each.

        Stop iterating whenever you like: the fork stays patched until the next call
        that needs another point (or `release()`), and nothing is left half-done.
        """
        self.validate(acc)
        if not prompts:
            raise ValueError("no prompts: pass at least one")
        seeds = list(seeds) if seeds is not None else prompt_sets.default_seeds(len(prompts))
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
        summary = QualitySummary(clip_model=self.clip_model, judge_model=self.judge_model)
        # Said before the first prompt: its baseline run comes first and may take minutes.
        self._progress(f"quality {acc.tag}: {len(prompts)} prompt(s), each against its baseline")
        for i, (prompt, seed) in enumerate(zip(prompts, seeds, strict=True), 1):
            summary.prompts.append(self.prompt_quality(acc, prompt, seed))
            self._progress(f"quality {acc.tag}: prompt {i}/{len(prompts)} ssim={summary.prompts[-1].ssim:.4f}")
            yield summary

    def reused_quality(self, acc: Acceleration, prompts: Sequence[str], seeds: Sequence[int],
                       prior: str) -> QualitySummary:
        """The quality a confirmation reports: its screen's (`prior`, a row's
        ``prompt_quality_json``), once the first prompt, measured again, agrees with it.
        The same seeds on the same kind of device give the same images, so the other
        prompts need not run again; if the first disagrees (a method that draws random
        numbers of its own, say), every prompt is measured afresh."""
        old = QualitySummary.from_json(prior, self.clip_model, self.judge_model)
        if [(p.prompt, p.seed) for p in old.prompts] != [(p, int(s)) for p, s in zip(prompts, seeds, strict=True)]:
            return self.quality(acc, prompts, seeds)  # measured on other prompts: nothing to reuse
        self.validate(acc)
        first = self.prompt_quality(acc, prompts[0], seeds[0])
        if all(_same_loss(first.loss(m), old.prompts[0].loss(m)) for m in lake_schema.BUDGET_METRICS):
            self._progress(f"quality {acc.tag}: prompt 1 agrees with the screen; its other prompts reused")
            return QualitySummary([first, *old.prompts[1:]], self.clip_model, self.judge_model)
        log.warning("%s: prompt 1 measured %s now and %s at screening: every prompt is measured again",
                    acc.tag, first.loss("ssim"), old.prompts[0].loss("ssim"))
        rest = [self.prompt_quality(acc, p, s) for p, s in zip(prompts[1:], seeds[1:], strict=True)]
        return QualitySummary([first, *rest], self.clip_model, self.judge_model)

    def quality(self, acc: Acceleration, prompts: Sequence[str],
                seeds: Sequence[int] | None = None) -> QualitySummary:
        # Run the iterator to the end and keep its last (complete) summary.
        return collections.deque(self.iter_quality(acc, prompts, seeds), maxlen=1)[0]

    # ------------------------------------------------------------------ speed, FLOPs

    def _speed_prompt(self, prompt: str | None) -> str:
        return prompt if prompt is not None else prompt_sets.load_prompts(n=1)[0]

    def speed(self, acc: Acceleration, *, prompt: str | None = None, seed: int = 0,
              min_pairs: int = measure.DEFAULT_MIN_PAIRS, max_pairs: int = measure.DEFAULT_MAX_PAIRS,
              target_halfwidth: float = measure.DEFAULT_TARGET_HALFWIDTH, warmup: int = 1,
              on_pair: Callable[[measure.SpeedResult], None] | None = None,
              prior: Mapping[str, Sequence[float]] | None = None) -> measure.SpeedResult:
        """Latency of baseline vs `acc` in interleaved pairs (see `sweep.measure`);
        `prior` pairs of an earlier measurement count towards them."""
        prompt = self._speed_prompt(prompt)
        applied = self.accelerate(acc)
        kwargs = self.generation_kwargs()

        def run_baseline():
            return self._run_baseline(prompt, seed)

        def run_accel():
            return self._pipeline_call(lambda: applied.generate(prompt, seed=seed, **kwargs))

        def report(r: measure.SpeedResult) -> None:
            self._progress(f"speed {acc.tag}: pair {r.n_pairs}/{max_pairs} speedup={r.speedup:.3f}"
                           + (f" ±{r.halfwidth:.1%}" if r.n_pairs > 1 else ""))
            if on_pair is not None:
                on_pair(r)

        self._progress(f"speed {acc.tag}: {warmup} warm-up pair(s), then {min_pairs}–{max_pairs} timed pairs "
                       f"(stops once the speedup's 95% CI is within ±{target_halfwidth:.0%})")
        result = measure.measure_pairs(run_baseline, run_accel, device=self.device, min_pairs=min_pairs,
                                       max_pairs=max_pairs, target_halfwidth=target_halfwidth,
                                       warmup=warmup, on_pair=report, prior=prior)
        self._baseline_times.extend(result.baseline_times)
        if result.baseline_peak_mem_bytes is not None:
            self._baseline_peak = max(self._baseline_peak or 0, result.baseline_peak_mem_bytes)
        return result

    def baseline_flops(self, *, prompt: str | None = None, seed: int = 0) -> float:
        """FLOPs of one baseline call; counted once per session."""
        if self._baseline_flops is None:
            prompt = self._speed_prompt(prompt)
            self._baseline_flops = measure.count_flops(lambda: self._run_baseline(prompt, seed))
        return self._baseline_flops

    def compute_ratio(self, acc: Acceleration, *, prompt: str | None = None, seed: int = 0) -> float:
        """FLOPs of one accelerated call over those of one baseline call."""
        prompt = self._speed_prompt(prompt)
        applied = self.accelerate(acc)
        kwargs = self.generation_kwargs()
        flops = measure.count_flops(lambda: self._pipeline_call(lambda: applied.generate(prompt, seed=seed, **kwargs)))
        return flops / self.baseline_flops(prompt=prompt, seed=seed)

    # -------------------------------------------------------------------------- rows

    def config_columns(self) -> dict[str, Any]:
        """The lake's config columns (resolved resolution, the dtype actually used)."""
        c = self.cfg
        return {
            "model": c.model, "preset": c.preset, "model_path": c.model_path, "scheduler": c.scheduler,
            "steps": c.steps, "resolution": c.resolution, "batch": c.batch, "dtype": _dtype_name(self.dtype),
            "guidance_scale": float(c.guidance_scale),
        }

    def baseline_latency(self, runs: int = 5, *, prompt: str | None = None, seed: int = 0) -> list[float]:
        """Baseline timings: those the pair measurements took, topped up to `runs`."""
        prompt = self._speed_prompt(prompt)
        if not self._baseline_times:
            self._run_baseline(prompt, seed)  # warm-up
        while len(self._baseline_times) < runs:
            self._baseline_times.append(measure.timed(lambda: self._run_baseline(prompt, seed), self.device))
        return list(self._baseline_times)

    def baseline_row(self, *, sweep_id: str | None = None, runs: int = 5) -> dict[str, Any]:
        """A row of `lake_schema.BASELINE_SCHEMA` for this config and device."""
        import statistics

        times = self.baseline_latency(runs)
        if self._baseline_peak is None and measure.is_cuda(self.device):
            prompt = self._speed_prompt(None)
            self._baseline_peak = measure.peak_memory(lambda: self._run_baseline(prompt, 0), self.device)
        clip = list(self._baseline_clip.values())
        judged = list(self._baseline_judge.values())
        row = {
            "schema_version": lake_schema.SCHEMA_VERSION,
            "baseline_key": self.baseline_key,
            "sweep_id": sweep_id,
            **self.config_columns(),
            "latency_s": statistics.median(times),
            "latency_spread_s": measure.iqr(times),
            "n_runs": len(times),
            "peak_mem_bytes": self._baseline_peak,
            "flops": self.baseline_flops(),
            "clip_score": sum(clip) / len(clip) if clip else None,
            "judge_score": sum(judged) / len(judged) if judged else None,
            "n_prompts": len(self._baseline_images),
            **self.device_columns,
            "created_at": measure.utc_now(),
        }
        return _complete(row, lake_schema.BASELINE_SCHEMA)

    def trial_row(
        self,
        acc: Acceleration,
        *,
        quality: QualitySummary | None = None,
        speed: measure.SpeedResult | None = None,
        compute_ratio: float | None = None,
        status: str = lake_schema.OK,
        phase: str = lake_schema.SCREEN,
        final: bool = True,
        sweep_id: str | None = None,
        error: str | None = None,
        stop_reason: str | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        gpu_seconds: float | None = None,
        key_inputs: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A row of `lake_schema.TRIAL_SCHEMA` (every column present, null when unmeasured).

        `key_inputs` (`catalog.measurement_inputs`) go into the row's `trial_key`.

        `gpu_seconds` defaults to the wall time between `started_at` and `finished_at`
        on a CUDA device (one GPU per trial), and to null on a CPU.
        """
        if status not in lake_schema.STATUSES:
            raise ValueError(f"status={status!r}: use one of {', '.join(lake_schema.STATUSES)}")
        finished_at = finished_at or measure.utc_now()
        if gpu_seconds is None and started_at is not None and measure.is_cuda(self.device):
            gpu_seconds = (finished_at - started_at).total_seconds()
        params = acc.params
        row: dict[str, Any] = {
            "schema_version": lake_schema.SCHEMA_VERSION,
            "trial_key": self.trial_key(acc, key_inputs),
            "baseline_key": self.baseline_key,
            "tag": acc.tag,
            "sweep_id": sweep_id,
            **self.config_columns(),
            "method": acc.combo,
            **{name: params.get(name) for name in lake_schema.PARAM_COLUMNS},
            "params_json": json.dumps(params, sort_keys=True),
            "status": status,
            "phase": phase,
            "final": final,
            "error": error,
            "stop_reason": stop_reason,
            "compute_ratio": compute_ratio,
            **(speed.row() if speed is not None else {}),
            **(quality.row() if quality is not None
               else {"clip_model": self.clip_model, "judge_model": self.judge_model}),
            **self.device_columns,
            "gpu_seconds": gpu_seconds,
            "started_at": started_at,
            "finished_at": finished_at,
        }
        return _complete(row, lake_schema.TRIAL_SCHEMA)

    def run(
        self,
        acc: Acceleration,
        prompts: Sequence[str],
        seeds: Sequence[int] | None = None,
        *,
        measure_speed: bool = True,
        min_pairs: int = measure.DEFAULT_MIN_PAIRS,
        max_pairs: int = measure.DEFAULT_MAX_PAIRS,
        target_halfwidth: float = measure.DEFAULT_TARGET_HALFWIDTH,
        phase: str = lake_schema.SCREEN,
        sweep_id: str | None = None,
    ) -> dict[str, Any]:
        """Quality on every prompt, compute ratio and (optionally) speed: one trial row."""
        self.validate(acc)
        started = measure.utc_now()
        q = self.quality(acc, prompts, seeds)
        seed0 = q.prompts[0].seed
        self._progress(f"compute ratio {acc.tag}")
        ratio = self.compute_ratio(acc, prompt=prompts[0], seed=seed0)
        speed = None
        if measure_speed:
            speed = self.speed(acc, prompt=prompts[0], seed=seed0, min_pairs=min_pairs, max_pairs=max_pairs,
                               target_halfwidth=target_halfwidth)
        self.release()
        pairs = ({"min_pairs": min_pairs, "max_pairs": max_pairs, "target_halfwidth": target_halfwidth}
                 if measure_speed else {})
        inputs = catalog.measurement_inputs(dtype=_dtype_name(self.dtype), prompts=prompts,
                                            seeds=[p.seed for p in q.prompts], pairs=pairs,
                                            clip_model=self.clip_model, judge_model=self.judge_model)
        return self.trial_row(acc, quality=q, speed=speed, compute_ratio=ratio, phase=phase,
                              sweep_id=sweep_id, started_at=started, key_inputs=inputs)

    def sweep_trial(
        self,
        acc: Acceleration,
        prompts: Sequence[str],
        seeds: Sequence[int],
        *,
        phase: str,
        metric: str,
        budgets: Sequence[float],
        clearly_over: Callable[[list[float]], bool],
        settings: dict[str, Any],
        sweep_id: str | None = None,
        on_prompt: Callable[[int, float], None] | None = None,
        key_inputs: Mapping[str, Any] | None = None,
        reuse: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One trial of a sweep, screen or confirm: (its lake row, timing figures).

        Quality one (prompt, seed) pair at a time, `on_prompt(done, loss)` after each but
        the last; a screen trial whose losses are `clearly_over` every budget ends there
        as ``stopped``, untimed (a confirmation re-measures a point that already passed,
        so it never stops). Survivors get their compute ratio (``settings["count_flops"]``:
        always, on confirmation, never) and their speed: a fixed ``screen_pairs`` when
        screening; at least ``confirm_pairs`` and up to three times that, until
        ``ci_target``, when confirming. `settings` is `spec.Measure` as a dict.

        A confirmation tops up its screen: `reuse` holds the screen row's
        ``prompt_quality_json`` and ``pair_times_json``. Its quality is the screen's once
        the first prompt, measured again, agrees (`reused_quality`), and the screen's
        pairs count towards its own (`measure.measure_pairs(prior=)`).
        """

        started = measure.utc_now()
        t0 = time.monotonic()
        busy0 = self.pipeline_seconds
        confirm = phase == lake_schema.CONFIRM
        reuse = (reuse or {}) if confirm else {}
        summary, status, stop_reason, done = None, lake_schema.OK, None, 0
        if reuse.get("prompt_quality"):
            summary = self.reused_quality(acc, prompts, seeds, reuse["prompt_quality"])
            done = summary.n_prompts
        else:
            for summary in self.iter_quality(acc, prompts, seeds):
                done = summary.n_prompts
                losses = [p.loss(metric) for p in summary.prompts]
                if done < len(prompts) and on_prompt is not None:
                    on_prompt(done, summary.loss(metric))
                if not confirm and clearly_over(losses):
                    status = lake_schema.STOPPED
                    how = ("over every budget: no bound, so not timed" if done == len(prompts)
                           else "clearly over every budget")
                    stop_reason = (f"quality loss ({metric}) {summary.loss(metric):.4f} after {done} of "
                                   f"{len(prompts)} prompt(s) is {how} (max {max(budgets):g})")
                    break
        quality_s = time.monotonic() - t0
        timed_s, ratio, speed = 0.0, None, None
        if status == lake_schema.OK:
            if settings["count_flops"] == "always" or (settings["count_flops"] == "confirm" and confirm):
                ratio = self.compute_ratio(acc, prompt=prompts[0], seed=seeds[0])
            n = settings["confirm_pairs" if confirm else "screen_pairs"]
            speed = self.speed(acc, prompt=prompts[0], seed=seeds[0], target_halfwidth=settings["ci_target"],
                               min_pairs=n, max_pairs=3 * n if confirm else n, prior=reuse.get("pair_times"))
            timed_s = sum(speed.baseline_times) + sum(speed.accel_times)
        inference_s = time.monotonic() - t0
        self.release()
        row = self.trial_row(acc, quality=summary, speed=speed, compute_ratio=ratio, status=status,
                             phase=phase, final=confirm, sweep_id=sweep_id, stop_reason=stop_reason,
                             started_at=started, key_inputs=key_inputs)
        row["quality_seconds"] = quality_s
        row["timing_seconds"] = inference_s - quality_s if status == lake_schema.OK else 0.0
        if summary is not None:
            row["prompt_losses_json"] = json.dumps(
                {m: [p.loss(m) for p in summary.prompts] for m in lake_schema.BUDGET_METRICS})
        return row, {"prompts_done": done, "timed_seconds": timed_s, "inference_seconds": inference_s,
                     "pipeline_seconds": self.pipeline_seconds - busy0}


def _same_loss(a: float | None, b: float | None) -> bool:
    """Equal up to the float noise of one recomputation (both unmeasured counts)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-4 + 1e-3 * abs(b)


def _complete(row: dict[str, Any], schema) -> dict[str, Any]:
    """Every schema column, in schema order; a key outside the schema is a bug."""
    extra = set(row) - set(schema.names)
    if extra:
        raise KeyError(f"row has columns outside the lake schema: {sorted(extra)}")
    return {name: row.get(name) for name in schema.names}


def run_trial(
    cfg: PipelineConfig,
    acc: Acceleration,
    prompts: Sequence[str],
    seeds: Sequence[int] | None = None,
    *,
    device=None,
    dtype=None,
    clip_model=None,
    judge_model=None,
    measure_speed: bool = True,
    min_pairs: int = measure.DEFAULT_MIN_PAIRS,
    max_pairs: int = measure.DEFAULT_MAX_PAIRS,
    target_halfwidth: float = measure.DEFAULT_TARGET_HALFWIDTH,
    phase: str = lake_schema.SCREEN,
    sweep_id: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load, measure one point, return its trial row. Everything is validated first."""
    cfg.validate()
    acc.validate(cfg.family, cfg.steps)
    if not prompts:
        raise ValueError("no prompts: pass at least one")
    with TrialSession(cfg, device=device, dtype=dtype, clip_model=clip_model, judge_model=judge_model,
                      progress=progress) as session:
        return session.run(acc, prompts, seeds, measure_speed=measure_speed, min_pairs=min_pairs,
                           max_pairs=max_pairs, target_halfwidth=target_halfwidth, phase=phase,
                           sweep_id=sweep_id)
