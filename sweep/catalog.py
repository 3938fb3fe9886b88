"""What diffaccel knows about: pipeline families, schedulers, acceleration methods,
their parameters, which combinations apply where, and how a parameter point is named.

This module is pure Python on purpose. The sweep validates a whole spec with it before
Ray or a model is touched, and codegen (which must not import torch) renders scripts
from the same facts, so the two can never disagree about what a parameter means.

The shape follows diffusers' hooks: one frozen config dataclass per method, and one
`Acceleration` value that holds the configs of a combination. A method's config is the
one declaration of its parameters (default, doc, range, `faster` sign and tag letter as
field metadata), of the families it applies to and of its tag; `Methods` derives the
rest (PARAMS, PARAM_OWNER, the tag parser), and the lake schema, the adapters, the spec
and codegen read it from there. `Acceleration.tag` is a
short, stable name for a parameter point in the style of cache-dit's tags
(``DC3B0_TG10S5F1W2_TM50D1``); trial keys and script names use it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, get_type_hints


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
#
# A method's config dataclass is the one place its parameters are declared: each field
# carries its default and, as `dataclasses.field` metadata (written by `param`), what
# `ParamSpec` holds. PARAMS, the lake's parameter columns, the adapters' keyword
# arguments, the tag and its parser, the spec's grid checks and the scripts all read it.


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter: what it does and where it is valid (read from its field).

    `low`/`high` are inclusive, except that `low_open` (a reason, e.g. "merges nothing")
    makes `low` exclusive. `per_family` limits (`high`/`choices` that a family narrows)
    are enforced by the method config's `validate`, not by the spec's global check.
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
    # The letter before the value in the method's tag ("B" in DC3B0); the first
    # parameter may have none, since the method's prefix already separates it.
    letter: str = ""
    # Tags hold value * tag_scale (ToMe's ratio as a percentage: TM50), '.' as 'p'.
    tag_scale: int = 1
    # The keyword the library takes the parameter by, where its name differs.
    kwarg: str | None = None
    per_family: bool = False
    low_open: str | None = None
    high_note: str | None = None

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

    def open_range_error(self, value: Any) -> str | None:
        """The message for a value at or below an exclusive `low`, or above a `high` the
        library would cap silently; None if neither applies."""
        if self.low_open and value <= self.low:
            return f"{value} {self.low_open}: use a {self.name} in {self._span()}"
        if self.high_note and value > self.high:
            return f"{value} is above {self.high:g}: {self.high_note}, so use {self._span()}"
        return None

    def _span(self) -> str:
        return f"({self.low:g}, {self.high:g}]" if self.high is not None else f"above {self.low:g}"

    def tag_value(self, value: Any) -> str:
        if self.type is float:
            return f"{value * self.tag_scale:.4g}".replace(".", "p")
        return str(value)

    @property
    def tag_pattern(self) -> str:
        return r"([\dp]+)" if self.type is float else r"(\d+)"

    def from_tag(self, text: str) -> Any:
        if self.type is float:
            return float(text.replace("p", ".")) / self.tag_scale
        return int(text)


def param(default: Any, doc: str, **meta: Any) -> Any:
    """A method parameter's field: its default, and its doc and limits as metadata (the
    keywords of `ParamSpec`: low, high, choices, faster, letter, tag_scale, kwarg, ...)."""
    return field(default=default, metadata={"doc": doc, **meta})


def _check_range(spec: ParamSpec, value: Any, low=None, high=None, choices=None, why: str = "") -> None:
    # First: a NaN passes every comparison below (they are all false), and a config built
    # directly, not from strings, never went through `ParamSpec.coerce`.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{spec.name}={value} is not a finite number: pass e.g. {spec.name}={spec.default}",
                          param=spec.name)
    low = spec.low if low is None else low
    high = spec.high if high is None else high
    choices = spec.choices if choices is None else choices
    why = f" {why}" if why else ""
    bad = spec.open_range_error(value)
    if bad:
        raise ConfigError(f"{spec.name}={bad}", param=spec.name)
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{spec.name}={value} is not valid{why}: use one of {', '.join(map(str, choices))}",
            param=spec.name,
        )
    if low is not None and value < low or high is not None and value > high:
        rng = f"{low:g}–{high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{spec.name}={value} is out of range{why}: use {rng}", param=spec.name)


@functools.cache
def _params_of(cls: type) -> dict[str, ParamSpec]:
    # Read once per class: validating a grid asks for every configuration's specs.
    hints = get_type_hints(cls)
    return {f.name: ParamSpec(f.name, hints[f.name], f.default, **f.metadata) for f in fields(cls)}


class MethodConfig:
    """What every method's config dataclass derives from its fields.

    Subclasses set `method` (the lake's name), `display`, `short` (the tag prefix) and
    `needs_unet` (which families the method applies to), and declare each parameter
    once with `param`.
    """

    method: ClassVar[str]
    display: ClassVar[str]
    short: ClassVar[str]
    needs_unet: ClassVar[bool] = True

    @classmethod
    def params(cls) -> dict[str, ParamSpec]:
        return _params_of(cls)

    @classmethod
    def families(cls) -> tuple[str, ...]:
        """The compatibility matrix's row: the families the method applies to."""
        return tuple(n for n, f in FAMILIES.items() if f.has_unet or not cls.needs_unet)

    def kwargs(self) -> dict[str, Any]:
        """The point as the library's keyword arguments."""
        return {s.kwarg or n: getattr(self, n) for n, s in self.params().items()}

    def tag(self) -> str:
        return self.short + "".join(s.letter + s.tag_value(getattr(self, n)) for n, s in self.params().items())

    @classmethod
    def tag_regex(cls) -> str:
        return re.escape(cls.short) + "".join(re.escape(s.letter) + s.tag_pattern for s in cls.params().values())

    @classmethod
    def from_tag(cls, groups: Sequence[str]) -> MethodConfig:
        return cls(**{n: s.from_tag(g) for (n, s), g in zip(cls.params().items(), groups, strict=True)})

    def check_params(self, **limits: dict[str, Any]) -> None:
        """Every parameter against its spec; `limits[name]` narrows it for this config
        (high, choices, why) where the family or the step count decides."""
        for n, s in self.params().items():
            _check_range(s, getattr(self, n), **limits.get(n, {}))

    def validate(self, fam: Family, steps: int) -> None:
        self.check_params()


@dataclass(frozen=True)
class DeepCacheConfig(MethodConfig):
    """DeepCache (Ma et al., 2023): reuse the UNet's high-level features across steps."""

    # A full UNet pass every `cache_interval` steps; the steps between run only the
    # shallow branch and reuse cached deep features. 1 disables caching; at most steps.
    cache_interval: int = param(3, "full UNet pass every N steps; larger is faster", low=1, faster=+1)
    # Branch 0 is the shallowest (3 per down block). DeepCache itself accepts any
    # value, so the family's branch count is checked here.
    cache_branch_id: int = param(
        0, "skip branch whose features are cached (0–11 SD1.5/2.1, 0–8 SDXL); smaller is faster",
        low=0, high=11, faster=-1, letter="B", per_family=True)

    method: ClassVar[str] = "deepcache"
    display: ClassVar[str] = "DeepCache"
    short: ClassVar[str] = "DC"

    def validate(self, fam: Family, steps: int) -> None:
        self.check_params(cache_interval={"high": steps, "why": f"for {steps} steps"},
                          cache_branch_id={"high": (fam.deepcache_branches or 1) - 1,
                                           "why": f"on {fam.display} ({fam.deepcache_branches} skip branches)"})


@dataclass(frozen=True)
class TGateConfig(MethodConfig):
    """T-GATE (Zhang et al., 2024): stop computing cross-attention after `gate_step`,
    and cache self-attention at intervals (all are arguments of ``pipe.tgate(...)``)."""

    # Cross-attention and classifier-free guidance's second batch are dropped after it.
    gate_step: int = param(10, "step after which cross-attention is cached (1..steps); smaller is faster",
                           low=1, faster=-1)
    # Semantics-planning phase (before the gate): recompute every N steps, reuse between.
    sp_interval: int = param(5, "self-attention refresh interval before the gate; larger is faster",
                             low=1, faster=+1, letter="S")
    # Fidelity-improving phase (after the gate).
    fi_interval: int = param(1, "self-attention refresh interval after the gate; larger is faster",
                             low=1, faster=+1, letter="F")
    warm_up: int = param(2, "steps of full self-attention at the start (0..gate_step-1)",
                         low=0, faster=-1, letter="W")

    method: ClassVar[str] = "tgate"
    display: ClassVar[str] = "T-GATE"
    short: ClassVar[str] = "TG"
    needs_unet: ClassVar[bool] = False

    def validate(self, fam: Family, steps: int) -> None:
        per_step = {"high": steps, "why": f"for {steps} steps"}
        self.check_params(gate_step=per_step, sp_interval=per_step, fi_interval=per_step,
                          warm_up={"high": self.gate_step - 1,
                                   "why": f"with gate_step={self.gate_step} (warm-up must end before the gate)"})


@dataclass(frozen=True)
class ToMeConfig(MethodConfig):
    """Token Merging for SD (Bolya & Hoffman, 2023) through tomesd."""

    # Fraction of tokens merged in each patched block. tomesd caps it at 0.75 silently,
    # so larger values are rejected rather than measured twice under two names.
    ratio: float = param(0.5, "fraction of tokens merged, (0, 0.75]; larger is faster",
                         low=0.0, high=0.75, faster=+1, tag_scale=100,
                         low_open="merges nothing", high_note="tomesd caps it at 0.75 silently")
    # Patch only blocks downsampled at most this much. SDXL has no attention at 1x.
    max_downsample: int = param(1, "patch blocks with downsampling up to this: 1, 2, 4 or 8",
                                choices=(1, 2, 4, 8), faster=+1, letter="D", per_family=True)

    method: ClassVar[str] = "tome"
    display: ClassVar[str] = "ToMe"
    short: ClassVar[str] = "TM"

    def validate(self, fam: Family, steps: int) -> None:
        self.check_params(max_downsample={"choices": fam.tome_levels or None, "why": f"on {fam.display}"})


class Methods:
    """A registry of method configs, in canonical order: the facts every module derives
    from them. `METHODS` is the real one; a test builds its own with a changed config."""

    def __init__(self, configs: Iterable[type[MethodConfig]]):
        self.configs: dict[str, type[MethodConfig]] = {c.method: c for c in configs}
        self.order: tuple[str, ...] = tuple(self.configs)
        self.display: dict[str, str] = {m: c.display for m, c in self.configs.items()}
        self.params: dict[str, dict[str, ParamSpec]] = {m: c.params() for m, c in self.configs.items()}
        # Which flat parameter name belongs to which method (names are unique across methods).
        self.owner: dict[str, str] = {p: m for m, specs in self.params.items() for p in specs}
        self._tag = re.compile("|".join(f"^({c.tag_regex()})$" for c in self.configs.values()))

    def parse_tag(self, tag: str) -> Acceleration:
        """Inverse of `Acceleration.tag`."""
        configs: dict[str, Any] = {}
        for part in tag.split("_"):
            m = self._tag.match(part)
            if not m:
                expected = ", ".join(c.tag_regex().replace(r"(\d+)", "<n>").replace(r"([\dp]+)", "<x>")
                                     for c in self.configs.values())
                raise ConfigError(f"cannot read {part!r} in tag {tag!r}: expected {expected}")
            g, i = m.groups(), 0
            for method, c in self.configs.items():
                n = len(self.params[method])
                if g[i] is not None:
                    configs[method] = c.from_tag(g[i + 1:i + 1 + n])
                i += 1 + n
        return Acceleration(**configs)


METHODS = Methods((DeepCacheConfig, TGateConfig, ToMeConfig))
METHOD_CONFIGS = METHODS.configs
METHOD_DISPLAY = METHODS.display
# Canonical order of methods inside a combination name ("deepcache+tgate+tome").
METHOD_ORDER = METHODS.order
PARAMS: dict[str, dict[str, ParamSpec]] = METHODS.params
PARAM_OWNER: dict[str, str] = METHODS.owner
ALL_PARAMS: tuple[str, ...] = tuple(PARAM_OWNER)

# Supported combinations, by canonical name.
COMBOS: tuple[str, ...] = (
    "deepcache", "tgate", "tome",
    "deepcache+tgate", "deepcache+tome", "tgate+tome", "deepcache+tgate+tome",
)


def method_families(method: str) -> tuple[str, ...]:
    """The compatibility matrix: the families a method applies to."""
    return METHOD_CONFIGS[method].families()


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
            alone = " or ".join(METHOD_DISPLAY[n] for n, c in METHOD_CONFIGS.items() if fam.name in c.families())
            raise ConfigError(
                f"{METHOD_DISPLAY[m]} does not apply to {fam.display}: it needs a UNet and "
                f"{fam.display} is a transformer; drop {m!r} from the combination "
                f"({alone} alone works on {fam.display})"
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
        registry: Methods = METHODS,
    ) -> Acceleration:
        """Build and (when `model` and `steps` are given) validate a point.

        Parameters not given take their defaults; a parameter of a method outside
        the combination is an error, since silently ignoring it would measure
        something other than what was asked.
        """
        combo = canonical_combo(methods)
        chosen = combo.split("+")
        params = dict(params or {})
        owner = registry.owner
        for name in params:
            if name not in owner:
                raise ConfigError(
                    f"unknown parameter {name!r}: known parameters are {', '.join(owner)}"
                )
            if owner[name] not in chosen:
                raise ConfigError(
                    f"parameter {name!r} belongs to {registry.display[owner[name]]}, which is not "
                    f"in {combo!r}: add it to the method or drop the parameter"
                )
        configs = {}
        for m in chosen:
            specs = registry.params[m]
            kw = {n: specs[n].coerce(params[n]) for n in specs if n in params}
            configs[m] = registry.configs[m](**kw)
        acc = cls(**configs)
        if model is not None and steps is not None:
            acc.validate(family(model), steps)
        return acc


parse_tag = METHODS.parse_tag


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
    "DeepCacheConfig", "Family", "METHODS", "MethodConfig", "Methods", "ParamSpec", "PipelineConfig", "Scheduler", "TGateConfig",
    "ToMeConfig", "baseline_key", "canonical_combo", "check_combo_family", "compatibility_matrix",
    "config_dict", "default_preset", "family", "iter_points", "measurement_inputs",
    "method_families", "param", "parse_tag",
    "scheduler", "stable_hash", "trial_key",
]
