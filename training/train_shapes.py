"""Train the `shapes` model: a Stable Diffusion 1.5-topology pipeline on `sweep.shapes` scenes.

Follows diffusers' text-to-image training conventions (examples/text_to_image): a DDPM
noise schedule equal to SD 1.5's (scaled-linear betas 0.00085-0.012, 1000 steps), the
noise-prediction MSE loss, 10% of captions dropped to "" so that classifier-free guidance
works, AdamW with warm-up, and an EMA of the weights, which is what gets saved.

Unlike SD 1.5 there is no pretrained text encoder or autoencoder to start from, so:

1. the `AutoencoderKL` is trained first on the images (MSE + L1 reconstruction plus a
   small KL term), and its latent scaling factor set so latents have unit variance;
2. the `CLIPTextModel` is trained jointly with the UNet, from the noise-prediction loss.

The data is a fixed set of `n_images` generator scenes (seeded; rendered in parallel).
Output, under --out: `shapes/` (the pipeline, ``save_pretrained``, fp16 safetensors),
`train_log.json` (config, steps, times, loss curves), and `resume/` (fp32 weights to go
on training with --resume). Run:

    python training/train_shapes.py --out OUT                  # the shipped model (GPU)
    python training/train_shapes.py --out /tmp/x --smoke       # tiny widths, CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    n_images: int = 80_000      # fixed training set; ~15k distinct captions among them
    image_size: int = 128
    vae_steps: int = 2_000
    vae_batch: int = 64
    vae_lr: float = 5e-4
    kl_weight: float = 1e-6     # SD's autoencoders use a KL weight of this order
    unet_steps: int = 3_000
    unet_batch: int = 512
    unet_lr: float = 5e-4
    warmup: int = 200
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    max_unet_seconds: float = 0.0  # a wall-clock guard for the UNet loop; 0 = none
    log_every: int = 50
    smoke: bool = False            # tiny widths and data: a CPU check of the whole script


SMOKE = dict(n_images=64, vae_steps=3, vae_batch=4, unet_steps=4, unet_batch=4, warmup=2, log_every=1)
CHUNK = 2_000


def _render_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    from sweep.shapes import samples

    seed, n, size = args
    imgs, caps = [], []
    for img, scene in samples(seed, n, size):
        imgs.append(np.asarray(img, dtype=np.uint8))
        caps.append(scene.caption())
    return np.stack(imgs), caps


def make_data(cfg: TrainConfig, workers: int) -> tuple[np.ndarray, list[str]]:
    """`n_images` scenes: chunk k is `samples(seed * 1_000_003 + k)`, so the set is the
    same whatever the number of workers."""
    jobs = []
    for k, start in enumerate(range(0, cfg.n_images, CHUNK)):
        jobs.append((cfg.seed * 1_000_003 + k, min(CHUNK, cfg.n_images - start), cfg.image_size))
    if workers > 1 and len(jobs) > 1:
        with Pool(workers) as pool:
            parts = pool.map(_render_chunk, jobs)
    else:
        parts = [_render_chunk(j) for j in jobs]
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def component_configs(smoke: bool) -> dict:
    from sweep import model_configs

    spec = model_configs.components_shapes()
    if smoke:
        spec["unet"].update(block_out_channels=[16, 16, 32, 32], attention_head_dim=2, cross_attention_dim=16,
                            norm_num_groups=8)
        spec["vae"].update(block_out_channels=[8, 8, 8, 8], norm_num_groups=4)
        spec["text_encoder"].update(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, projection_dim=16)
    return spec


def build_models(spec: dict):
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    from sweep import model_configs
    from sweep import offline_tokenizers as toks

    tok_kwargs = {k: v for k, v in spec["tokenizer"].items() if not k.startswith("_")}
    tokenizer = toks.clip_tokenizer(**tok_kwargs)
    te_cfg = dict(spec["text_encoder"])
    if te_cfg["vocab_size"] == model_configs.TOKENIZER_VOCAB:
        te_cfg["vocab_size"] = toks.clip_vocab_size(tok_kwargs.get("corpus", "general"))
    vae = diffusers.AutoencoderKL.from_config(spec["vae"])
    unet = diffusers.UNet2DConditionModel.from_config(spec["unet"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
    return tokenizer, vae, unet, text_encoder


def _lr_at(step: int, cfg_lr: float, warmup: int) -> float:
    return cfg_lr * min(1.0, (step + 1) / max(1, warmup))


def train_vae(vae, images_u8, cfg: TrainConfig, device, log: dict) -> None:
    import torch
    import torch.nn.functional as F

    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    n = images_u8.shape[0]
    curve = log.setdefault("vae_loss", [])
    t0 = time.time()
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for step in range(cfg.vae_steps):
        idx = torch.randint(0, n, (cfg.vae_batch,), generator=gen)
        x = images_u8[idx.to(images_u8.device)].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg.vae_lr, cfg.warmup)
        with amp:
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
        rec = rec.float()
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + cfg.kl_weight * post.kl().float().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.vae_steps - 1:
            curve.append([step, float(loss.detach())])
            print(f"vae {step}/{cfg.vae_steps} loss {float(loss):.5f} {time.time() - t0:.0f}s", flush=True)
    log["vae_seconds"] = time.time() - t0
    vae.eval()


def encode_all(vae, images_u8, device, batch: int = 512):
    """Posterior mean and std of every image (sampled afresh at each UNet step)."""
    import torch

    means, stds = [], []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, images_u8.shape[0], batch):
            x = images_u8[i:i + batch].permute(0, 3, 1, 2).float() / 127.5 - 1.0
            d = vae.encode(x).latent_dist
            means.append(d.mean.float())
            stds.append(d.std.float())
    return torch.cat(means), torch.cat(stds)


def tokenize_all(tokenizer, captions: list[str]):
    import torch

    unique = sorted(set(captions) | {""})
    ids = tokenizer(unique, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    row = {c: i for i, c in enumerate(unique)}
    return ids, torch.tensor([row[c] for c in captions]), row[""]


def train_unet(unet, text_encoder, ema, lat_mean, lat_std, scale, ids, cap_idx, empty_row, cfg: TrainConfig,
               device, log: dict, start_step: int = 0) -> int:
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    from sweep import model_configs

    betas = {k: v for k, v in model_configs.ARCH["sd15"]["scheduler"].items()
             if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
    noise_sched = DDPMScheduler(**betas)
    acp = noise_sched.alphas_cumprod.to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed + 2 + start_step)
    n = lat_mean.shape[0]
    unet.train()
    text_encoder.train()
    curve = log.setdefault("unet_loss", [])
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    t0 = time.time()
    step = start_step
    ema_params = [p for m in ema for p in m.parameters()]
    live_params = [p for m in (unet, text_encoder) for p in m.parameters()]
    running = []
    while step < cfg.unet_steps:
        if cfg.max_unet_seconds and time.time() - t0 > cfg.max_unet_seconds:
            print(f"unet: stopped by the {cfg.max_unet_seconds:.0f}s guard at step {step}", flush=True)
            break
        b = cfg.unet_batch
        idx = torch.randint(0, n, (b,), generator=gen).to(device)
        z = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=None, device=device)) * scale
        drop = torch.rand(b, generator=gen).to(device) < cfg.caption_dropout
        rows = torch.where(drop, torch.full_like(cap_idx[idx.cpu()].to(device), empty_row),
                           cap_idx[idx.cpu()].to(device))
        tokens = ids[rows]
        noise = torch.randn_like(z)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), device=device)
        a = acp[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = _lr_at(step - start_step, cfg.unet_lr, cfg.warmup)
        with amp:
            cond = text_encoder(tokens)[0]
            pred = unet(noisy, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - cfg.ema_decay)
        running.append(loss.detach())
        if step % cfg.log_every == 0 or step == cfg.unet_steps - 1:
            mean_loss = float(torch.stack(running).mean())
            running = []
            curve.append([step, mean_loss])
            print(f"unet {step}/{cfg.unet_steps} loss {mean_loss:.5f} {time.time() - t0:.0f}s", flush=True)
        step += 1
    log["unet_seconds"] = log.get("unet_seconds", 0.0) + time.time() - t0
    return step


def save_chunks(state: dict, folder: Path, name: str, max_bytes: int = 12_000_000) -> None:
    """fp32 weights in files of at most ~`max_bytes` (the device returns files under 16 MiB)."""
    from safetensors.torch import save_file

    chunk: dict = {}
    size, k = 0, 0
    for key, v in state.items():
        if chunk and size + v.numel() * v.element_size() > max_bytes:
            save_file(chunk, folder / f"{name}-{k}.safetensors")
            chunk, size, k = {}, 0, k + 1
        chunk[key] = v.detach().contiguous().cpu()
        size += v.numel() * v.element_size()
    save_file(chunk, folder / f"{name}-{k}.safetensors")


def load_chunks(folder: Path, name: str) -> dict:
    from safetensors.torch import load_file

    state: dict = {}
    for f in sorted(folder.glob(f"{name}-*.safetensors")):
        state.update(load_file(f))
    return state


def _ema_state(run: Path, name: str) -> dict:
    """The fp32 state dict of a saved pipeline's component (its EMA weights)."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    cls = UNet2DConditionModel if name == "unet" else CLIPTextModel
    model = cls.from_pretrained(run / "shapes" / name, torch_dtype=torch.float32)
    return {k: v.float() for k, v in model.state_dict().items()}


def make_pipeline(tokenizer, vae, unet, text_encoder, spec: dict):
    import diffusers

    sched_cfg = spec["scheduler"]
    scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--resume", type=Path, help="an --out folder of an earlier run: go on training its UNet")
    ap.add_argument("--smoke", action="store_true", help="tiny widths and data, a few steps (CPU check)")
    for f in ("seed", "n_images", "vae_steps", "unet_steps", "unet_batch", "unet_lr", "max_unet_seconds"):
        ap.add_argument("--" + f.replace("_", "-"), type=type(getattr(TrainConfig, f)))
    args = ap.parse_args(argv)
    cfg = TrainConfig(smoke=args.smoke)
    if args.smoke:
        cfg = replace(cfg, **SMOKE)
    overrides = {f: getattr(args, f) for f in ("seed", "n_images", "vae_steps", "unet_steps", "unet_batch", "unet_lr",
                                               "max_unet_seconds") if getattr(args, f) is not None}
    cfg = replace(cfg, **overrides)

    import copy
    import os

    import torch

    from sweep.pipelines import quiet_libraries

    quiet_libraries()
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log: dict = {"config": asdict(cfg), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 "torch": torch.__version__}
    t_all = time.time()

    t0 = time.time()
    images, captions = make_data(cfg, workers=min(16, os.cpu_count() or 1))
    log["data_seconds"] = time.time() - t0
    log["distinct_captions"] = len(set(captions))
    print(f"data: {len(captions)} images, {log['distinct_captions']} captions, {log['data_seconds']:.0f}s",
          flush=True)
    spec = component_configs(cfg.smoke)
    tokenizer, vae, unet, text_encoder = build_models(spec)
    images_t = torch.from_numpy(images).to(device)
    start_step = 0
    if args.resume:
        from diffusers import AutoencoderKL

        prev = json.loads((args.resume / "train_log.json").read_text())
        vae = AutoencoderKL.from_pretrained(args.resume / "shapes" / "vae", torch_dtype=torch.float32)
        if (args.resume / "resume").is_dir():
            unet.load_state_dict(load_chunks(args.resume / "resume", "unet"))
            text_encoder.load_state_dict(load_chunks(args.resume / "resume", "text_encoder"))
        else:
            # Only the saved pipeline travelled (the fp32 weights did not fit): go on from
            # its EMA weights.
            unet.load_state_dict(_ema_state(args.resume, "unet"))
            text_encoder.load_state_dict(_ema_state(args.resume, "text_encoder"))
            log["resumed_from_ema"] = True
        start_step = prev["unet_steps_done"]
        for k in ("vae_loss", "unet_loss", "vae_seconds", "unet_seconds", "data_seconds"):
            if k in prev:
                log[k] = prev[k]
        log["resumed_from_step"] = start_step
    vae.to(device)
    unet.to(device)
    text_encoder.to(device)
    if not args.resume:
        train_vae(vae, images_t, cfg, device, log)
    vae.requires_grad_(False)
    lat_mean, lat_std = encode_all(vae, images_t, device)
    del images_t
    # SD's convention: latents times scaling_factor have unit variance.
    scale = float(1.0 / torch.sqrt(lat_mean.var() + (lat_std ** 2).mean()))
    if not args.resume:
        vae.register_to_config(scaling_factor=scale)
    scale = float(vae.config.scaling_factor)
    log["scaling_factor"] = scale
    ids, cap_idx, empty_row = tokenize_all(tokenizer, captions)
    ids = ids.to(device)
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)]
    if args.resume:
        ema[0].load_state_dict(_ema_state(args.resume, "unet"))
        ema[1].load_state_dict(_ema_state(args.resume, "text_encoder"))
    done = train_unet(unet, text_encoder, ema, lat_mean, lat_std, scale, ids, cap_idx, empty_row, cfg, device, log,
                      start_step)
    log["unet_steps_done"] = done

    (out / "resume").mkdir(exist_ok=True)
    for name, model in (("unet", unet), ("text_encoder", text_encoder)):
        save_chunks(model.state_dict(), out / "resume", name)
    pipe = make_pipeline(tokenizer, vae, ema[0], ema[1], spec)
    pipe.to(torch.float16 if not cfg.smoke else torch.float32)
    pipe.save_pretrained(out / "shapes", safe_serialization=True)
    log["total_seconds"] = time.time() - t_all
    log["saved_bytes"] = sum(p.stat().st_size for p in (out / "shapes").rglob("*") if p.is_file())
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"saved {out / 'shapes'} ({log['saved_bytes'] / 1e6:.1f} MB), steps {done}, "
          f"total {log['total_seconds']:.0f}s", flush=True)
    if math.isnan(log["unet_loss"][-1][1]):
        raise SystemExit("training diverged: the last UNet loss is NaN")


if __name__ == "__main__":
    main()
