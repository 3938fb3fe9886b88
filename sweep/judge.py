"""A prompt-adherence judge for the `shapes` scenes: the offline analogue of a CLIP score.

A small CNN, trained on `sweep.shapes` images, reads what a scene shows: how many
objects, the background, the axis the two objects lie on (vertical or horizontal), and
shape, colour and size of each object in a *canonical order*, the top (or left) object
first. The canonical order is why "X above Y" and "Y below X" are judged alike: both say
X is the top object.

`judge_score(images, prompts)` parses each prompt (`shapes.parse_caption`) and returns,
per image, the fraction of the prompt's attributes (`Scene.attributes()`: shape, colour,
size of each object, relation, background, count) that the judge recognises in it. A
relation is recognised when the judge sees the objects on its axis; which object is on
top (or left) is judged through the per-object attributes, which are read in canonical
order, so a swapped pair loses those.

Weights ship as safetensors (float16) beside a JSON config (`judge.json`) in a folder,
`datasets/models/shapes-judge/`; `training/train_judge.py` trains them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sweep import shapes
from sweep.atomic import write_atomic

CONFIG_NAME = "judge.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "diffaccel-shapes-judge"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JUDGE = REPO_ROOT / "datasets" / "models" / "shapes-judge"

NONE = "none"
# The axis of each relation, and whether its first-named object is the top/left one.
AXIS = {"above": "vertical", "below": "vertical", "left of": "horizontal", "right of": "horizontal"}
FIRST_NAMED_LEADS = {"above": True, "below": False, "left of": True, "right of": False}


def head_labels() -> dict[str, tuple[str, ...]]:
    """Each head's classes, from the generator's vocabulary; slot b is 'none' for one object."""
    return {
        "count": ("1", "2"),
        "background": shapes.BACKGROUNDS,
        "axis": (NONE, "vertical", "horizontal"),
        "shape_a": shapes.SHAPES,
        "colour_a": shapes.COLOURS,
        "size_a": shapes.SIZES,
        "shape_b": (NONE, *shapes.SHAPES),
        "colour_b": (NONE, *shapes.COLOURS),
        "size_b": (NONE, *shapes.SIZES),
    }


def canonical(scene: shapes.Scene) -> dict[str, str]:
    """What the judge's heads should read for `scene` (head -> label)."""
    objs = list(scene.objects)
    if scene.relation is not None and not FIRST_NAMED_LEADS[scene.relation]:
        objs.reverse()
    out = {"count": str(len(objs)), "background": scene.background,
           "axis": AXIS[scene.relation] if scene.relation else NONE}
    for slot, o in zip("ab", [*objs, None][:2], strict=True):
        out[f"shape_{slot}"] = o.shape if o else NONE
        out[f"colour_{slot}"] = o.colour if o else NONE
        out[f"size_{slot}"] = o.size if o else NONE
    return out


def attribute_heads(scene: shapes.Scene) -> dict[str, tuple[str, str]]:
    """Each attribute the caption names (`Scene.attributes()` slot) -> (head, expected label)."""
    canon = canonical(scene)
    lead = scene.relation is None or FIRST_NAMED_LEADS[scene.relation]
    out = {}
    for name in scene.attributes():
        if name == "relation":
            out[name] = ("axis", canon["axis"])
        elif name in ("count", "background"):
            out[name] = (name, canon[name])
        else:  # shape_1, colour_2, ...: the named object's canonical slot
            kind, index = name.rsplit("_", 1)
            slot = "a" if (index == "1") == lead else "b"
            out[name] = (f"{kind}_{slot}", canon[f"{kind}_{slot}"])
    return out


@dataclass
class JudgeConfig:
    """Architecture and input of a judge; saved as `judge.json` beside the weights."""

    input_size: int = 64
    channels: tuple[int, ...] = (24, 48, 64, 96)
    hidden: int = 128
    heads: dict[str, tuple[str, ...]] = field(default_factory=head_labels)
    # What produced the weights (the training command, data seeds, accuracies): not read back.
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["channels"] = list(self.channels)
        out["heads"] = {k: list(v) for k, v in self.heads.items()}
        return {"format": FORMAT, **out}

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> JudgeConfig:
        if data.get("format") != FORMAT:
            raise ValueError(f"{source} is not a shapes-judge config (format {data.get('format')!r}, "
                             f"expected {FORMAT!r}): pass the folder that training/train_judge.py wrote")
        heads = {k: tuple(v) for k, v in data["heads"].items()}
        if heads != head_labels():
            raise ValueError(f"{source} was trained on another vocabulary than sweep/shapes.py has now: "
                             "retrain it with training/train_judge.py")
        return cls(input_size=int(data["input_size"]), channels=tuple(data["channels"]),
                   hidden=int(data["hidden"]), heads=heads, training=dict(data.get("training", {})))


class JudgeNet(nn.Module):
    """Conv blocks down to input_size/16, then a flat (position-keeping) layer: which
    object is on top is a question of where, so no global pooling."""

    def __init__(self, cfg: JudgeConfig):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        side = cfg.input_size // 2 ** len(cfg.channels)
        self.head_sizes = [len(v) for v in cfg.heads.values()]
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, cfg.hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(0.1),
                                        nn.Linear(cfg.hidden, sum(self.head_sizes)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits per head, in the config's head order; `x` is preprocessed ([-1, 1])."""
        return list(self.classifier(self.features(x)).split(self.head_sizes, dim=1))


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] (any H, W) -> [N, 3, size, size] in [-1, 1]."""
    x = images.float().clamp(0, 1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x * 2 - 1


def pil_to_tensor(images: Sequence[Any]) -> torch.Tensor:
    """PIL images -> [N, 3, H, W] float in [0, 1]."""
    import numpy as np

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255


class Judge:
    """A loaded judge: `predict` reads scenes, `score` judges images against prompts."""

    def __init__(self, net: JudgeNet, cfg: JudgeConfig, device: str | torch.device = "cpu", name: str = ""):
        self.cfg = cfg
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.head_names = list(cfg.heads)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 256) -> list[dict[str, str]]:
        """Per image, head -> the label read; `images` [N, 3, H, W] in [0, 1]."""
        out: list[dict[str, str]] = []
        for i in range(0, len(images), batch_size):
            x = preprocess(images[i:i + batch_size], self.cfg.input_size).to(self.device)
            idx = [lg.argmax(1).tolist() for lg in self.net(x)]
            for j in range(len(x)):
                out.append({h: self.cfg.heads[h][idx[k][j]] for k, h in enumerate(self.head_names)})
        return out

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> list[float]:
        """Per image, the fraction of its prompt's attributes recognised in it."""
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        scenes = [parse_prompt(p) for p in prompts]
        reads = self.predict(images)
        return [_fraction(scene, read) for scene, read in zip(scenes, reads, strict=True)]

    def attribute_hits(self, images: torch.Tensor, scenes: Sequence[shapes.Scene]) -> list[dict[str, bool]]:
        """Per image, attribute -> recognised, for accuracy tables."""
        reads = self.predict(images)
        return [{name: read[head] == want for name, (head, want) in attribute_heads(s).items()}
                for s, read in zip(scenes, reads, strict=True)]


def parse_prompt(prompt: str) -> shapes.Scene:
    try:
        return shapes.parse_caption(prompt)
    except ValueError as e:
        raise ValueError(f"the judge reads shapes captions only: {e}. Prompt the shapes model with "
                         "such captions, or use another quality metric (ssim)") from None


def _fraction(scene: shapes.Scene, read: dict[str, str]) -> float:
    wanted = attribute_heads(scene)
    return sum(read[head] == label for head, label in wanted.values()) / len(wanted)


# ----------------------------------------------------------------------- save / load

def save_judge(net: JudgeNet, cfg: JudgeConfig, path: str | os.PathLike) -> Path:
    """Write `model.safetensors` (float16) and `judge.json` into folder `path`, atomically per file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in net.state_dict().items()}
    tmp = path / f".{WEIGHTS_NAME}.tmp"
    save_file(state, str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, path / WEIGHTS_NAME)
    write_atomic(path / CONFIG_NAME, json.dumps(cfg.to_json(), indent=2) + "\n")
    return path


def load_judge(path: str | os.PathLike = DEFAULT_JUDGE, device: str | torch.device = "cpu") -> Judge:
    """A judge from a folder holding `judge.json` and `model.safetensors`."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    cfg_file, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
    if not cfg_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"no judge model in {str(path)!r}: pass a folder holding {CONFIG_NAME} and "
                                f"{WEIGHTS_NAME}, such as datasets/models/shapes-judge")
    cfg = JudgeConfig.from_json(json.loads(cfg_file.read_text()), str(cfg_file))
    net = JudgeNet(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    net.load_state_dict(state)
    return Judge(net, cfg, device=device, name=str(path))


def judge_score(images: torch.Tensor, prompts: Sequence[str], judge: Judge | str | os.PathLike | None = None
                ) -> list[float]:
    """Per image, the fraction of its prompt's attributes recognised (shipped judge by default)."""
    if not isinstance(judge, Judge):
        judge = load_judge(DEFAULT_JUDGE if judge is None else judge)
    return judge.score(images, prompts)
