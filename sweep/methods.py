"""Adapters around the real acceleration libraries: DeepCache, T-GATE and tomesd.

One entry point, `apply(pipe, acc, family)`, patches a pipeline with a parameter point
of any supported combination and returns an `Applied`. Generate through
`Applied.generate` (T-GATE replaces ``pipe(...)`` with ``pipe.tgate(...)``), then call
`Applied.remove()`:

* DeepCache and ToMe are undone exactly (``helper.disable()``, ``tomesd.remove_patch``):
  the pipeline then gives the baseline output bit for bit.
* T-GATE has no undo. Its loader adds ``pipe.tgate`` and its first call re-binds the
  ``forward`` of every attention module; they stay patched. `Applied.needs_rebuild` is
  then true and the pipeline must not be used for a baseline again: throw it away (see
  `sweep.pipelines.fork`, which makes that cheap) or rebuild it.

All state of a patched pipeline lives in the `Applied` object, which is also stored on
the pipeline as ``pipe._diffaccel`` so a second `apply` on a patched pipeline fails
loudly instead of stacking patches (DeepCache's ``enable()`` twice recurses forever).

Each library's adapter is one function (`apply_deepcache`, `apply_tome`, `load_tgate`)
that passes the method's config as the library's keyword arguments (`kwargs()`); the
config's fields (`catalog`) say what each parameter does and where it is valid, and
its validation runs before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sweep import catalog
from sweep.catalog import Acceleration, ConfigError, Family

_STATE_ATTR = "_diffaccel"


# ------------------------------------------------------------------------- one method each


def apply_deepcache(pipe, cfg: catalog.DeepCacheConfig):
    """Patch a UNet pipeline with DeepCache (`cfg`'s fields say what each parameter
    does) and return the enabled helper. Undo with ``helper.disable()``, which restores
    the output exactly.
    """
    from DeepCache import DeepCacheSDHelper

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(**cfg.kwargs())
    helper.enable()
    return helper


def apply_tome(pipe, cfg: catalog.ToMeConfig) -> None:
    """Patch a UNet pipeline with Token Merging (tomesd; `cfg`'s fields say what each
    parameter does). Undo with ``tomesd.remove_patch(pipe)``, which restores the output
    exactly.
    """
    import tomesd

    tomesd.apply_patch(pipe, **cfg.kwargs())


def reset_tome_rng(pipe, seed: int | None) -> None:
    """Start tomesd's random token partition from a state set by the call's seed.

    tomesd (``use_rand``, its default) draws each merge's destination tokens from one
    generator kept in the patch info: forked from the global RNG at its first use, then
    advanced by every call. So a point's images, and the quality measured from them,
    depended on how many calls ran before (1-SSIM 0.026 on screen, 0.010 on confirm for
    one point on the GPU map). A fresh generator per call, seeded like the call, makes
    them a function of (prompt, seed); everything else stays tomesd's default."""
    import torch

    unet = pipe.unet if hasattr(pipe, "unet") else pipe
    info = getattr(unet, "_tome_info", None)
    if info is None:
        return
    device = next(unet.parameters()).device
    if device.type not in ("cpu", "cuda"):  # tomesd's own fallback: a CPU generator
        device = torch.device("cpu")
    info["args"]["generator"] = torch.Generator(device=device).manual_seed(0 if seed is None else int(seed))


def load_tgate(pipe, fam: Family, deepcache: catalog.DeepCacheConfig | None = None):
    """Add ``pipe.tgate(...)`` with T-GATE's loader for the family; with `deepcache`, the
    loader that runs DeepCache inside T-GATE's loop (UNet families only).

    T-GATE's parameters (`catalog.TGateConfig`) are arguments of the call, not of the
    loader (loaders silently ignore them).

    There is no undo: the first call re-binds every attention module's ``forward``.
    Returns the DeepCache helper the combined loader created (``pipe.deepcache``), or None.
    """
    import tgate

    if deepcache is None:
        getattr(tgate, fam.tgate_loader)(pipe)
        return None
    if fam.tgate_deepcache_loader is None:
        raise ConfigError(f"DeepCache+T-GATE needs a UNet; {fam.display} has none: use T-GATE alone")
    getattr(tgate, fam.tgate_deepcache_loader)(pipe, **deepcache.kwargs())
    return pipe.deepcache


# ---------------------------------------------------------------------------- generating


def generator_for(seed: int):
    """A CPU generator: pipelines draw the initial latents on the CPU from it and move them,
    so a seed gives the same starting noise on every device."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed))


def generate(
    pipe,
    prompt: str | Sequence[str],
    *,
    seed: int | None = 0,
    generator=None,
    num_inference_steps: int = 50,
    height: int | None = None,
    width: int | None = None,
    guidance_scale: float = 7.5,
    num_images_per_prompt: int = 1,
    output_type: str = "pt",
    call=None,
    **kwargs: Any,
):
    """Run `pipe` (or `call`, e.g. ``pipe.tgate``) and return its images.

    With output_type "pt" the images are a float tensor [N, 3, H, W] in [0, 1].
    """
    if generator is None and seed is not None:
        generator = generator_for(seed)
    fn = call or pipe
    out = fn(
        prompt=list(prompt) if not isinstance(prompt, str) else prompt,
        num_inference_steps=num_inference_steps,
        height=height,
        width=width,
        guidance_scale=guidance_scale,
        num_images_per_prompt=num_images_per_prompt,
        generator=generator,
        output_type=output_type,
        **kwargs,
    )
    return out.images


# ------------------------------------------------------------------------------- applying


@dataclass
class Applied:
    """A pipeline patched with one parameter point. Generate, then `remove()`."""

    pipe: Any
    acc: Acceleration
    family: Family
    deepcache_helper: Any = None
    tome: bool = False
    tgate: bool = False
    removed: bool = False
    # Arguments passed to every call (PixArt's tiny-preset switches, for instance).
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_rebuild(self) -> bool:
        """True once T-GATE has been loaded: its patches cannot be undone, so the
        pipeline must be rebuilt (or the fork discarded) before any baseline run."""
        return self.tgate

    def generate(self, prompt: str | Sequence[str], **kwargs: Any):
        """Like `generate` (same arguments), through ``pipe.tgate`` when T-GATE is on."""
        if self.removed:
            raise RuntimeError("this acceleration was removed; apply it again to generate")
        kwargs = {**self.call_kwargs, **kwargs}
        if self.tome:
            reset_tome_rng(self.pipe, kwargs.get("seed"))
        if self.tgate:
            kwargs.update(self.acc.tgate.kwargs())
            return generate(self.pipe, prompt, call=self.pipe.tgate, **kwargs)
        return generate(self.pipe, prompt, **kwargs)

    def remove(self) -> None:
        """Undo what can be undone, in reverse order of application. Idempotent."""
        if self.removed:
            return
        if self.deepcache_helper is not None:
            self.deepcache_helper.disable()
        if self.tome:
            import tomesd

            tomesd.remove_patch(self.pipe)
        if not self.tgate:
            # A T-GATE pipeline stays marked as patched: nothing may be applied on top.
            setattr(self.pipe, _STATE_ATTR, None)
        self.removed = True


def applied_to(pipe) -> Applied | None:
    """The `Applied` currently patching `pipe`, if any (also a removed T-GATE one)."""
    return getattr(pipe, _STATE_ATTR, None)


def apply(pipe, acc: Acceleration, family: Family | str, *, steps: int | None = None,
          call_kwargs: dict[str, Any] | None = None) -> Applied:
    """Patch `pipe` with the parameter point `acc` and return the handle.

    `steps`, when given, validates the point against that step count first (gate_step,
    cache_interval). A pipeline already patched by diffaccel is refused: remove that
    patch first, or rebuild the pipeline if it had T-GATE.
    """
    fam = catalog.family(family) if isinstance(family, str) else family
    if steps is not None:
        acc.validate(fam, steps)
    else:
        if not acc.methods:
            raise ConfigError("no method given: use one of " + ", ".join(catalog.COMBOS))
        catalog.check_combo_family(acc.combo, fam)
    current = applied_to(pipe)
    if current is not None:
        fix = "rebuild the pipeline (T-GATE cannot be undone)" if current.needs_rebuild else "call remove() first"
        raise RuntimeError(f"pipeline is already patched with {current.acc.tag}: {fix}")

    applied = Applied(pipe=pipe, acc=acc, family=fam, call_kwargs=dict(call_kwargs or {}))
    setattr(pipe, _STATE_ATTR, applied)
    try:
        if acc.tgate is not None:
            # The combined loader runs DeepCache's enable()/disable() around the gate
            # itself, so DeepCache is not also applied on its own.
            applied.deepcache_helper = load_tgate(pipe, fam, acc.deepcache)
            applied.tgate = True
        elif acc.deepcache is not None:
            applied.deepcache_helper = apply_deepcache(pipe, acc.deepcache)
        if acc.tome is not None:
            apply_tome(pipe, acc.tome)
            applied.tome = True
    except BaseException:
        applied.remove()
        raise
    return applied
