"""Component configs of each family, for the offline presets.

`ARCH` holds the real configs of the published checkpoints (the ``config.json`` of each
component on the hub, trimmed of fields that equal the class defaults), so an `arch`
pipeline has the real layer shapes and therefore the real compute and memory, with
random weights. `TINY` keeps each family's topology (the same down/up blocks,
``layers_per_block`` and where attention sits, so DeepCache's branch ids 0–11 / 0–8 and
ToMe's downsampling levels mean what they mean at full size) and shrinks the widths
so a pipeline runs in a fraction of a second on a laptop CPU.

Pure data: no torch import.
"""

from __future__ import annotations

import copy
from typing import Any

# Stand-in for the offline tokenizer's vocabulary size; filled in when the preset is built
# (tiny text encoders are sized to the tokenizer so every id has a row).
TOKENIZER_VOCAB = "<tokenizer>"

_SD_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

_SDXL_VAE = {**_SD_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

# CLIP ViT-L/14 text tower (SD 1.5, and SDXL's first encoder).
_CLIP_L = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

# OpenCLIP ViT-H/14 text tower (SD 2.1).
_OPENCLIP_H = {
    **_CLIP_L,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "projection_dim": 512,
}

# OpenCLIP ViT-bigG/14 text tower (SDXL's second encoder, with projection).
_OPENCLIP_BIGG = {
    **_CLIP_L,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "hidden_act": "gelu",
    "projection_dim": 1280,
}

# T5 v1.1 XXL encoder (PixArt-α and PixArt-Σ).
_T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "dropout_rate": 0.1,
    "is_encoder_decoder": False,
    "use_cache": False,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}

_SD_SCHEDULER_BETAS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}

_SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "act_fn": "silu",
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "center_input_sample": False,
}

_PIXART_ALPHA_TRANSFORMER = {
    "sample_size": 128,
    "num_layers": 28,
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "patch_size": 2,
    "cross_attention_dim": 1152,
    "caption_channels": 4096,
    "attention_bias": True,
    "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "use_additional_conditions": True,
}

_PIXART_SCHEDULER = {
    "_class_name": "DPMSolverMultistepScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    "lower_order_final": True,
    "thresholding": False,
    "use_karras_sigmas": False,
    "steps_offset": 0,
}

ARCH: dict[str, dict[str, Any]] = {
    # stable-diffusion-v1-5/stable-diffusion-v1-5
    "sd15": {
        "unet": _SD15_UNET,
        "vae": _SD_VAE,
        "text_encoder": _CLIP_L,
        "tokenizer": {"pad_token": "<|endoftext|>"},
        "scheduler": {
            "_class_name": "PNDMScheduler", **_SD_SCHEDULER_BETAS,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
        },
    },
    # stabilityai/stable-diffusion-2-1 (768 px, v-prediction)
    "sd21": {
        "unet": {
            **_SD15_UNET,
            "sample_size": 96,
            "attention_head_dim": [5, 10, 20, 20],
            "cross_attention_dim": 1024,
            "use_linear_projection": True,
            "upcast_attention": True,
        },
        "vae": {**_SD_VAE, "sample_size": 768},
        "text_encoder": _OPENCLIP_H,
        "tokenizer": {"pad_token": "!"},
        "scheduler": {
            "_class_name": "DDIMScheduler", **_SD_SCHEDULER_BETAS,
            "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False,
            "prediction_type": "v_prediction",
        },
    },
    # stabilityai/stable-diffusion-xl-base-1.0
    "sdxl": {
        "unet": {
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [320, 640, 1280],
            "layers_per_block": 2,
            "transformer_layers_per_block": [1, 2, 10],
            "attention_head_dim": [5, 10, 20],
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
            "norm_num_groups": 32,
            "norm_eps": 1e-5,
            "act_fn": "silu",
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        },
        "vae": _SDXL_VAE,
        "text_encoder": _CLIP_L,
        "text_encoder_2": _OPENCLIP_BIGG,
        "tokenizer": {"pad_token": "<|endoftext|>"},
        "tokenizer_2": {"pad_token": "!"},
        "scheduler": {
            "_class_name": "EulerDiscreteScheduler", **_SD_SCHEDULER_BETAS,
            "interpolation_type": "linear", "prediction_type": "epsilon", "steps_offset": 1,
            "timestep_spacing": "leading", "use_karras_sigmas": False,
        },
    },
    # PixArt-alpha/PixArt-XL-2-1024-MS
    "pixart_alpha": {
        "transformer": _PIXART_ALPHA_TRANSFORMER,
        "vae": {**_SD_VAE, "sample_size": 1024},
        "text_encoder": _T5_XXL,
        "scheduler": _PIXART_SCHEDULER,
        "max_sequence_length": 120,
    },
    # PixArt-alpha/PixArt-Sigma-XL-2-1024-MS (SDXL's VAE, 300 caption tokens, no micro-conditions)
    "pixart_sigma": {
        "transformer": {**_PIXART_ALPHA_TRANSFORMER, "interpolation_scale": 2, "use_additional_conditions": False},
        "vae": _SDXL_VAE,
        "text_encoder": _T5_XXL,
        "scheduler": _PIXART_SCHEDULER,
        "max_sequence_length": 300,
    },
}

# Tiny text towers: same kinds of layer, a fraction of the width and depth.
_TINY_CLIP = {
    "vocab_size": TOKENIZER_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 32, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
_TINY_VAE = {
    **_SD_VAE, "block_out_channels": [8, 16, 16, 16], "norm_num_groups": 8, "layers_per_block": 1,
    "sample_size": 64,
}
_TINY_T5 = {
    **_T5_XXL, "vocab_size": TOKENIZER_VOCAB, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4,
    "num_layers": 2,
}
_TINY_SD_UNET = {
    **_SD15_UNET,
    "sample_size": 8,
    "block_out_channels": [32, 32, 64, 64],
    "attention_head_dim": 4,
    "cross_attention_dim": 32,
    "norm_num_groups": 8,
}
_TINY_PIXART = {
    **_PIXART_ALPHA_TRANSFORMER,
    # 28 blocks as at full size (T-GATE gates every block), each 2 heads of 8.
    "sample_size": 8,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 16,
    "caption_channels": 32,
    "use_additional_conditions": False,
}

TINY: dict[str, dict[str, Any]] = {
    "sd15": {**ARCH["sd15"], "unet": _TINY_SD_UNET, "vae": _TINY_VAE, "text_encoder": _TINY_CLIP},
    "sd21": {
        **ARCH["sd21"],
        "unet": {**_TINY_SD_UNET, "attention_head_dim": [2, 2, 4, 4], "use_linear_projection": True},
        "vae": _TINY_VAE,
        "text_encoder": {**_TINY_CLIP, "hidden_act": "gelu"},
    },
    "sdxl": {
        **ARCH["sdxl"],
        "unet": {
            **ARCH["sdxl"]["unet"],
            "sample_size": 8,
            "block_out_channels": [32, 32, 64],
            "transformer_layers_per_block": [1, 1, 2],
            "attention_head_dim": [2, 2, 4],
            "cross_attention_dim": 64,  # the two 32-wide encoders, concatenated
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,
            "norm_num_groups": 8,
        },
        "vae": {**_TINY_VAE, "scaling_factor": 0.13025},
        "text_encoder": _TINY_CLIP,
        "text_encoder_2": {**_TINY_CLIP, "hidden_act": "gelu"},
    },
    "pixart_alpha": {**ARCH["pixart_alpha"], "transformer": _TINY_PIXART, "vae": _TINY_VAE,
                     "text_encoder": _TINY_T5, "max_sequence_length": 16},
    "pixart_sigma": {**ARCH["pixart_sigma"], "transformer": {**_TINY_PIXART, "interpolation_scale": 1},
                     "vae": _TINY_VAE, "text_encoder": _TINY_T5, "max_sequence_length": 16},
}


def components(model: str, preset: str) -> dict[str, Any]:
    """A deep copy of the component configs of `model` under `preset` ('arch' or 'tiny').
    `shapes` under 'arch' is the trained model's architecture with random weights."""
    table = {"arch": ARCH, "tiny": TINY}[preset]
    return copy.deepcopy(table[model])


# The trained `shapes` model (datasets/models/shapes, trained by training/train_shapes.py):
# SD 1.5's topology (block types, layers_per_block=2, so DeepCache's branch ids 0-11,
# T-GATE's cross-attention and ToMe's blocks apply as at full size) at widths that fit
# the shipped folder in 16 MB of fp16: 128 px images, 4x16x16 latents.
SHAPES: dict[str, dict[str, Any]] = {
    "unet": {
        **_SD15_UNET,
        "sample_size": 16,
        "block_out_channels": [32, 64, 96, 96],
        "attention_head_dim": 4,
        "cross_attention_dim": 128,
        "norm_num_groups": 16,
    },
    "vae": {**_SD_VAE, "block_out_channels": [32, 64, 64, 64], "layers_per_block": 1, "norm_num_groups": 16,
            "sample_size": 128},
    "text_encoder": {
        **_CLIP_L, "vocab_size": TOKENIZER_VOCAB, "hidden_size": 128, "intermediate_size": 256,
        "num_hidden_layers": 3, "num_attention_heads": 4, "projection_dim": 128,
    },
    "tokenizer": {"pad_token": "<|endoftext|>", "corpus": "shapes"},
    "scheduler": ARCH["sd15"]["scheduler"],
}


ARCH["shapes"] = SHAPES
TINY["shapes"] = TINY["sd15"]


def components_shapes() -> dict[str, Any]:
    """A deep copy of the `shapes` model's component configs."""
    return copy.deepcopy(SHAPES)
