"""Pipelines: the offline presets build, generate, keep the real shapes, and save/load."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import STEPS, one_thread  # noqa: F401

from sweep import catalog, methods, model_configs, offline_tokenizers, pipelines
from sweep.catalog import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = tuple(catalog.FAMILIES)


@pytest.fixture(scope="module")
def tiny():
    return {m: pipelines.build(m, "tiny") for m in FAMILIES}


def run(pipe, model, seed=0, prompt="a red fox in the snow"):
    return methods.generate(pipe, prompt, seed=seed, num_inference_steps=STEPS, height=64, width=64,
                            **pipelines.call_kwargs(model, "tiny"))


@pytest.mark.parametrize("model", FAMILIES)
def test_tiny_generates_deterministic_images(tiny, model):
    img = run(tiny[model], model)
    assert img.shape == (1, 3, 64, 64)
    assert torch.isfinite(img).all() and img.std() > 0.01
    assert torch.equal(run(tiny[model], model), img), "same seed must give the same image"
    assert not torch.equal(run(tiny[model], model, seed=1), img), "another seed must give another image"


def test_two_builds_are_identical(tiny):
    again = pipelines.build("sd15", "tiny")
    for (name, a), b in zip(tiny["sd15"].unet.state_dict().items(), again.unet.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


# Real parameter counts of the published checkpoints, in millions.
REAL_PARAMS_M = {
    "sd15": {"unet": 859.52, "vae": 83.65, "text_encoder": 123.06},
    "sd21": {"unet": 865.91, "text_encoder": 340.39},
    "sdxl": {"unet": 2567.46, "text_encoder": 123.06, "text_encoder_2": 694.66},
    "pixart_alpha": {"transformer": 611.35, "text_encoder": 4762.31},
    "pixart_sigma": {"transformer": 610.86},
    # The model trained here (datasets/models/shapes); test_shapes_model checks the folder.
    "shapes": {"unet": 5.66, "vae": 1.25, "text_encoder": 0.52},
}


@pytest.mark.parametrize("model", FAMILIES)
def test_arch_has_the_real_sizes(model):
    parts = pipelines._build_offline(model, "arch", "meta")  # shapes only, no memory
    for name, millions in REAL_PARAMS_M[model].items():
        got = sum(p.numel() for p in parts[name].parameters()) / 1e6
        assert got == pytest.approx(millions, abs=0.01), f"{model}.{name}"


@pytest.mark.parametrize("model", [m for m in FAMILIES if catalog.FAMILIES[m].has_unet])
def test_tiny_keeps_the_unet_topology(model):
    arch, tiny = model_configs.ARCH[model]["unet"], model_configs.TINY[model]["unet"]
    for key in ("down_block_types", "up_block_types", "layers_per_block"):
        assert tiny[key] == arch[key], key
    # DeepCache's branch ids: 3 per down block (layers_per_block resnets + a downsampler slot).
    assert len(tiny["down_block_types"]) * 3 == catalog.FAMILIES[model].deepcache_branches


def test_tiny_keeps_the_pixart_depth():
    for model in ("pixart_alpha", "pixart_sigma"):
        assert model_configs.TINY[model]["transformer"]["num_layers"] == 28


def test_schedulers_swap_and_run(tiny):
    pipe = pipelines.fork(tiny["sd15"])
    noise_schedule = pipe.scheduler.config["beta_schedule"]
    for name, spec in catalog.SCHEDULERS.items():
        pipelines.set_scheduler(pipe, name)
        assert type(pipe.scheduler).__name__ == spec.class_name
        for key, value in spec.kwargs:
            assert pipe.scheduler.config[key] == value
        assert pipe.scheduler.config["beta_schedule"] == noise_schedule
        assert torch.isfinite(run(pipe, "sd15")).all(), name
    with pytest.raises(ConfigError, match="unknown scheduler"):
        pipelines.set_scheduler(pipe, "lms")


def test_offline_tokenizers_fit_the_real_vocabularies():
    clip = offline_tokenizers.clip_tokenizer()
    ids = clip("A photo of an astronaut riding a horse, 4k!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < model_configs.ARCH["sd15"]["text_encoder"]["vocab_size"]
    # CLIP pools at the arg-max id: end-of-text must be the highest id.
    assert ids[0] == clip.bos_token_id and clip.eos_token_id == max(clip.get_vocab().values())
    assert clip.decode(clip("the castle").input_ids, skip_special_tokens=True).strip() == "the castle"
    t5 = offline_tokenizers.t5_tokenizer()
    t5_ids = t5("a castle on a hill, oil painting").input_ids
    assert t5_ids[-1] == t5.eos_token_id == 1 and t5.pad_token_id == 0
    assert max(t5_ids) < model_configs.ARCH["pixart_alpha"]["text_encoder"]["vocab_size"]
    assert t5.unk_token_id not in t5_ids


def test_fork_shares_weights_but_not_modules(tiny):
    for model in ("sd15", "pixart_sigma"):
        pipe = tiny[model]
        name = pipelines.denoiser_name(pipe)
        forked = pipelines.fork(pipe)
        old, new = getattr(pipe, name), getattr(forked, name)
        assert new is not old and forked.scheduler is not pipe.scheduler
        assert forked.vae is pipe.vae and forked.text_encoder is pipe.text_encoder
        for (n, a), b in zip(old.named_parameters(), new.parameters(), strict=True):
            assert a.data_ptr() == b.data_ptr(), n
        assert torch.equal(run(forked, model), run(pipe, model))


@pytest.mark.parametrize("model", ["sd15", "sdxl", "pixart_sigma"])
def test_save_preset_loads_offline(tmp_path, tiny, model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = pipelines.save_preset(model, "tiny", tmp_path / model, scheduler="ddim")
    cls = pipelines._pipeline_class(model)
    loaded = cls.from_pretrained(path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.scheduler).__name__ == "DDIMScheduler"
    reference = pipelines.set_scheduler(pipelines.fork(tiny[model]), "ddim")
    # Same weights and inputs; loading may pick other kernels, so equal up to float rounding.
    torch.testing.assert_close(run(loaded, model), run(reference, model), atol=1e-4, rtol=0)


def test_bad_presets_fail_clearly(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        pipelines.build("sd15", "small")
    with pytest.raises(ConfigError, match="unknown model"):
        pipelines.build("sd3", "tiny")
    with pytest.raises(ConfigError, match="offline presets"):
        pipelines.save_preset("sd15", "hub", tmp_path)


def test_default_resolutions():
    assert pipelines.default_resolution("sdxl", "arch") == 1024
    assert pipelines.default_resolution("sd21", "hub") == 768
    assert pipelines.default_resolution("sdxl", "tiny") == pipelines.TINY_RESOLUTION
    cfg = catalog.PipelineConfig("sd15", "ddim", 50, preset="arch")
    assert pipelines.resolve_resolution(cfg) == 512
