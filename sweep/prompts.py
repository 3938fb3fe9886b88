"""Prompt sets: the shipped default set and users' own files.

A prompt file is one of:

* ``.txt``: one prompt per line; blank lines and lines starting with ``#`` are skipped;
* ``.jsonl``: one JSON object per line with a ``prompt`` field (other fields ignored);
* ``.csv``: a header row with a ``prompt`` column.

The default set (``datasets/prompts/default.txt``, 40 prompts) mixes photographs,
paintings, illustrations and renders; people, animals, food, places and objects; so
that a quality budget is not tuned to one kind of image.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "datasets" / "prompts" / "default.txt"


class PromptFileError(ValueError):
    """A prompt file that is missing, empty or malformed; the message says how to fix it."""


def load_prompts(path: str | Path | None = None, n: int | None = None) -> list[str]:
    """The prompts of `path` (the default set when None), the first `n` of them if given."""
    path = Path(path) if path is not None else DEFAULT_PROMPTS
    if not path.exists():
        raise PromptFileError(f"prompt file {str(path)!r} does not exist: pass a .txt (one prompt per line), "
                              ".jsonl or .csv file with a 'prompt' field")
    if path.is_dir():
        raise PromptFileError(f"{str(path)!r} is a folder: pass a prompt file inside it")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        prompts = _from_jsonl(path, text)
    elif suffix == ".csv":
        prompts = _from_csv(path, text)
    else:
        prompts = [line.strip() for line in text.splitlines()]
        prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise PromptFileError(f"prompt file {str(path)!r} has no prompts: add at least one "
                              "(one per line for .txt, a 'prompt' field for .jsonl/.csv)")
    if n is not None:
        if n < 1:
            raise PromptFileError(f"n={n}: ask for at least one prompt")
        if n > len(prompts):
            raise PromptFileError(f"asked for {n} prompts but {str(path)!r} has {len(prompts)}: "
                                  f"ask for at most {len(prompts)} or add prompts")
        prompts = prompts[:n]
    return prompts


def _from_jsonl(path: Path, text: str) -> list[str]:
    prompts = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(f"{path}:{i} is not JSON ({e.msg}): write one object per line, "
                                  '{"prompt": "..."}') from None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise PromptFileError(f'{path}:{i} has no "prompt" string: write {{"prompt": "..."}} on each line')
        if obj["prompt"].strip():
            prompts.append(obj["prompt"].strip())
    return prompts


def _from_csv(path: Path, text: str) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        raise PromptFileError(f"{path} has no 'prompt' column (columns: {reader.fieldnames}): "
                              "add a header row with a 'prompt' column")
    return [row["prompt"].strip() for row in reader if row.get("prompt") and row["prompt"].strip()]


def default_seeds(n: int, start: int = 0) -> list[int]:
    """One seed per prompt: prompt i is always generated with seed start + i."""
    return list(range(start, start + n))
