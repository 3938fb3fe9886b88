"""Train the shapes prompt-adherence judge (`sweep/judge.py`) on generator images.

    python training/train_judge.py --out datasets/models/shapes-judge            # GPU if present
    python training/train_judge.py --steps 20 --n-train 512 --out /tmp/j         # a smoke run

Seeded end to end: the training images are `shapes.samples(TRAIN_SEED + chunk)` for
chunks 0..K-1 and the held-out images `shapes.samples(HELDOUT_SEED)`, a seed outside
that range; torch is seeded with --seed. Images are rendered at 128 px (the shapes
model's size) and reduced by `judge.preprocess`, the path the judge sees at scoring
time. Augmentation (blur, noise, per-channel gain and offset) stands in for the
softness and colour drift of a diffusion model's images, so the judge reads those too.

It prints one progress line per 10% of the steps, then the held-out accuracy, and
writes the folder atomically per file (`judge.save_judge`).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep import judge, shapes  # noqa: E402

TRAIN_SEED = 1_000     # chunk c of the training set is samples(TRAIN_SEED + c)
HELDOUT_SEED = 999_999  # never a training chunk's seed
RENDER_SIZE = 128


def _chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [n, 3, S, S] at the judge's input size, label indices [n, heads])."""
    seed, n, input_size = args
    torch.set_num_threads(1)
    heads = judge.head_labels()
    pairs = list(shapes.samples(seed, n, size=RENDER_SIZE))
    x = judge.preprocess(judge.pil_to_tensor([im for im, _ in pairs]), input_size)
    x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    y = np.array([[heads[h].index(v) for h, v in judge.canonical(s).items()] for _, s in pairs], dtype=np.int64)
    return x, y


def make_data(seed: int, n: int, input_size: int, workers: int, chunk: int = 2_000, pool=None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    jobs = [(seed + c, min(chunk, n - c * chunk), input_size) for c in range(math.ceil(n / chunk))]
    parts = pool.map(_chunk, jobs) if pool is not None else [_chunk(j) for j in jobs]
    return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x in [-1, 1]; a random half blurred, then noise and per-channel gain/offset for all."""
    n, dev = len(x), x.device

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    sigma = 0.3 + 1.0 * rand(1).item()
    r = torch.arange(-3, 4, device=dev, dtype=x.dtype)
    k = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    k = k / k.sum()
    blurred = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k.view(1, 1, 1, 7).repeat(3, 1, 1, 1), groups=3)
    blurred = F.conv2d(F.pad(blurred, (0, 0, 3, 3), mode="replicate"), k.view(1, 1, 7, 1).repeat(3, 1, 1, 1),
                       groups=3)
    x = torch.where(rand(n, 1, 1, 1) < 0.5, blurred, x)
    gain = 1 + 0.3 * (rand(n, 3, 1, 1) - 0.5)
    offset = 0.2 * (rand(n, 3, 1, 1) - 0.5)
    noise = torch.randn(x.shape, generator=gen, device=dev) * (0.08 * rand(n, 1, 1, 1))
    return (x * gain + offset + noise).clamp(-1, 1)


def to_input(x_u8: torch.Tensor) -> torch.Tensor:
    return x_u8.float() / 127.5 - 1


def evaluate(net: judge.JudgeNet, x: torch.Tensor, y: torch.Tensor, heads: list[str]) -> dict[str, float]:
    """Per-head accuracy on (x, y), plus 'attributes': accuracy over the attributes the
    captions name (what `judge_score` averages)."""
    net.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), 1024):
            preds.append(torch.stack([lg.argmax(1) for lg in net(to_input(x[i:i + 1024]))], 1))
    p = torch.cat(preds)
    net.train()
    return {h: float((p[:, k] == y[:, k]).float().mean()) for k, h in enumerate(heads)}


def attribute_accuracy(j: judge.Judge, seed: int, n: int) -> float:
    """Mean judge score of held-out generator images against their own captions."""
    pairs = list(shapes.samples(seed, n, size=RENDER_SIZE))
    images = judge.pil_to_tensor([im for im, _ in pairs])
    scores = []
    for i in range(0, n, 500):
        scores += j.score(images[i:i + 500], [s.caption() for _, s in pairs[i:i + 500]])
    return sum(scores) / len(scores)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder to write judge.json and model.safetensors into")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n-train", type=int, default=80_000, help="training images")
    ap.add_argument("--n-heldout", type=int, default=4_000, help="held-out images for the accuracy")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="processes rendering images (0: one per CPU)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    cfg = judge.JudgeConfig()
    heads = list(cfg.heads)
    workers = args.workers or mp.cpu_count()
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            xtr, ytr = make_data(TRAIN_SEED, args.n_train, cfg.input_size, workers, pool=pool)
            xho, yho = make_data(HELDOUT_SEED, args.n_heldout, cfg.input_size, workers, pool=pool)
    else:
        xtr, ytr = make_data(TRAIN_SEED, args.n_train, cfg.input_size, 1)
        xho, yho = make_data(HELDOUT_SEED, args.n_heldout, cfg.input_size, 1)
    data_s = time.monotonic() - t0
    print(f"[judge] {len(xtr)} training and {len(xho)} held-out images in {data_s:.1f} s", flush=True)

    xtr, ytr, xho, yho = xtr.to(device), ytr.to(device), xho.to(device), yho.to(device)
    net = judge.JudgeNet(cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    curve = []
    t1 = time.monotonic()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(xtr), (args.batch,), generator=gen, device=device)
        logits = net(augment(to_input(xtr[idx]), gen))
        loss = sum(F.cross_entropy(lg, ytr[idx, k]) for k, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps:
            acc = evaluate(net, xho, yho, heads)
            curve.append({"step": step, "loss": round(loss.item(), 4),
                          "heldout_min_head_acc": round(min(acc.values()), 4)})
            print(f"[judge] step {step}/{args.steps} loss {loss.item():.4f} "
                  f"held-out worst head {min(acc, key=acc.get)} {min(acc.values()):.4f}", flush=True)
    train_s = time.monotonic() - t1

    net = net.cpu().eval()
    heads_acc = evaluate(net, xho.cpu(), yho.cpu(), heads)
    cfg.training = {
        "command": "python training/train_judge.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "seed": args.seed, "steps": args.steps, "batch": args.batch, "n_train": args.n_train,
        "train_seeds": f"shapes.samples({TRAIN_SEED} + chunk), chunks of 2000",
        "heldout_seed": HELDOUT_SEED, "n_heldout": args.n_heldout, "device": str(device),
        "data_seconds": round(data_s, 1), "train_seconds": round(train_s, 1),
        "heldout_head_accuracy": {h: round(a, 4) for h, a in heads_acc.items()},
        "curve": curve, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    out = judge.save_judge(net, cfg, args.out)
    # The published figure: through the saved (float16) weights and judge_score itself.
    acc = attribute_accuracy(judge.load_judge(out), HELDOUT_SEED, args.n_heldout)
    cfg.training["heldout_attribute_accuracy"] = round(acc, 4)
    judge.save_judge(net, cfg, out)
    print(f"[judge] held-out attribute accuracy {acc:.4f}; per head "
          + json.dumps(cfg.training["heldout_head_accuracy"]), flush=True)
    print(f"[judge] wrote {out} in {time.monotonic() - t0:.1f} s", flush=True)
    return cfg.training


if __name__ == "__main__":
    main()
