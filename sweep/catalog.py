"""What diffaccel knows about: pipeline families, schedulers, acceleration methods,
their parameters, which combinations apply where, and how a parameter point is named.

This module is pure Python on purpose. The sweep validates a whole spec with it before
Ray or a model is touched, and codegen (which must not import torch) renders scripts
from the same facts, so the two can never disagree about what a parameter means.

The shape follows diffusers' hooks: one frozen config dataclass per method, and one
`Acceleration` value that holds the configs of a combination. `Acceleration.tag` is a
short, stable name for a parameter point in the style of cache-dit's tags
(``DC3B0_TG10S5F1W2_TM50D1``); trial keys and script names use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """Bad input: the message names the problem and how to fix it.

    `param` names the method parameter at fault, when one is (a sweep spec blames that
    grid entry, and only that one, for a point that does not validate).
    """

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    name: str
    display: str
    hub_id: str
    pipeline_class: str
    default_resolution: int
    has_unet: bool
    # Number of UNet skip branches DeepCache can cache at (cache_branch_id < this).
    deepcache_branches: int | None
    # Whether ToMe's max_downsample=1 touches any block (SDXL has no attention at 1x).
    tome_levels: tuple[int, ...]
    tgate_loader: str
    tgate_deepcache_loader: str | None
    # `hub_id` is a folder shipped in this repository (relative to its root), not a hub
    # id: the `hub` preset loads it with the same local-folder `from_pretrained` as
    # `--model-path DIR`, and it is the preset a spec or a trial gets by default.
    shipped: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd15", "Stable Diffusion 1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5",
               "StableDiffusionPipeline", 512, True, 12, (1, 2, 4, 8),
               "TgateSDLoader", "TgateSDDeepCacheLoader"),
        Family("sd21", "Stable Diffusion 2.1", "stabilityai/stable-diffusion-2-1",
               "StableDiffusionPipeline", 768, True, 12, (1, 2, 4, 8),
               "TgateSDLoader", "TgateSDDeepCacheLoader"),
        Family("sdxl", "Stable Diffusion XL", "stabilityai/stable-diffusion-xl-base-1.0",
               "StableDiffusionXLPipeline", 1024, True, 9, (2, 4, 8),
               "TgateSDXLLoader", "TgateSDXLDeepCacheLoader"),
        Family("pixart_alpha", "PixArt-α", "PixArt-alpha/PixArt-XL-2-1024-MS",
               "PixArtAlphaPipeline", 1024, False, None, (),
               "TgatePixArtAlphaLoader", None),
        Family("pixart_sigma", "PixArt-Σ", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
               "PixArtSigmaPipeline", 1024, False, None, (),
               "TgatePixArtSigmaLoader", None),
        # Trained in this repository (training/train_shapes.py) on the captioned scenes of
        # sweep/shapes.py: SD 1.5's topology at small widths, 128 px, real image structure.
        Family("shapes", "Shapes (trained here)", "datasets/models/shapes",
               "StableDiffusionPipeline", 128, True, 12, (1, 2, 4, 8),
               "TgateSDLoader", "TgateSDDeepCacheLoader", shipped=True),
    )
}

PRESETS = ("hub", "arch", "tiny")


def default_preset(model: str) -> str:
    """The preset a model gets when none is named: its trained weights where they ship
    with the project (`shapes`), else `arch` (real shapes, random weights, offline)."""
    return "hub" if family(model).shipped else "arch"


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}: use one of {', '.join(FAMILIES)}"
        ) from None


# ------------------------------------------------------------------------- schedulers


@dataclass(frozen=True)
class Scheduler:
    name: str
    display: str
    class_name: str
    # Extra kwargs for `SchedulerClass.from_config(pipe.scheduler.config, **kwargs)`.
    kwargs: tuple[tuple[str, Any], ...] = ()


SCHEDULERS: dict[str, Scheduler] = {
    s.name: s
    for s in (
        Scheduler("ddim", "DDIM", "DDIMScheduler"),
        Scheduler("dpmpp", "DPM-Solver++", "DPMSolverMultistepScheduler",
                  (("algorithm_type", "dpmsolver++"),)),
        Scheduler("unipc", "UniPC", "UniPCMultistepScheduler"),
        Scheduler("euler", "Euler", "EulerDiscreteScheduler"),
        # PLMS is PNDM without the Runge-Kutta warm-up steps.
        Scheduler("pndm", "PNDM (PLMS)", "PNDMScheduler", (("skip_prk_steps", True),)),
    )
}


def scheduler(name: str) -> Scheduler:
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise ConfigError(
            f"unknown scheduler {name!r}: use one of {', '.join(SCHEDULERS)}"
        ) from None


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter: what it does and where it is valid.

    `low`/`high` are inclusive. Family- or step-dependent limits are documented in
    `doc` and enforced by the method config's `validate`.
    """

    name: str
    type: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    # Direction in which the method gets faster (and usually loses quality):
    # +1 larger is faster, -1 smaller is faster, 0 no monotone order. The sweep
    # uses it to prune points dominated by a point already over budget.
    faster: int = 0

    def coerce(self, value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{self.name}={value!r} must be a{'n' if self.type is int else ''} "
                              f"{self.type.__name__}")
        try:
            if self.type is int:
                as_float = float(value)
                if not as_float.is_integer():
                    raise ValueError
                return int(as_float)
            out = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{self.name}={value!r} is not a{'n' if self.type is int else ''} "
                f"{self.type.__name__}: pass e.g. {self.name}={self.default}"
            ) from None
        # float("nan") parses, and NaN passes every range check (its comparisons are all false).
        if isinstance(out, float) and not math.isfinite(out):
            raise ConfigError(f"{self.name}={value!r} is not a finite number: pass e.g. "
                              f"{self.name}={self.default}", param=self.name)
        return out


def _check_range(spec: ParamSpec, value: Any, low=None, high=None, choices=None, why: str = "") -> None:
    low = spec.low if low is None else low
    high = spec.high if high is None else high
    choices = spec.choices if choices is None else choices
    why = f" {why}" if why else ""
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{spec.name}={value} is not valid{why}: use one of {', '.join(map(str, choices))}",
            param=spec.name,
        )
    if low is not None and value < low or high is not None and value > high:
        rng = f"{low:g}–{high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{spec.name}={value} is out of range{why}: use {rng}", param=spec.name)


@dataclass(frozen=True)
class DeepCacheConfig:
    """DeepCache (Ma et al., 2023): reuse the UNet's high-level features across steps.

    cache_interval: a full UNet pass every `cache_interval` steps; the steps between
        run only the shallow branch and reuse cached deep features. 1 disables caching;
        larger is faster and drifts further from the baseline.
    cache_branch_id: the skip branch whose output is cached, 0 being the shallowest.
        Smaller ids skip more of the UNet (faster, lossier). Valid 0–11 on SD 1.5/2.1 and
        0–8 on SDXL; DeepCache itself accepts any value, so it is checked here.
    """

    cache_interval: int = 3
    cache_branch_id: int = 0

    method = "deepcache"
    short = "DC"

    def validate(self, fam: Family, steps: int) -> None:
        specs = PARAMS["deepcache"]
        _check_range(specs["cache_interval"], self.cache_interval, high=steps,
                     why=f"for {steps} steps")
        _check_range(specs["cache_branch_id"], self.cache_branch_id,
                     high=(fam.deepcache_branches or 1) - 1,
                     why=f"on {fam.display} ({fam.deepcache_branches} skip branches)")

    def tag(self) -> str:
        return f"DC{self.cache_interval}B{self.cache_branch_id}"


@dataclass(frozen=True)
class TGateConfig:
    """T-GATE (Zhang et al., 2024): stop computing cross-attention after `gate_step`,
    and cache self-attention at intervals.

    gate_step: the step after which cross-attention (and classifier-free guidance's
        second batch) is dropped. 1..steps; smaller is faster and lossier.
    sp_interval: before the gate, self-attention is recomputed every `sp_interval`
        steps and reused between (semantics-planning phase). Larger is faster.
    fi_interval: the same after the gate (fidelity-improving phase). Larger is faster.
    warm_up: the first `warm_up` steps run self-attention in full. 0..gate_step-1;
        smaller is faster.
    """

    gate_step: int = 10
    sp_interval: int = 5
    fi_interval: int = 1
    warm_up: int = 2

    method = "tgate"
    short = "TG"

    def validate(self, fam: Family, steps: int) -> None:
        specs = PARAMS["tgate"]
        _check_range(specs["gate_step"], self.gate_step, high=steps, why=f"for {steps} steps")
        _check_range(specs["sp_interval"], self.sp_interval, high=steps, why=f"for {steps} steps")
        _check_range(specs["fi_interval"], self.fi_interval, high=steps, why=f"for {steps} steps")
        _check_range(specs["warm_up"], self.warm_up, high=self.gate_step - 1,
                     why=f"with gate_step={self.gate_step} (warm-up must end before the gate)")

    def tag(self) -> str:
        return f"TG{self.gate_step}S{self.sp_interval}F{self.fi_interval}W{self.warm_up}"


@dataclass(frozen=True)
class ToMeConfig:
    """Token Merging for SD (Bolya & Hoffman, 2023) through tomesd.

    ratio: fraction of tokens merged in each patched block, (0, 0.75]. Larger is
        faster and lossier. tomesd silently caps it at 0.75, so larger values are
        rejected here rather than measured twice under two names.
    max_downsample: patch only blocks whose downsampling factor is at most this:
        1, 2, 4 or 8. Larger patches more blocks. SDXL has no attention at 1x, so
        there it takes 2, 4 or 8.
    """

    ratio: float = 0.5
    max_downsample: int = 1

    method = "tome"
    short = "TM"

    def validate(self, fam: Family, steps: int) -> None:
        specs = PARAMS["tome"]
        if self.ratio <= 0:
            raise ConfigError(f"ratio={self.ratio} merges nothing: use a ratio in (0, 0.75]", param="ratio")
        if self.ratio > 0.75:
            raise ConfigError(
                f"ratio={self.ratio} is above 0.75: tomesd caps it at 0.75 silently, so use (0, 0.75]",
                param="ratio",
            )
        _check_range(specs["ratio"], self.ratio)
        _check_range(specs["max_downsample"], self.max_downsample, choices=fam.tome_levels or None,
                     why=f"on {fam.display}")

    def tag(self) -> str:
        pct = f"{self.ratio * 100:.4g}".replace(".", "p")
        return f"TM{pct}D{self.max_downsample}"


METHOD_CONFIGS = {"deepcache": DeepCacheConfig, "tgate": TGateConfig, "tome": ToMeConfig}
METHOD_DISPLAY = {"deepcache": "DeepCache", "tgate": "T-GATE", "tome": "ToMe"}
# Canonical order of methods inside a combination name ("deepcache+tgate+tome").
METHOD_ORDER = ("deepcache", "tgate", "tome")

PARAMS: dict[str, dict[str, ParamSpec]] = {
    "deepcache": {
        p.name: p for p in (
            ParamSpec("cache_interval", int, 3, "full UNet pass every N steps; larger is faster",
                      low=1, faster=+1),
            ParamSpec("cache_branch_id", int, 0,
                      "skip branch whose features are cached (0–11 SD1.5/2.1, 0–8 SDXL); smaller is faster",
                      low=0, high=11, faster=-1),
        )
    },
    "tgate": {
        p.name: p for p in (
            ParamSpec("gate_step", int, 10, "step after which cross-attention is cached (1..steps); smaller is faster",
                      low=1, faster=-1),
            ParamSpec("sp_interval", int, 5, "self-attention refresh interval before the gate; larger is faster",
                      low=1, faster=+1),
            ParamSpec("fi_interval", int, 1, "self-attention refresh interval after the gate; larger is faster",
                      low=1, faster=+1),
            ParamSpec("warm_up", int, 2, "steps of full self-attention at the start (0..gate_step-1)",
                      low=0, faster=-1),
        )
    },
    "tome": {
        p.name: p for p in (
            ParamSpec("ratio", float, 0.5, "fraction of tokens merged, (0, 0.75]; larger is faster",
                      low=0.0, high=0.75, faster=+1),
            ParamSpec("max_downsample", int, 1, "patch blocks with downsampling up to this: 1, 2, 4 or 8",
                      choices=(1, 2, 4, 8), faster=+1),
        )
    },
}

# Which flat parameter name belongs to which method (names are unique across methods).
PARAM_OWNER: dict[str, str] = {p: m for m, specs in PARAMS.items() for p in specs}
ALL_PARAMS: tuple[str, ...] = tuple(PARAM_OWNER)

# Supported combinations, by canonical name.
COMBOS: tuple[str, ...] = (
    "deepcache", "tgate", "tome",
    "deepcache+tgate", "deepcache+tome", "tgate+tome", "deepcache+tgate+tome",
)


def method_families(method: str) -> tuple[str, ...]:
    """The compatibility matrix: the families a method applies to."""
    if method == "tgate":
        return tuple(FAMILIES)
    return tuple(n for n, f in FAMILIES.items() if f.has_unet)


def compatibility_matrix() -> dict[str, dict[str, bool]]:
    """combo -> family -> supported."""
    return {c: {f: all(f in method_families(m) for m in c.split("+")) for f in FAMILIES} for c in COMBOS}


def canonical_combo(methods: str | Sequence[str]) -> str:
    """'tome+deepcache', ['tgate', 'deepcache'] -> 'deepcache+tome', 'deepcache+tgate'."""
    parts = methods.replace(",", "+").split("+") if isinstance(methods, str) else list(methods)
    parts = [p.strip().lower().replace("-", "") for p in parts if p.strip()]
    if not parts:
        raise ConfigError("no method given: use one of " + ", ".join(COMBOS))
    for p in parts:
        if p not in METHOD_CONFIGS:
            raise ConfigError(f"unknown method {p!r}: use one of {', '.join(METHOD_ORDER)} "
                              f"or a combination such as 'deepcache+tgate'")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"method {'+'.join(parts)!r} names a method twice")
    return "+".join(sorted(parts, key=METHOD_ORDER.index))


def check_combo_family(combo: str, fam: Family) -> None:
    for m in combo.split("+"):
        if fam.name not in method_families(m):
            raise ConfigError(
                f"{METHOD_DISPLAY[m]} does not apply to {fam.display}: it needs a UNet and "
                f"{fam.display} is a transformer; drop {m!r} from the combination "
                f"(T-GATE alone works on {fam.display})"
            )


# ------------------------------------------------------------------ parameter points


@dataclass(frozen=True)
class Acceleration:
    """One parameter point of one method combination."""

    deepcache: DeepCacheConfig | None = None
    tgate: TGateConfig | None = None
    tome: ToMeConfig | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(m for m in METHOD_ORDER if getattr(self, m) is not None)

    @property
    def combo(self) -> str:
        return "+".join(self.methods)

    @property
    def tag(self) -> str:
        return "_".join(getattr(self, m).tag() for m in self.methods)

    @property
    def params(self) -> dict[str, Any]:
        """Flat {param: value} over the methods in the combination."""
        out: dict[str, Any] = {}
        for m in self.methods:
            out.update(asdict(getattr(self, m)))
        return out

    def validate(self, fam: Family, steps: int) -> None:
        if not self.methods:
            raise ConfigError("no method given: use one of " + ", ".join(COMBOS))
        check_combo_family(self.combo, fam)
        for m in self.methods:
            getattr(self, m).validate(fam, steps)

    @classmethod
    def from_params(
        cls,
        methods: str | Sequence[str],
        params: Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
        steps: int | None = None,
    ) -> Acceleration:
        """Build and (when `model` and `steps` are given) validate a point.

        Parameters not given take their defaults; a parameter of a method outside
        the combination is an error, since silently ignoring it would measure
        something other than what was asked.
        """
        combo = canonical_combo(methods)
        chosen = combo.split("+")
        params = dict(params or {})
        for name in params:
            if name not in PARAM_OWNER:
                raise ConfigError(
                    f"unknown parameter {name!r}: known parameters are {', '.join(ALL_PARAMS)}"
                )
            if PARAM_OWNER[name] not in chosen:
                raise ConfigError(
                    f"parameter {name!r} belongs to {METHOD_DISPLAY[PARAM_OWNER[name]]}, which is not "
                    f"in {combo!r}: add it to the method or drop the parameter"
                )
        configs = {}
        for m in chosen:
            kw = {n: PARAMS[m][n].coerce(params[n]) for n in PARAMS[m] if n in params}
            configs[m] = METHOD_CONFIGS[m](**kw)
        acc = cls(**configs)
        if model is not None and steps is not None:
            acc.validate(family(model), steps)
        return acc


_TAG_PART = re.compile(r"^(DC)(\d+)B(\d+)$|^(TG)(\d+)S(\d+)F(\d+)W(\d+)$|^(TM)([\dp]+)D(\d+)$")


def parse_tag(tag: str) -> Acceleration:
    """Inverse of `Acceleration.tag`."""
    configs: dict[str, Any] = {}
    for part in tag.split("_"):
        m = _TAG_PART.match(part)
        if not m:
            raise ConfigError(f"cannot read {part!r} in tag {tag!r}: expected DC<i>B<b>, "
                              f"TG<g>S<s>F<f>W<w> or TM<pct>D<d>")
        g = m.groups()
        if g[0]:
            configs["deepcache"] = DeepCacheConfig(int(g[1]), int(g[2]))
        elif g[3]:
            configs["tgate"] = TGateConfig(*map(int, g[4:8]))
        else:
            configs["tome"] = ToMeConfig(float(g[9].replace("p", ".")) / 100, int(g[10]))
    return Acceleration(**configs)


# ----------------------------------------------------------------- pipeline configs


# Upper bounds of a workload. Steps: past 1000 no scheduler of the catalog has more
# training timesteps to visit. Resolution: 4096² is 4x SDXL's native side and already
# needs tens of GiB of activations per image; beyond that a typo (51200) is likelier
# than intent. Batch: 64 images per call fills an H200 at SD1.5 512²; larger batches
# measure memory pressure, not the method.
MAX_STEPS = 1000
MAX_RESOLUTION = 4096
MAX_BATCH = 64


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that fixes the unaccelerated pipeline and its workload.

    `model_path` overrides the hub id for the `hub` preset (a hub id or a local
    folder). `resolution=None` means the family's (or the tiny preset's) default;
    the engine resolves it, and rows always store the resolved value.
    """

    model: str
    scheduler: str
    steps: int
    preset: str = "arch"
    resolution: int | None = None
    batch: int = 1
    model_path: str | None = None
    guidance_scale: float = 7.5

    def validate(self) -> None:
        family(self.model)
        scheduler(self.scheduler)
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}: use one of {', '.join(PRESETS)}")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"steps={self.steps!r} must be an integer in 1–{MAX_STEPS}")
        if self.resolution is not None and (
            not isinstance(self.resolution, int) or not 8 <= self.resolution <= MAX_RESOLUTION
            or self.resolution % 8
        ):
            raise ConfigError(f"resolution={self.resolution!r} must be a multiple of 8 in 8–{MAX_RESOLUTION} "
                              "(e.g. 512)")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or not 1 <= self.batch <= MAX_BATCH:
            raise ConfigError(f"batch={self.batch!r} must be an integer in 1–{MAX_BATCH}")
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g < 0:
            raise ConfigError(f"guidance_scale={g!r} must be a finite number >= 0 (e.g. 7.5)")
        if self.model_path is not None and self.preset != "hub":
            raise ConfigError(f"model_path is only used by the 'hub' preset, not {self.preset!r}: "
                              "drop it or use --preset hub")

    @property
    def family(self) -> Family:
        return family(self.model)

    def label(self) -> str:
        """Human-readable config name, e.g. 'sd15-ddim-50s-512px-b1'."""
        res = f"{self.resolution}px" if self.resolution else "defaultpx"
        return f"{self.model}-{self.scheduler}-{self.steps}s-{res}-b{self.batch}"


def stable_hash(obj: Any, n: int = 16) -> str:
    """Short sha256 of canonical JSON: the same inputs give the same key anywhere."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def config_dict(cfg: PipelineConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def baseline_key(cfg: PipelineConfig, device_kind: str, versions: Mapping[str, str]) -> str:
    return stable_hash({"config": config_dict(cfg), "device": device_kind, "versions": dict(versions)})


def measurement_inputs(*, dtype: str, prompts: Sequence[str], seeds: Sequence[int],
                       pairs: Mapping[str, Any], clip_model: str | None = None,
                       judge_model: str | None = None) -> dict[str, Any]:
    """What a trial measures with besides its config and point, in the form keys hash.

    Any of these changes the numbers a trial row holds, so a spec that changes one must
    re-measure rather than find the old row: the dtype; the prompt set (a hash of the
    texts, in order, so editing the prompt file counts); the seeds; the pairs policy
    (`pairs`: the sweep's screen_pairs, confirm_pairs and ci_target, or a one-off
    trial's min/max pairs and CI target); the CLIP model that scores quality; the judge
    that scores prompt adherence, by its folder's name (where it lives differs between
    machines; which judge it is does not). The judge enters only when one is used, so
    the keys of rows measured without one stay what they were.
    """
    out = {
        "dtype": str(dtype),
        "prompts": stable_hash([str(p) for p in prompts]),
        "seeds": [int(s) for s in seeds],
        "pairs": {k: pairs[k] for k in sorted(pairs)},
        "clip_model": clip_model or None,
    }
    if judge_model:
        out["judge_model"] = os.path.basename(os.path.normpath(str(judge_model)))
    return out


def trial_key(cfg: PipelineConfig, acc: Acceleration, device_kind: str, versions: Mapping[str, str],
              inputs: Mapping[str, Any] | None = None) -> str:
    """Hash of the config, the parameter point, the device kind, the library versions and
    the measurement inputs (`measurement_inputs`).

    The one place a trial key is computed: the driver (which points are stored) and the
    worker (the key its row carries) both call it, with the same inputs. Without `inputs`
    the key covers the first four only; that form is what lakes written before the
    inputs were keyed hold (`sweep.rekey` migrates them).
    """
    payload: dict[str, Any] = {
        "config": config_dict(cfg), "combo": acc.combo, "params": acc.params,
        "device": device_kind, "versions": dict(versions),
    }
    if inputs is not None:
        payload["inputs"] = dict(inputs)
    return stable_hash(payload)


def iter_points(combo: str, grid: Mapping[str, Iterable[Any]]) -> Iterable[dict[str, Any]]:
    """Cartesian product of a parameter grid, in a stable order (for sweeps)."""
    import itertools

    names = [n for n in ALL_PARAMS if n in grid and PARAM_OWNER[n] in combo.split("+")]
    for values in itertools.product(*(list(grid[n]) for n in names)):
        yield dict(zip(names, values, strict=True))


__all__ = [
    "ALL_PARAMS", "COMBOS", "FAMILIES", "METHOD_CONFIGS", "METHOD_DISPLAY", "METHOD_ORDER",
    "PARAMS", "PARAM_OWNER", "PRESETS", "SCHEDULERS", "Acceleration", "ConfigError",
    "DeepCacheConfig", "Family", "ParamSpec", "PipelineConfig", "Scheduler", "TGateConfig",
    "ToMeConfig", "baseline_key", "canonical_combo", "check_combo_family", "compatibility_matrix",
    "config_dict", "default_preset", "family", "iter_points", "measurement_inputs",
    "method_families", "parse_tag",
    "scheduler", "stable_hash", "trial_key",
]
