"""A grid of samples of a trained `shapes` pipeline, with the captions as a text file.

    python training/sample_grid.py MODEL_DIR OUT.png [--n 16] [--steps 25] [--seed 0]

Captions are drawn from the generator (`sweep.shapes.samples`, seed 10_000 + seed, so
not the training chunks); each image uses its own seeded generator.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=7.5)
    args = ap.parse_args(argv)

    import torch
    from PIL import Image, ImageDraw

    from sweep.pipelines import quiet_libraries, set_scheduler
    from sweep.shapes import samples

    quiet_libraries()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32,
                                                             safety_checker=None, requires_safety_checker=False)
    pipe = set_scheduler(pipe.to(device), "ddim")
    pipe.set_progress_bar_config(disable=True)
    pairs = list(samples(10_000 + args.seed, args.n, 128))
    captions = [s.caption() for _, s in pairs]
    gens = [torch.Generator(device).manual_seed(args.seed + i) for i in range(args.n)]
    images = pipe(captions, num_inference_steps=args.steps, guidance_scale=args.guidance, generator=gens,
                  height=128, width=128).images
    cols = 4
    rows = (args.n + cols - 1) // cols
    tile = 128
    grid = Image.new("RGB", (cols * 2 * tile, rows * (tile + 24)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, (truth, _)) in enumerate(zip(images, pairs, strict=True)):
        x, y = (i % cols) * 2 * tile, (i // cols) * (tile + 24)
        grid.paste(img, (x, y))
        grid.paste(truth, (x + tile, y))
        draw.text((x + 2, y + tile + 2), captions[i][:42], fill="black")
        draw.text((x + 2, y + tile + 12), captions[i][42:84], fill="black")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    args.out.with_suffix(".txt").write_text("\n".join(captions) + "\n")


if __name__ == "__main__":
    main()
