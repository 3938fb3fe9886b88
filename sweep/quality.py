"""Quality of an accelerated pipeline against its own baseline.

Both pipelines run the same prompts with the same seeds, so the baseline image is the
reference for the accelerated one:

* SSIM and PSNR (torchmetrics, no weights) compare each accelerated image with its
  baseline image, on [0, 1] RGB.
* CLIP score (``100 * max(cos(image, text), 0)``, the definition torchmetrics'
  `CLIPScore` uses) of both images against the prompt, with a CLIP model loaded from a
  hub id or a local folder through transformers. Optional: without a CLIP model the
  CLIP columns are null.
* Judge score (`sweep.judge`): the fraction of a shapes caption's attributes that the
  shipped judge recognises in each image, the offline analogue of the CLIP score for
  the `shapes` model. Optional, like CLIP: without a judge model its columns are null.

A budget is stated as a loss under a named metric (`lake_schema.BUDGET_METRICS`):
``ssim`` -> 1 - SSIM; ``clip`` and ``judge`` -> `relative_drop`, (base - accel) / base
(negative when the accelerated images score higher).

Everything is per prompt first (`PromptQuality`), so a tuner can report after each
prompt and stop a hopeless point early; `QualitySummary` averages over the prompts seen.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sweep.lake_schema import BUDGET_METRICS


def ssim_psnr(accel, base) -> tuple[float, float]:
    """Mean SSIM and mean PSNR (dB) over a batch of images [N, 3, H, W] in [0, 1].

    PSNR is infinite for identical images; SSIM is then 1.
    """
    import torch
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    accel = accel.detach().float().cpu().clamp(0, 1)
    base = base.detach().float().cpu().clamp(0, 1)
    if accel.shape != base.shape:
        raise ValueError(f"image shapes differ: accelerated {tuple(accel.shape)}, baseline {tuple(base.shape)}")
    ssim = float(structural_similarity_index_measure(accel, base, data_range=1.0))
    psnrs = []
    for a, b in zip(accel, base, strict=True):
        if torch.equal(a, b):
            psnrs.append(math.inf)
        else:
            psnrs.append(float(peak_signal_noise_ratio(a, b, data_range=1.0)))
    return ssim, sum(psnrs) / len(psnrs)


class ClipScorer:
    """CLIP score of images against their prompts, with a model from an id or a folder."""

    def __init__(self, model: str | os.PathLike, device: str | None = None):
        from sweep.pipelines import quiet_libraries

        quiet_libraries()
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.name = str(model)
        self.device = torch.device(device or "cpu")
        try:
            self.model = CLIPModel.from_pretrained(self.name).to(self.device).eval()
            self.processor = CLIPProcessor.from_pretrained(self.name)
        except OSError as e:
            raise FileNotFoundError(
                f"cannot load a CLIP model from {self.name!r}: pass a local folder holding a CLIP "
                f"model and its processor (save_pretrained), or a hub id reachable from here ({e})"
            ) from None

    def score(self, images, prompts: list[str]) -> list[float]:
        """One score per image; `images` is [N, 3, H, W] in [0, 1], `prompts` has N entries."""
        import torch

        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        arrays = [p.permute(1, 2, 0).cpu().numpy() for p in pixels]
        inputs = self.processor(text=list(prompts), images=arrays, return_tensors="pt", padding=True,
                                truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.no_grad():
            img = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            txt = self.model.get_text_features(input_ids=inputs["input_ids"],
                                               attention_mask=inputs.get("attention_mask"))
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        cos = torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1)
        return [float(100 * max(c, 0.0)) for c in cos.tolist()]


class JudgeScorer:
    """Judge score of images against their shapes prompts, with a judge from a folder."""

    def __init__(self, model: str | os.PathLike, device: str | None = None):
        from sweep import judge

        path = Path(model).expanduser()
        # The lake records a repo-relative path for the shipped judge, not this machine's.
        try:
            self.name = str(path.resolve().relative_to(judge.REPO_ROOT))
        except ValueError:
            self.name = str(model)
        self.judge = judge.load_judge(path, device=device or "cpu")

    def score(self, images, prompts: list[str]) -> list[float]:
        """One score in [0, 1] per image; `images` is [N, 3, H, W] in [0, 1]."""
        return self.judge.score(images, prompts)


@dataclass
class PromptQuality:
    """Quality of one prompt's images (means over the batch of that prompt)."""

    prompt: str
    seed: int
    ssim: float
    psnr: float
    clip_score: float | None = None
    clip_score_base: float | None = None
    judge_score: float | None = None
    judge_score_base: float | None = None

    def loss(self, metric: str) -> float | None:
        return loss(metric, ssim=self.ssim, clip_score=self.clip_score, clip_score_base=self.clip_score_base,
                    judge_score=self.judge_score, judge_score_base=self.judge_score_base)


def relative_drop(score: float | None, base: float | None) -> float | None:
    """(base - score) / base: the budget loss of a score where higher is better (CLIP,
    judge), as the original tool chain's relative CLIP-score drop. None when unmeasured
    or when the baseline scores 0 (no drop is defined against nothing)."""
    if score is None or base is None or base == 0:
        return None
    return (base - score) / base


def loss(metric: str, *, ssim: float | None = None, clip_score: float | None = None,
         clip_score_base: float | None = None, judge_score: float | None = None,
         judge_score_base: float | None = None) -> float | None:
    """The quality loss under a budget metric: 'ssim' -> 1 - SSIM, 'clip' and 'judge' ->
    relative drop against the baseline's score."""
    if metric not in BUDGET_METRICS:
        raise ValueError(f"unknown quality metric {metric!r}: use one of {', '.join(BUDGET_METRICS)}")
    if metric == "ssim":
        return None if ssim is None else 1.0 - ssim
    if metric == "judge":
        return relative_drop(judge_score, judge_score_base)
    return relative_drop(clip_score, clip_score_base)


@dataclass
class QualitySummary:
    """Quality over the prompts evaluated so far (means of the per-prompt values)."""

    prompts: list[PromptQuality] = field(default_factory=list)
    clip_model: str | None = None
    judge_model: str | None = None

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    def _mean(self, name: str) -> float | None:
        values = [getattr(p, name) for p in self.prompts if getattr(p, name) is not None]
        return sum(values) / len(values) if values else None

    @property
    def ssim(self) -> float | None:
        return self._mean("ssim")

    @property
    def psnr(self) -> float | None:
        return self._mean("psnr")

    @property
    def clip_score(self) -> float | None:
        return self._mean("clip_score")

    @property
    def clip_score_base(self) -> float | None:
        return self._mean("clip_score_base")

    @property
    def judge_score(self) -> float | None:
        return self._mean("judge_score")

    @property
    def judge_score_base(self) -> float | None:
        return self._mean("judge_score_base")

    def loss(self, metric: str) -> float | None:
        return loss(metric, ssim=self.ssim, clip_score=self.clip_score, clip_score_base=self.clip_score_base,
                    judge_score=self.judge_score, judge_score_base=self.judge_score_base)

    def row(self) -> dict[str, Any]:
        """The lake's quality columns."""
        return {
            "ssim": self.ssim,
            "psnr": self.psnr,
            "clip_score": self.clip_score,
            "clip_score_base": self.clip_score_base,
            "judge_score": self.judge_score,
            "judge_score_base": self.judge_score_base,
            **{f"quality_loss_{m}": self.loss(m) for m in BUDGET_METRICS},
            "n_prompts": self.n_prompts,
            "clip_model": self.clip_model,
            "judge_model": self.judge_model,
            "prompt_quality_json": json.dumps([asdict(p) for p in self.prompts]),
        }

    @classmethod
    def from_json(cls, text: str, clip_model: str | None = None, judge_model: str | None = None) -> QualitySummary:
        """The summary a row's ``prompt_quality_json`` was written from."""
        return cls([PromptQuality(**p) for p in json.loads(text)], clip_model, judge_model)

    def to_dict(self) -> dict[str, Any]:
        return {**self.row(), "per_prompt": [asdict(p) for p in self.prompts]}


def make_tiny_clip(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny random CLIP model with its processor (offline tokenizer) to `path`.

    For tests and smoke runs: its scores are not meaningful, only well-formed.
    """
    from sweep.pipelines import quiet_libraries

    quiet_libraries()  # before the imports: transformers warns while resolving the image processor
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sweep import offline_tokenizers

    text = {"vocab_size": offline_tokenizers.clip_vocab_size(), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
            "projection_dim": 16, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 8, "projection_dim": 16}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=offline_tokenizers.clip_tokenizer(),
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
