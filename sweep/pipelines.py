"""The pipelines diffaccel measures: five families, three presets each.

Presets (see `catalog.PRESETS`):

* ``hub``: the published checkpoint through ``from_pretrained`` (a hub id, or
  `PipelineConfig.model_path`: another id or a local folder). What users run. For
  ``shapes`` it is the model trained here and shipped in ``datasets/models/shapes``,
  loaded through the same local-folder path.
* ``arch``: the real full-size architecture (configs in `sweep.model_configs`) with
  random weights and an offline tokenizer. Real shapes, hence real latency, FLOPs and
  memory, with no download; quality numbers are only meaningful relative to its own
  baseline.
* ``tiny``: the same topology with tiny widths, for CPU tests (a call of a few steps
  takes well under a second).

Entry points: `build` (a preset, on a device and dtype), `load` (a `PipelineConfig`:
build, swap the scheduler, quiet the progress bar), `set_scheduler`, `fork` (a second
pipeline sharing every weight, for accelerating without touching the baseline) and
`save_preset` (write a tiny/arch pipeline with ``save_pretrained`` so it can be loaded
offline with ``from_pretrained``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweep import catalog, model_configs
from sweep.catalog import ConfigError

TINY_RESOLUTION = 64


def default_resolution(model: str, preset: str) -> int:
    """The resolution a family generates at by default under `preset`."""
    return TINY_RESOLUTION if preset == "tiny" else catalog.family(model).default_resolution


def resolve_resolution(cfg: catalog.PipelineConfig) -> int:
    return cfg.resolution or default_resolution(cfg.model, cfg.preset)


def denoiser_name(pipe) -> str:
    """'unet' for Stable Diffusion pipelines, 'transformer' for PixArt."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


def quiet_libraries() -> None:
    """Silence the third-party chatter that would drown the engine's own progress lines."""
    import warnings

    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    dlogging.disable_progress_bar()
    tlogging.disable_progress_bar()
    for module in ("diffusers", "transformers", "torch", "tgate", "DeepCache", "tomesd", "torchmetrics"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


def looks_local(source: str) -> bool:
    """A path rather than a hub id: absolute, ./ ~/ relative, or an existing folder
    (a hub id is ``org/name``, which a relative folder can also be)."""
    return source.startswith(("/", ".", "~")) or os.path.isabs(source) or Path(source).expanduser().exists()


def hub_source(model: str, model_path: str | None) -> str:
    """What the hub preset loads: `model_path` or the family's hub id. A local path
    that is not a pipeline folder is a `ConfigError` before anything is imported."""
    source = model_path or shipped_path(model) or catalog.family(model).hub_id
    if looks_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"--model-path {source}: no such folder: pass a folder saved with save_pretrained "
                              f"(it holds model_index.json) or a hub id such as {catalog.family(model).hub_id}")
        if not (folder / "model_index.json").is_file():
            raise ConfigError(f"--model-path {source}: the folder has no model_index.json, so it is not a saved "
                              "pipeline: pass the folder save_pretrained wrote")
    return source


REPO_ROOT = Path(__file__).resolve().parent.parent


def shipped_path(model: str) -> str | None:
    """The folder of a family whose weights ship with the project (``shapes``), else None."""
    fam = catalog.family(model)
    if not fam.shipped:
        return None
    path = REPO_ROOT / fam.hub_id
    if not (path / "model_index.json").is_file():
        raise ConfigError(f"the {model} model folder {str(path)!r} is missing or incomplete: restore it "
                          f"from the repository (git checkout -- {fam.hub_id}) or retrain it with "
                          "training/train_shapes.py")
    return str(path)


def _pipeline_class(model: str):
    import diffusers

    return getattr(diffusers, catalog.family(model).pipeline_class)


# ---------------------------------------------------------------------------- building


def _tokenizer_kwargs(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if not k.startswith("_")}


def _text_config(spec: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    spec = dict(spec)
    if spec.get("vocab_size") == model_configs.TOKENIZER_VOCAB:
        spec["vocab_size"] = vocab_size
    return spec


def _build_offline(model: str, preset: str, device,
                   say: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """Components of an arch/tiny pipeline; the models are created on `device`, in float32.
    `say` gets a line before each model is built (random weights: slow on a CPU)."""
    import diffusers
    import torch
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    from sweep import offline_tokenizers as toks

    spec = model_configs.components(model, preset)
    # Schedulers keep their tables on the CPU; only the models go to `device`.
    sched_cfg = spec["scheduler"]
    parts: dict[str, Any] = {"scheduler": getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)}
    if catalog.family(model).has_unet:
        clip_vocab = toks.clip_vocab_size(spec["tokenizer"].get("corpus", "general"))
        parts["tokenizer"] = toks.clip_tokenizer(**_tokenizer_kwargs(spec["tokenizer"]))
        with torch.device(device):
            say("building the VAE")
            parts["vae"] = diffusers.AutoencoderKL.from_config(spec["vae"])
            say("building the UNet")
            parts["unet"] = diffusers.UNet2DConditionModel.from_config(spec["unet"])
            say("building the text encoder")
            parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(**_text_config(spec["text_encoder"], clip_vocab)))
        if model == "sdxl":
            # SDXL takes the penultimate hidden states of both encoders and the pooled,
            # projected output of the second.
            parts["tokenizer_2"] = toks.clip_tokenizer(**_tokenizer_kwargs(spec["tokenizer_2"]))
            te2_cfg = CLIPTextConfig(**_text_config(spec["text_encoder_2"], clip_vocab))
            with torch.device(device):
                say("building the second text encoder")
                parts["text_encoder_2"] = CLIPTextModelWithProjection(te2_cfg)
        else:
            parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        parts["tokenizer"] = toks.t5_tokenizer()
        parts["tokenizer"].model_max_length = spec["max_sequence_length"]
        t5_cfg = T5Config(**_text_config(spec["text_encoder"], toks.t5_vocab_size()))
        with torch.device(device):
            say("building the VAE")
            parts["vae"] = diffusers.AutoencoderKL.from_config(spec["vae"])
            say("building the transformer")
            parts["transformer"] = diffusers.PixArtTransformer2DModel.from_config(spec["transformer"])
            say("building the text encoder")
            parts["text_encoder"] = T5EncoderModel(t5_cfg)
    return parts


def build(
    model: str,
    preset: str = "tiny",
    *,
    device: str | None = None,
    dtype=None,
    model_path: str | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
):
    """The unaccelerated pipeline of `model` under `preset`, on `device` in `dtype`.

    `progress` gets one line per stage (each model built, the move to `device`): on a CPU
    an arch preset takes minutes, and a silent load looked hung (issue #14).

    arch/tiny weights are drawn from a generator seeded with `seed`, so two builds
    are identical on the same device. They are created directly on `device` (an SDXL
    UNet initialised on a GPU takes a second; on a CPU, a minute).
    """
    import torch

    fam = catalog.family(model)
    if preset not in catalog.PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(catalog.PRESETS)}")
    device = device or "cpu"
    dtype = dtype or torch.float32
    say = progress or (lambda _msg: None)
    quiet_libraries()
    cls = _pipeline_class(model)

    if preset == "hub":
        source = hub_source(model, model_path)
        kwargs: dict[str, Any] = {"torch_dtype": dtype}
        if fam.has_unet and model != "sdxl":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        say(f"reading the weights of {source}")
        try:
            pipe = cls.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            # diffusers' own error is a long traceback about cache folders or repo-id
            # syntax; the user needs the source and what to pass instead.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"cannot load {fam.display} from {source!r} ({first[:200]}): pass a folder saved "
                              f"with save_pretrained or a hub id this machine can reach (with HF_HUB_OFFLINE=1, "
                              f"only ones in the local cache), or use --preset arch for no download") from e
    else:
        dev = torch.device(device)
        cuda_ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        # A private RNG stream: building a preset must not shift the caller's random state.
        with torch.random.fork_rng(devices=cuda_ids):
            torch.manual_seed(seed)
            pipe = cls(**_build_offline(model, preset, dev, say))
    say(f"moving the pipeline to {device}, {str(dtype).removeprefix('torch.')}")
    pipe = pipe.to(device=device, dtype=dtype)
    _freeze(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _freeze(pipe) -> None:
    for comp in pipe.components.values():
        if hasattr(comp, "requires_grad_"):
            comp.eval()
            comp.requires_grad_(False)


def set_scheduler(pipe, name: str):
    """Swap the scheduler for catalog scheduler `name`, keeping the noise schedule."""
    import diffusers

    sched = catalog.scheduler(name)
    cls = getattr(diffusers, sched.class_name)
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **dict(sched.kwargs))
    return pipe


def load(cfg: catalog.PipelineConfig, *, device: str | None = None, dtype=None, seed: int = 0,
         progress: Callable[[str], None] | None = None):
    """Build the pipeline a `PipelineConfig` names, with its scheduler; `progress` gets a
    line per loading stage (see `build`)."""
    cfg.validate()
    pipe = build(cfg.model, cfg.preset, device=device, dtype=dtype, model_path=cfg.model_path, seed=seed,
                 progress=progress)
    return set_scheduler(pipe, cfg.scheduler)


def call_kwargs(model: str, preset: str) -> dict[str, Any]:
    """Arguments every call of this pipeline needs besides prompt/steps/size.

    PixArt bins the requested size to its training aspect ratios, which only exist for
    the real sample sizes; tiny pipelines must turn that off. Caption cleaning needs
    optional packages (bs4, ftfy) and would otherwise warn on every call.
    """
    out: dict[str, Any] = {}
    if not catalog.family(model).has_unet:
        out["clean_caption"] = False
        if preset != "hub":
            out["max_sequence_length"] = model_configs.components(model, preset)["max_sequence_length"]
        if preset == "tiny":
            out["use_resolution_binning"] = False
    return out


# ------------------------------------------------------------------------------ forking


def fork(pipe):
    """A second pipeline that shares every weight of `pipe` but owns its denoiser modules
    and scheduler.

    The acceleration libraries patch the denoiser in place, and T-GATE cannot be undone;
    patching a fork leaves the baseline pipeline untouched, and throwing the fork away
    "rebuilds" the pipeline without a copy of any weight: the new denoiser is created on
    the meta device and its parameters are the original tensors.
    """
    import torch

    name = denoiser_name(pipe)
    old = getattr(pipe, name)
    with torch.device("meta"):
        new = type(old).from_config(old.config)
    state = old.state_dict(keep_vars=True)
    new.load_state_dict(state, strict=True, assign=True)
    # Non-persistent buffers (PixArt's positional table) are not in the state dict.
    for full_name, buf in old.named_buffers():
        if full_name not in state:
            owner, _, leaf = full_name.rpartition(".")
            new.get_submodule(owner)._buffers[leaf] = buf
    new.eval()
    new.requires_grad_(False)
    leftover = [n for n, t in list(new.named_parameters()) + list(new.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"fork left {len(leftover)} tensors on the meta device, e.g. {leftover[0]}")

    forked = copy.copy(pipe)
    forked.register_modules(**{name: new, "scheduler": type(pipe.scheduler).from_config(pipe.scheduler.config)})
    return forked


# ------------------------------------------------------------------------------- saving


def save_preset(model: str, preset: str, path: str | os.PathLike, *, scheduler: str | None = None,
                seed: int = 0) -> Path:
    """Write an offline preset with ``save_pretrained`` (float32, safetensors).

    The folder loads with ``<PipelineClass>.from_pretrained(path)`` and no network,
    tokenizers included, which is how generated scripts are tested against a real
    pipeline. `scheduler` (a catalog name) swaps the scheduler first.
    """
    if preset == "hub":
        raise ConfigError("save_preset writes the offline presets: use 'tiny' or 'arch', not 'hub'")
    pipe = build(model, preset, seed=seed)
    if scheduler:
        set_scheduler(pipe, scheduler)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
