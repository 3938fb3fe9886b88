"""The ``diffaccel`` command line.

Heavy libraries (torch, diffusers, Ray) are imported inside the commands that need
them, so ``diffaccel --help`` and the commands that only read the lake or render code
start instantly on a machine without them.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup
from typer.models import CommandInfo

from sweep.catalog import ConfigError
from sweep.exits import fail

# Commands defined in modules that import pandas, DuckDB or pyarrow: each module is
# imported only when its command runs (or a help lists it), so `diffaccel codegen` does
# not load the sweep driver, nor `diffaccel sweep` the lake readers. `trial` is defined
# below. The help lists the commands in this order, after `trial`.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("sweep.driver", "sweep_cmd"),
    "query": ("codegen.query", "query_cmd"),
    "report": ("codegen.report", "report_cmd"),
    "bounds": ("codegen.commands", "bounds_cmd"),
    "tasks": ("codegen.commands", "tasks_cmd"),
    "codegen": ("codegen.commands", "codegen_cmd"),
    "build": ("diffaccel.build", "build_cmd"),
}


class _LazyGroup(TyperGroup):
    """A typer group that builds the commands of `LAZY_COMMANDS` on first use."""

    def list_commands(self, ctx) -> list[str]:
        return [*self.commands, *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[cmd_name]
            try:
                info = CommandInfo(name=cmd_name, callback=getattr(importlib.import_module(module), attr))
            except ImportError as e:  # a library this command needs is missing here: the others still work
                info = _unavailable(cmd_name, e.name or str(e))
            self.commands[cmd_name] = typer.main.get_command_from_info(
                info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=self.rich_markup_mode)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in LAZY_COMMANDS:
            for name in LAZY_COMMANDS:  # an unknown name: "Did you mean" should see every command
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


def _unavailable(name: str, missing: str) -> CommandInfo:
    def unavailable() -> None:
        raise fail(f"`diffaccel {name}` needs {missing}, which is not installed here: install diffaccel's "
                   "dependencies (pip install -e .)")

    return CommandInfo(name=name, callback=unavailable, help=f"(Unavailable here: needs {missing}.)",
                       context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


app = typer.Typer(
    cls=_LazyGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Find how far training-free acceleration (DeepCache, T-GATE, ToMe) can push a diffusion "
         "pipeline under a quality budget.",
)


@app.callback()
def main() -> None:
    """diffaccel: measure, sweep and bound training-free diffusion acceleration."""


def say(message: str) -> None:
    typer.echo(f"[diffaccel] {message}", err=True)


def parse_params(items: list[str]) -> dict[str, str]:
    """['cache_interval=3', 'gate_step=20'] -> {'cache_interval': '3', 'gate_step': '20'}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ConfigError(f"--param {item!r} is not NAME=VALUE: write e.g. --param cache_interval=3")
        if name in out:
            raise ConfigError(f"--param {name} is given twice: give each parameter once")
        out[name] = value
    return out


DEVICES = ("cpu", "cuda", "cuda:N")


def _check_device(device: str | None) -> str | None:
    """`--device`: cpu, cuda or cuda:N (None: cuda where there is one). Checked before
    torch is imported; whether the CUDA device exists is checked once it is."""
    if device is None:
        return None
    d = device.strip().lower()
    kind, sep, index = d.partition(":")
    if d == "cpu" or (kind == "cuda" and (not sep or index.isdigit())):
        return d
    raise ConfigError(f"--device {device}: not a device diffaccel runs on: use {', '.join(DEVICES)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no Infinity/NaN (PSNR of identical images is infinite)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _fmt_bytes(n: int | None) -> str:
    return "n/a (CPU)" if n is None else f"{n / 2**30:.2f} GiB"


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else format(value, spec)
    return str(value)


def format_trial(row: dict[str, Any]) -> str:
    """A trial row as a short readable report."""
    versions = json.loads(row["versions_json"])
    lines = [
        f"trial     {row['model']} ({row['preset']}) {row['scheduler']} {row['steps']} steps "
        f"{row['resolution']}px batch {row['batch']} {row['dtype']}",
        f"method    {row['method']}  {row['params_json']}  tag {row['tag']}",
        f"key       {row['trial_key']} (baseline {row['baseline_key']})",
    ]
    if row.get("speedup") is not None:
        lines += [
            f"latency   baseline {_fmt(row['baseline_latency_s'])} s (IQR {_fmt(row['baseline_latency_spread_s'])})"
            f"   accelerated {_fmt(row['accel_latency_s'])} s (IQR {_fmt(row['accel_latency_spread_s'])})",
            f"speedup   {row['speedup']:.3f}x  95% CI [{row['speedup_ci_low']:.3f}, {row['speedup_ci_high']:.3f}]"
            f"  ±{row['speedup_ci_halfwidth']:.1%}  over {row['n_pairs']} pairs (stopped at {row['pairs_stop']})",
            f"memory    baseline {_fmt_bytes(row['baseline_peak_mem_bytes'])}"
            f"   accelerated {_fmt_bytes(row['accel_peak_mem_bytes'])}",
        ]
    lines += [
        f"compute   {_fmt(row['compute_ratio'], '.3f')} of the baseline FLOPs",
        f"quality   SSIM {_fmt(row['ssim'])}  PSNR {_fmt(row['psnr'], '.2f')} dB"
        f"  CLIP {_fmt(row['clip_score'], '.2f')} (baseline {_fmt(row['clip_score_base'], '.2f')})"
        f"  judge {_fmt(row['judge_score'], '.3f')} (baseline {_fmt(row['judge_score_base'], '.3f')})"
        f"  over {row['n_prompts']} prompt(s)",
        f"loss      ssim {_fmt(row['quality_loss_ssim'])}  clip {_fmt(row['quality_loss_clip'])}"
        f"  judge {_fmt(row['quality_loss_judge'])}",
        f"device    {row['device']} [{row['device_kind']}]  host CPU {row['host_cpu']}  ({row['hostname']})",
        "versions  " + "  ".join(f"{k} {v}" for k, v in sorted(versions.items())),
    ]
    return "\n".join(lines)


@app.command()
def trial(
    model: str = typer.Option(..., "--model", help="sd15, sd21, sdxl, pixart_alpha, pixart_sigma or shapes "
                                                   "(the small model trained here)."),
    scheduler: str = typer.Option(..., "--scheduler", help="ddim, dpmpp, unipc, euler or pndm."),
    steps: int = typer.Option(..., "--steps", help="Denoising steps."),
    method: str = typer.Option(..., "--method", help="deepcache, tgate, tome or a combination, "
                                                     "e.g. deepcache+tgate."),
    param: list[str] = typer.Option([], "--param", help="NAME=VALUE, repeatable, e.g. cache_interval=3. "
                                                        "Unset parameters take their defaults."),
    preset: str | None = typer.Option(None, "--preset", help="hub (real weights), arch (real shapes, random "
                                                               "weights, offline) or tiny (CPU tests); "
                                                               "default: hub for shapes (its weights ship "
                                                               "here), arch for the others."),
    resolution: int | None = typer.Option(None, "--resolution", help="Square size in pixels "
                                                                     "(default: the family's)."),
    batch: int = typer.Option(1, "--batch", help="Images per prompt."),
    model_path: str | None = typer.Option(None, "--model-path", help="Hub id or local folder (hub preset)."),
    guidance_scale: float = typer.Option(7.5, "--guidance-scale"),
    prompts_file: Path | None = typer.Option(None, "--prompts", help="Prompt file: .txt (one per line), "
                                                                    ".jsonl or .csv with a 'prompt' field."),
    n_prompts: int = typer.Option(4, "--n-prompts", help="How many prompts to evaluate quality on."),
    clip_model: str | None = typer.Option(None, "--clip-model", help="CLIP model id or folder for the "
                                                                     "CLIP score (omit to skip it)."),
    judge_model: Path | None = typer.Option(None, "--judge-model", help="Judge folder for the judge score "
                                            "of shapes prompts, e.g. datasets/models/shapes-judge "
                                            "(omit to skip it)."),
    device: str | None = typer.Option(None, "--device", help="cuda, cuda:1 or cpu (default: cuda if "
                                                             "available)."),
    min_pairs: int = typer.Option(3, "--min-pairs", help="Fewest baseline/accelerated timing pairs."),
    max_pairs: int = typer.Option(30, "--max-pairs", help="Most timing pairs."),
    target_halfwidth: float = typer.Option(0.03, "--target-halfwidth",
                                           help="Stop adding pairs once the speedup's 95% CI half-width "
                                                "is at most this fraction."),
    no_speed: bool = typer.Option(False, "--no-speed", help="Skip latency (quality and FLOPs only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the lake row as JSON."),
) -> None:
    """Measure ONE parameter point of one method combination against the baseline."""
    from sweep.catalog import Acceleration, PipelineConfig, default_preset
    from sweep.prompts import PromptFileError, load_prompts

    # Everything that can be wrong with the input is checked here, before a model loads.
    try:
        if preset is None:
            preset = default_preset(model)
        cfg = PipelineConfig(model=model, scheduler=scheduler, steps=steps, preset=preset,
                             resolution=resolution, batch=batch, model_path=model_path,
                             guidance_scale=guidance_scale)
        cfg.validate()
        acc = Acceleration.from_params(method, parse_params(param), model=model, steps=steps)
        prompts = load_prompts(prompts_file, n_prompts)
        if min_pairs < 2 or max_pairs < min_pairs:
            raise ConfigError(f"--min-pairs {min_pairs} --max-pairs {max_pairs}: need 2 <= min <= max")
        if not 0 < target_halfwidth < 1:
            raise ConfigError(f"--target-halfwidth {target_halfwidth} must be in (0, 1), e.g. 0.03")
        device = _check_device(device)
        if preset == "hub":
            from sweep.pipelines import hub_source

            hub_source(model, model_path)
        if clip_model and (clip_model.startswith((".", "/", "~")) or Path(clip_model).exists()):
            if not Path(clip_model).expanduser().is_dir():
                raise ConfigError(f"--clip-model {clip_model!r} is not a folder: pass a folder holding a "
                                  "CLIP model saved with save_pretrained, or a hub id")
        if judge_model is not None:
            from sweep.shapes import parse_caption
            from sweep.spec import DEFAULT_JUDGE, JUDGE_CONFIG

            if not (judge_model.expanduser() / JUDGE_CONFIG).is_file():
                raise ConfigError(f"--judge-model {str(judge_model)!r} is not a judge folder (no {JUDGE_CONFIG}): "
                                  f"pass one written by training/train_judge.py, e.g. {DEFAULT_JUDGE}")

            for p in prompts:
                try:
                    parse_caption(p)
                except ValueError as e:
                    raise ConfigError(f"--judge-model reads shapes captions only: {e}; pass --prompts with "
                                      "shapes captions, or drop --judge-model") from None
    except (ConfigError, PromptFileError) as e:
        raise fail(str(e)) from None

    import torch

    if device and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise fail(f"--device {device}: this machine has no CUDA device; use --device cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s): "
                       f"use cuda:0–cuda:{torch.cuda.device_count() - 1}")

    from sweep.pipelines import quiet_libraries
    from sweep.trial import run_trial

    quiet_libraries()
    try:
        row = run_trial(cfg, acc, prompts, device=device, clip_model=clip_model, judge_model=judge_model,
                        measure_speed=not no_speed,
                        min_pairs=min_pairs, max_pairs=max_pairs, target_halfwidth=target_halfwidth,
                        progress=say)
    except ConfigError as e:  # found while loading (a hub source that cannot be loaded)
        raise fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps({k: _jsonable(v) for k, v in row.items()}, indent=2))
    else:
        typer.echo(format_trial(row))
    sys.stdout.flush()


if __name__ == "__main__":
    app()
