"""Task texts: plain-English requests a code agent reads, and the parser that reads them back.

A text names the model, scheduler, steps, resolution, methods, hardware, the speedup
asked for and the quality budget (and the metric it is stated in). A few phrasings keep
a benchmark from being one sentence template; which one a task gets is a pure function
of its id, so regenerating tasks never reshuffles them.

The parser does not match whole phrasings: it reads each part on its own, so it reads
every phrasing here and most hand-written variants, and when a part is missing or
ambiguous it says which part and what it expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from sweep.catalog import FAMILIES, METHOD_DISPLAY, METHOD_ORDER, SCHEDULERS, ConfigError
from sweep.lake_schema import BUDGET_METRICS


class TextError(ConfigError):
    """A task text that cannot be read; the message names the part."""


@dataclass(frozen=True)
class Request:
    """What a task text asks for."""

    model: str
    scheduler: str
    steps: int
    method: str  # canonical combination, e.g. "deepcache+tgate"
    speedup: float
    budget: float
    metric: str | None = None
    device_kind: str | None = None
    resolution: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# Numbers a task may hold. A speedup beyond MAX_SPEEDUP or a step count beyond
# MAX_STEPS is a typo or an overflow (401 digits read as inf), never a request.
MAX_SPEEDUP = 1000.0
MAX_STEPS = 10_000


def check_request_numbers(speedup, budget, steps, *, where: str = "", error: type[Exception] = None) -> None:
    """Refuse a non-finite or absurd speedup, budget or step count, naming it and the range."""
    error = error or TextError
    at = f" {where}" if where else ""
    if speedup is not None:
        if not _finite_number(speedup) or not 0 < speedup <= MAX_SPEEDUP:
            raise error(f"the speedup {speedup!r}{at} is out of range: ask for a finite speedup "
                        f"in (0, {MAX_SPEEDUP:g}]×, e.g. 2.30×")
    if budget is not None:
        if not _finite_number(budget) or not 0 <= budget <= 1:
            raise error(f"the quality budget {budget!r}{at} is out of range: use a finite loss in [0, 1], "
                        f"e.g. 0.02")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise error(f"the step count {steps!r}{at} is out of range: use a whole number in "
                        f"[1, {MAX_STEPS}], e.g. 50 steps")


def _finite_number(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)


# How a metric is named in a text (and read back).
METRIC_TEXT = {"ssim": "1 − SSIM", "clip": "relative CLIP-score drop", "judge": "relative judge-score drop"}

PHRASINGS = (
    "Write inference code for {model} with the {scheduler} scheduler and {steps} steps at "
    "{res}×{res}, accelerated by {methods}, that is at least {speedup}× faster than the "
    "baseline on {device} with a quality loss no greater than {budget} ({metric}).",

    "Accelerate {model} ({scheduler} scheduler, {steps} steps, {res}×{res} images) with "
    "{methods} so that it runs at least {speedup}× faster than the unaccelerated pipeline "
    "on {device}, keeping the quality loss within {budget} ({metric}).",

    "On {device}, make {model} generate {res}×{res} images in {steps} steps with the "
    "{scheduler} scheduler at least {speedup}× faster than the baseline by applying "
    "{methods}; the quality loss must not exceed {budget} ({metric}).",

    "Using {methods}, speed up {model} with the {scheduler} scheduler ({steps} steps, "
    "{res}×{res}) by a factor of at least {speedup}× over the baseline on {device}, "
    "with a quality loss of at most {budget} ({metric}).",
)


def format_speedup(x: float) -> str:
    return f"{x:.2f}"


def format_budget(x: float) -> str:
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    if float(text) != x:
        return repr(x)
    return text


def device_phrase(device_kind: str) -> str:
    """'H100' -> 'an H100', 'cpu' -> 'a CPU'."""
    name = device_kind.upper() if device_kind.islower() else device_kind
    # Letters whose English name starts with a vowel sound: "an H100", "an A100", "an L4".
    article = "an" if name[:1].upper() in set("AEFHILMNORSX") else "a"
    return f"{article} {name}"


def methods_phrase(combo: str) -> str:
    names = [METHOD_DISPLAY[m] for m in combo.split("+")]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def phrasing_index(task_id: str) -> int:
    return int(task_id[:8], 16) % len(PHRASINGS)


def describe(req: Request, task_id: str) -> str:
    """The task text for a request; the phrasing is chosen from the task id."""
    if req.resolution is None or req.device_kind is None or req.metric is None:
        raise ValueError("a task text needs the resolution, the hardware and the metric")
    return PHRASINGS[phrasing_index(task_id)].format(
        model=FAMILIES[req.model].display,
        scheduler=SCHEDULERS[req.scheduler].display,
        steps=req.steps,
        res=req.resolution,
        methods=methods_phrase(req.method),
        speedup=format_speedup(req.speedup),
        device=device_phrase(req.device_kind),
        budget=format_budget(req.budget),
        metric=METRIC_TEXT[req.metric],
    )


# ----------------------------------------------------------------------------- parsing


def _alias_pattern(names: list[str]) -> str:
    # Longest first, so "Stable Diffusion XL" wins over a shorter alias inside it.
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_MODEL_ALIASES: dict[str, str] = {}
for _name, _fam in FAMILIES.items():
    for _alias in (_fam.display, _name):
        _MODEL_ALIASES[_alias.lower()] = _name
_MODEL_ALIASES.update({
    "sd 1.5": "sd15", "sd1.5": "sd15", "stable diffusion v1.5": "sd15",
    "sd 2.1": "sd21", "sd2.1": "sd21", "stable diffusion v2.1": "sd21",
    "sdxl": "sdxl", "sd xl": "sdxl",
    "pixart-alpha": "pixart_alpha", "pixart alpha": "pixart_alpha",
    "pixart-sigma": "pixart_sigma", "pixart sigma": "pixart_sigma",
})

_SCHED_ALIASES: dict[str, str] = {}
for _name, _s in SCHEDULERS.items():
    for _alias in (_s.display, _name):
        _SCHED_ALIASES[_alias.lower()] = _name
_SCHED_ALIASES.update({"plms": "pndm", "dpm++": "dpmpp", "dpm-solver": "dpmpp", "euler discrete": "euler"})

# The libraries' own names and common spellings. Methods are found wherever the text
# names them, so any joiner works ("+", "and", ",", "with", "combined with") and their
# order does not matter: a combination is the set of methods named.
_METHOD_ALIASES = {
    "deepcache": "deepcache", "deep cache": "deepcache", "deep-cache": "deepcache",
    "t-gate": "tgate", "tgate": "tgate", "t gate": "tgate",
    "tome": "tome", "tomesd": "tome", "token merging": "tome",
}

_WORD_L = r"(?<![\w-])"
_MODEL_RE = re.compile(_WORD_L + "(" + _alias_pattern(list(_MODEL_ALIASES)) + ")" + r"(?![\w+])", re.I)
_SCHED_RE = re.compile(_WORD_L + "(" + _alias_pattern(list(_SCHED_ALIASES)) + ")" + r"(?![\w])", re.I)
# "+" may touch a method name on either side ("DeepCache+T-GATE", "ToMe+DeepCache").
_METHOD_RE = re.compile(r"(?<![\w-])(" + _alias_pattern(list(_METHOD_ALIASES)) + r")(?![\w-])", re.I)
_STEPS_RE = re.compile(r"(?<![\w.])(\d+)\s+(?:inference\s+|sampling\s+|denoising\s+)?steps\b", re.I)
_RES_RE = re.compile(r"(?<![\w.])(\d+)\s*[×x]\s*(\d+)(?![\w.])|(?<![\w.])(\d+)\s*px\b", re.I)
_SPEEDUP_RE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*[×x](?!\s*\d)", re.I)
_BUDGET_RE = re.compile(r"quality\s+loss\D{0,40}?(?<![\w.])(\d*\.?\d+(?:e-?\d+)?)", re.I)
_DEVICE_RE = re.compile(r"\b[Oo]n\s+(?:an?|one|the)\s+([A-Z][\w-]*\d[\w-]*|CPU|cpu)\b")
_METRIC_RE = re.compile(r"\b(SSIM|CLIP|judge)\b", re.I)


def _one(kind: str, found: set[str], text: str, expected: str, required: bool = True) -> str | None:
    if not found:
        if required:
            raise TextError(f"could not read the {kind} in {text!r}: expected {expected}")
        return None
    if len(found) > 1:
        raise TextError(f"the {kind} is ambiguous in {text!r}: it names {', '.join(sorted(found))}; "
                        f"name exactly one")
    return next(iter(found))


def parse(text: str) -> Request:
    """Read a task text back into a `Request`. Raises `TextError` naming the part it could not read."""
    if not isinstance(text, str) or not text.strip():
        raise TextError("the task text is empty: describe the model, scheduler, steps, methods, "
                        "speedup and quality budget")
    model = _one("model", {_MODEL_ALIASES[m.lower()] for m in _MODEL_RE.findall(text)}, text,
                 "one of " + ", ".join(f.display for f in FAMILIES.values()))
    sched = _one("scheduler", {_SCHED_ALIASES[m.lower()] for m in _SCHED_RE.findall(text)}, text,
                 "one of " + ", ".join(s.display for s in SCHEDULERS.values()))
    steps = _one("number of steps", set(_STEPS_RE.findall(text)), text, "e.g. '50 steps'")
    methods = {_METHOD_ALIASES[m.lower()] for m in _METHOD_RE.findall(text)}
    if not methods:
        raise TextError(f"could not read the acceleration methods in {text!r}: expected one or more of "
                        + ", ".join(METHOD_DISPLAY.values()))
    method = "+".join(m for m in METHOD_ORDER if m in methods)

    # The resolution goes first: "512×512" must not be read as a speedup.
    resolutions = set()
    for w, h, px in _RES_RE.findall(text):
        if px:
            resolutions.add(px)
        elif w != h:
            raise TextError(f"the resolution {w}×{h} in {text!r} is not square: diffaccel configs use "
                            f"square images, e.g. 512×512")
        else:
            resolutions.add(w)
    resolution = _one("resolution", resolutions, text, "e.g. '512×512'", required=False)
    rest = _RES_RE.sub(" ", text)
    speedup = _one("speedup", set(_SPEEDUP_RE.findall(rest)), text, "e.g. 'at least 2.30× faster'")
    budget = _one("quality budget", set(_BUDGET_RE.findall(rest)), text,
                  "e.g. 'a quality loss no greater than 0.02'")
    metric_found = {m.lower() for m in _METRIC_RE.findall(rest)}
    metric = _one("quality metric", metric_found, text, " or ".join(BUDGET_METRICS), required=False)
    devices = {d.lower() if d.lower() == "cpu" else d for d in _DEVICE_RE.findall(text)}
    device_kind = _one("hardware", devices, text, "e.g. 'on an H100'", required=False)

    speedup_v, budget_v = float(speedup), float(budget)
    check_request_numbers(speedup_v, budget_v, int(steps), where=f"in {text!r}", error=TextError)
    return Request(model=model, scheduler=sched, steps=int(steps), method=method, speedup=speedup_v,
                   budget=budget_v, metric=metric, device_kind=device_kind,
                   resolution=int(resolution) if resolution is not None else None)


__all__ = ["MAX_SPEEDUP", "MAX_STEPS", "check_request_numbers", "METRIC_TEXT", "PHRASINGS", "Request", "TextError", "describe", "device_phrase",
           "format_budget", "format_speedup", "methods_phrase", "parse", "phrasing_index"]
