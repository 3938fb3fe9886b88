"""Tokenizers that need no download: a byte-level CLIP BPE and a small T5 unigram.

The `arch` and `tiny` presets must load with no network, yet their pipelines still
tokenize prompts. These tokenizers are built in code, deterministically, so every
machine gets the same ids for the same prompt. They are small (a few hundred tokens):
the `arch` text encoders keep their real vocabulary sizes, and since every id here is
below those sizes the embedding shapes and compute are the real ones; only which rows
of the (random) embeddings get used differs from the real tokenizer.

The CLIP tokenizer keeps CLIP's conventions that the models depend on: lower-casing,
``</w>`` word ends, 77 positions, and ``<|startoftext|>``/``<|endoftext|>`` as the two
highest ids, because `CLIPTextModel` pools at the arg-max id when its config says
``eos_token_id=2`` (as the real SD configs do).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

# Text the BPE merges are learned from: words that diffusion prompts are made of.
_CORPUS = """
a photo of the portrait painting of an old man woman child cat dog bird horse city street
at night in the rain with light and shadow on a table by the window under a blue sky over
mountains river lake forest sea ocean beach sunset sunrise morning evening golden hour
cinematic lighting highly detailed sharp focus digital art oil painting watercolor sketch
illustration render octane unreal engine concept art trending on artstation studio photo
red green blue yellow orange purple black white gray wooden stone glass metal futuristic
ancient castle tower bridge house garden flowers tree leaves snow winter summer autumn
spring close up wide angle macro view landscape architecture interior kitchen library
robot astronaut knight wizard dragon ship car train bicycle coffee cup bowl fruit bread
"""

_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
N_MERGES = 400


def _byte_alphabet() -> list[str]:
    # GPT-2/CLIP's byte-to-unicode table: every byte maps to a printable character,
    # so any UTF-8 prompt tokenizes without an unknown token.
    from tokenizers.pre_tokenizers import ByteLevel

    return sorted(ByteLevel.alphabet())


def _learn_merges(words: list[str], n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE: repeatedly merge the most frequent adjacent pair (ties by text)."""
    seqs = Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words if w)
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for seq, n in seqs.items():
            for a, b in zip(seq, seq[1:], strict=False):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter = Counter()
        for seq, n in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            merged[tuple(out)] += n
        seqs = merged
    return merges


def _shapes_corpus() -> str:
    # The `shapes` model's captions use a closed vocabulary (sweep.shapes); repeating it
    # makes each of its words a single token, learned before the general merges.
    from sweep import shapes

    words = [*shapes.SHAPES, *shapes.COLOURS, *shapes.SIZES, *shapes.BACKGROUNDS, *shapes.RELATIONS,
             "a", "on", "background"]
    return _CORPUS + " ".join(words * 20)


@lru_cache(maxsize=2)
def _clip_vocab_and_merges(corpus: str = "general") -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    alphabet = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    for c in alphabet:
        vocab[c + "</w>"] = len(vocab)
    text = {"general": _CORPUS, "shapes": None}[corpus] or _shapes_corpus()
    merges = _learn_merges(re.findall(r"[a-z]+", text.lower()), N_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for s in _SPECIALS:
        vocab[s] = len(vocab)
    return vocab, tuple(merges)


def clip_tokenizer(pad_token: str = "<|endoftext|>", corpus: str = "general"):
    """A CLIP BPE tokenizer (77 positions). SD 1.5 pads with ``<|endoftext|>``;
    SD 2.1 and SDXL's second encoder pad with ``!``. `corpus` 'shapes' learns the merges
    with the `shapes` captions' words added (whole-word tokens; the trained `shapes`
    model ships this tokenizer in its folder); 'general' is every other preset's."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_vocab_and_merges(corpus)
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)


def clip_vocab_size(corpus: str = "general") -> int:
    return len(_clip_vocab_and_merges(corpus)[0])


@lru_cache(maxsize=1)
def _t5_pieces() -> tuple[tuple[str, float], ...]:
    # Unigram pieces: specials first (T5's ids: pad 0, eos 1, unk 2), then whole words
    # preceded by the word-start mark, then single characters so nothing is unknown.
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    words = sorted(set(re.findall(r"[a-z]+", _CORPUS.lower())))
    pieces += [("\u2581" + w, -2.0 - 0.01 * i) for i, w in enumerate(words)]
    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()/&"
    pieces += [(c, -8.0) for c in chars] + [("\u2581" + c, -7.0) for c in chars]
    return tuple(pieces)


def t5_tokenizer():
    """A T5 unigram tokenizer with T5's special ids (pad 0, eos 1, unk 2), no sentinels."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=list(_t5_pieces()), extra_ids=0)


def t5_vocab_size() -> int:
    return len(_t5_pieces())
