"""Method adapters on the real libraries: every supported combination on every family."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import STEPS, one_thread, params_for  # noqa: F401

from sweep import catalog, measure, methods, pipelines
from sweep.catalog import Acceleration, ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [(m, c) for c, fams in catalog.compatibility_matrix().items() for m, ok in fams.items() if ok]
KW = {"num_inference_steps": STEPS, "height": 64, "width": 64, "seed": 0}


@pytest.fixture(scope="module")
def setup():
    """Per family: the tiny pipeline (never patched) and its baseline image."""
    out = {}
    for model in catalog.FAMILIES:
        pipe = pipelines.set_scheduler(pipelines.build(model, "tiny"), "ddim")
        extra = pipelines.call_kwargs(model, "tiny")
        out[model] = (pipe, extra, methods.generate(pipe, "a lighthouse in a storm", **KW, **extra))
    return out


def test_every_combination_is_covered():
    assert {c for _, c in CASES} == set(catalog.COMBOS)
    assert {m for m, _ in CASES} == set(catalog.FAMILIES)
    assert ("pixart_alpha", "deepcache") not in CASES and ("pixart_sigma", "tgate") in CASES


@pytest.mark.parametrize(("model", "combo"), CASES, ids=[f"{m}-{c}" for m, c in CASES])
def test_combination_runs_and_removes(setup, model, combo):
    pipe, extra, base = setup[model]
    fork = pipelines.fork(pipe)
    acc = Acceleration.from_params(combo, params_for(combo, model), model=model, steps=STEPS)
    applied = methods.apply(fork, acc, model, steps=STEPS, call_kwargs=extra)
    out = applied.generate("a lighthouse in a storm", **KW)
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert not torch.equal(out, base), f"{acc.tag} changed nothing"
    applied.remove()
    assert applied.needs_rebuild == ("tgate" in combo)
    if applied.needs_rebuild:
        with pytest.raises(RuntimeError, match="rebuild"):
            methods.apply(fork, acc, model)
    else:
        # DeepCache and ToMe undo exactly: the fork is the baseline again, bit for bit.
        assert methods.applied_to(fork) is None
        assert torch.equal(methods.generate(fork, "a lighthouse in a storm", **KW, **extra), base)
    assert methods.applied_to(pipe) is None


def _denoiser_batches(pipe, fn) -> list[int]:
    """Batch size of every denoiser call made by `fn`."""
    sizes: list[int] = []
    handle = getattr(pipe, pipelines.denoiser_name(pipe)).register_forward_pre_hook(
        lambda _m, args, kwargs: sizes.append((args[0] if args else kwargs["hidden_states"]).shape[0]),
        with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return sizes


@pytest.mark.parametrize("model", ["sd15", "sdxl", "pixart_alpha"])
@pytest.mark.parametrize("gate_step", [1, 3])
def test_tgate_drops_the_guidance_batch_after_the_gate(setup, model, gate_step):
    pipe, extra, _ = setup[model]
    fork = pipelines.fork(pipe)
    acc = Acceleration.from_params("tgate", {"gate_step": gate_step, "sp_interval": 1, "warm_up": 0})
    applied = methods.apply(fork, acc, model, steps=STEPS, call_kwargs=extra)
    accel = _denoiser_batches(fork, lambda: applied.generate("a cat", **KW))
    base = _denoiser_batches(pipe, lambda: methods.generate(pipe, "a cat", **KW, **extra))
    assert base == [2] * STEPS
    assert accel == [2] * gate_step + [1] * (STEPS - gate_step)


def test_deepcache_inside_tgate_still_gates(setup):
    pipe, extra, _ = setup["sd15"]
    fork = pipelines.fork(pipe)
    acc = Acceleration.from_params("deepcache+tgate", {"gate_step": 2, "sp_interval": 1, "warm_up": 0})
    applied = methods.apply(fork, acc, "sd15", steps=STEPS)
    assert applied.deepcache_helper is fork.deepcache  # the combined loader's own helper
    assert _denoiser_batches(fork, lambda: applied.generate("a cat", **KW)) == [2, 2, 1, 1]


def _flops(pipe, applied=None, steps=9):
    kw = {**KW, "num_inference_steps": steps}
    gen = applied.generate if applied else (lambda p, **k: methods.generate(pipe, p, **k))
    return measure.count_flops(lambda: gen("a cat", **kw))


def test_deepcache_cuts_compute(setup):
    pipe, _, _ = setup["sd15"]
    base = _flops(pipe)
    fork = pipelines.fork(pipe)
    applied = methods.apply(fork, Acceleration.from_params("deepcache", {"cache_interval": 3,
                                                                        "cache_branch_id": 0}), "sd15")
    ratio = _flops(fork, applied) / base
    applied.remove()
    assert ratio < 0.6
    # Caching deeper (a larger branch id) leaves more of the UNet to run: less saving.
    applied = methods.apply(fork, Acceleration.from_params("deepcache", {"cache_interval": 3,
                                                                        "cache_branch_id": 8}), "sd15")
    deeper = _flops(fork, applied) / base
    applied.remove()
    assert ratio < deeper < 1.0


def test_tome_and_tgate_cut_compute(setup):
    pipe, _, _ = setup["sd15"]
    base = _flops(pipe, steps=STEPS)
    for combo, params in (("tome", {"ratio": 0.75, "max_downsample": 8}), ("tgate", {"gate_step": 1,
                                                                                   "sp_interval": 1,
                                                                                   "warm_up": 0})):
        fork = pipelines.fork(pipe)
        applied = methods.apply(fork, Acceleration.from_params(combo, params), "sd15", steps=STEPS)
        # At 64 px convolutions dominate, so ToMe's saving on attention and MLPs is small.
        assert _flops(fork, applied, steps=STEPS) < 0.98 * base, combo


def test_apply_twice_is_refused_and_remove_is_idempotent(setup):
    pipe, _, base = setup["sd15"]
    fork = pipelines.fork(pipe)
    acc = Acceleration.from_params("deepcache")
    applied = methods.apply(fork, acc, "sd15")
    # DeepCache's enable() on an enabled pipeline recurses forever; we refuse first.
    with pytest.raises(RuntimeError, match="already patched with DC3B0: call remove"):
        methods.apply(fork, acc, "sd15")
    applied.remove()
    applied.remove()
    with pytest.raises(RuntimeError, match="removed"):
        applied.generate("a cat", **KW)
    again = methods.apply(fork, acc, "sd15")
    again.remove()
    assert torch.equal(methods.generate(fork, "a lighthouse in a storm", **KW), base)


@pytest.mark.parametrize(("model", "combo", "params", "message"), [
    ("pixart_alpha", "deepcache", {}, "DeepCache does not apply to PixArt-α"),
    ("pixart_sigma", "tgate+tome", {}, "ToMe does not apply to PixArt-Σ"),
    ("sdxl", "deepcache", {"cache_branch_id": 12}, "cache_branch_id=12 is out of range"),
    ("sd15", "tgate", {"gate_step": STEPS + 1}, f"gate_step={STEPS + 1} is out of range for {STEPS} steps"),
    ("sd15", "tome", {"max_downsample": 3}, "max_downsample=3 is not valid"),
    ("sdxl", "tome", {"max_downsample": 1}, "max_downsample=1 is not valid on Stable Diffusion XL"),
])
def test_invalid_points_fail_before_patching(setup, model, combo, params, message):
    pipe = setup[model][0]
    with pytest.raises(ConfigError, match=message):
        methods.apply(pipe, Acceleration.from_params(combo, params), model, steps=STEPS)
    assert methods.applied_to(pipe) is None


def test_ratio_above_cap_is_rejected():
    with pytest.raises(ConfigError, match="above 0.75"):
        Acceleration.from_params("tome", {"ratio": 0.8}, model="sd15", steps=STEPS)
