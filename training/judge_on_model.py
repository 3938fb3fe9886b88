"""The judge's accuracy on a trained model's own images (the baseline of every trial).

    python training/judge_on_model.py                       # shapes model, DDIM, 25 steps, CPU
    python training/judge_on_model.py --n 96 --json out.json

Captions come from the generator (`shapes.samples(CAPTION_SEED)`); each is generated
once by the baseline pipeline, loaded and called with the arguments of a trial's
baseline (`TrialSession.pipe`, `generation_kwargs`; seed = the caption's index), and
judged against its own caption. Prints the mean fraction of attributes recognised (what `judge_score`
averages), per attribute, and the same on the generator's own rendering of those
captions for reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CAPTION_SEED = 20_000  # not a training chunk of the judge (1000+) nor of the shapes model (0..)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="shapes", help="family of the pipeline to judge")
    ap.add_argument("--preset", default="hub", help="its preset")
    ap.add_argument("--model-path", default=None, help="its folder, where the preset takes one")
    ap.add_argument("--scheduler", default="ddim")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--n", type=int, default=64, help="captions to generate and judge")
    ap.add_argument("--judge", default=None, help="judge folder (default: the shipped one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="captions per pipeline call")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary here")
    ap.add_argument("--grid", type=Path, default=None,
                    help="also save a PNG of the first 32: model images above the generator's, "
                         "with the judge's misses")
    args = ap.parse_args(argv)

    from sweep import judge, methods, shapes
    from sweep.catalog import PipelineConfig
    from sweep.pipelines import quiet_libraries
    from sweep.trial import TrialSession

    quiet_libraries()
    j = judge.load_judge(args.judge or judge.DEFAULT_JUDGE)
    pairs = list(shapes.samples(CAPTION_SEED, args.n))
    scenes = [s for _, s in pairs]
    cfg = PipelineConfig(model=args.model, scheduler=args.scheduler, steps=args.steps, preset=args.preset,
                         model_path=args.model_path)
    t0 = time.monotonic()
    hits, scores, shown = [], [], []
    with TrialSession(cfg, device=args.device) as session:
        # The baseline pipeline and call arguments of a trial; captions go in batches
        # (one seeded generator per image) since one call per image is slow on a CPU.
        kwargs = session.generation_kwargs()
        for start in range(0, len(scenes), args.batch):
            part = scenes[start:start + args.batch]
            images = methods.generate(session.pipe, [s.caption() for s in part],
                                      generator=[methods.generator_for(start + k) for k in range(len(part))],
                                      **kwargs).float().cpu()
            shown += list(images)
            scores += j.score(images, [s.caption() for s in part])
            hits += j.attribute_hits(images, part)
            print(f"[judge] {len(scores)}/{args.n} images, running accuracy {sum(scores) / len(scores):.3f}",
                  file=sys.stderr, flush=True)
        resolved = session.cfg
    truth = j.score(judge.pil_to_tensor([im for im, _ in pairs]), [s.caption() for s in scenes])
    per_attr = {}
    for name in sorted({k for h in hits for k in h}):
        seen = [h[name] for h in hits if name in h]
        per_attr[name] = round(sum(seen) / len(seen), 4)
    out = {
        "command": "python training/judge_on_model.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "model": args.model, "preset": args.preset, "model_path": resolved.model_path,
        "scheduler": args.scheduler, "steps": args.steps, "resolution": resolved.resolution,
        "guidance_scale": resolved.guidance_scale, "n_images": len(scores), "caption_seed": CAPTION_SEED,
        "attribute_accuracy": round(sum(scores) / len(scores), 4),
        "per_attribute": per_attr,
        "all_attributes_right": round(sum(s == 1.0 for s in scores) / len(scores), 4),
        "generator_images_accuracy": round(sum(truth) / len(truth), 4),
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(out, indent=2))
    if args.grid:
        _grid(args.grid, shown[:32], [im for im, _ in pairs][:32], hits[:32])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _grid(path: Path, model_images, truth_images, hits, cols: int = 16) -> None:
    """Rows of `cols`: the model's image, the generator's rendering below it, and the
    attributes the judge missed in the model's image under both."""
    import numpy as np
    from PIL import Image, ImageDraw

    tile, text_h = 128, 40
    rows = (len(model_images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * tile, rows * (2 * tile + text_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, truth, hit) in enumerate(zip(model_images, truth_images, hits, strict=True)):
        x, y = (i % cols) * tile, (i // cols) * (2 * tile + text_h)
        arr = (img.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        grid.paste(Image.fromarray(arr).resize((tile, tile)), (x, y))
        grid.paste(truth.resize((tile, tile)), (x, y + tile))
        missed = [k for k, ok in hit.items() if not ok]
        draw.text((x + 2, y + 2 * tile + 2), ", ".join(missed[:3]) or "all right", fill="black")
        if len(missed) > 3:
            draw.text((x + 2, y + 2 * tile + 14), ", ".join(missed[3:6]), fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)


if __name__ == "__main__":
    main()
