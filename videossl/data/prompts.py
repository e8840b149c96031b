"""Text of the data: class-name prompts (captions for labelled datasets, zero-shot class embeddings),
motion-swapped captions (hard negatives) and caption identity (:func:`caption_ids`).

``class_phrase`` turns a class name into words (UCF101 CamelCase split, HMDB51/Kinetics
underscores → spaces; the synthetic motion classes use the generator's own motion phrases);
``class_prompts`` wraps it in templates. Training on a labelled set draws one template per sample;
zero-shot evaluation averages the (normalised) embeddings of every template of a class.
"""

from __future__ import annotations

import hashlib
import re

import torch

from videossl.data.shards.synthetic import CLASSES, MOTION_PHRASES
from videossl.data.shards.synthetic_long import long_caption, long_caption_events
from videossl.errors import VideosslError

__all__ = ["TEMPLATES", "caption_ids", "SYNTHETIC_TEMPLATES", "class_phrase", "class_prompts", "dataset_kind", "motion_swapped",
           "motion_swaps", "order_shuffles", "with_motion"]

TEMPLATES = (
    "a video of a person {}.",
    "a person {}.",
    "someone is doing {}.",
    "a clip of {}.",
    "a video of {}.",
)
SYNTHETIC_TEMPLATES = ("a shape {}", "an object {} over a background", "a {}")


def dataset_kind(classes: list[str] | None) -> str:
    """``synthetic`` when the class list is the synthetic motion set, else ``generic``."""
    return "synthetic" if classes and set(classes) <= set(CLASSES) else "generic"


def class_phrase(name: str) -> str:
    """``ApplyEyeMakeup`` → ``apply eye makeup``; ``brush_hair`` → ``brush hair``; ``playing guitar`` as is."""
    s = name.replace("_", " ").replace("-", " ")
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", s)
    return re.sub(r"\s+", " ", s).strip().lower()


def class_prompts(name: str, kind: str = "generic") -> list[str]:
    """Every prompt of one class (synthetic: the generator's motion phrases × templates)."""
    if kind == "synthetic":
        return [t.format(p) for p in MOTION_PHRASES[name] for t in SYNTHETIC_TEMPLATES]
    phrase = class_phrase(name)
    return [t.format(phrase) for t in TEMPLATES]


def _find_motion_phrase(caption: str) -> tuple[str, int, str] | None:
    """(class, start, phrase) of the longest synthetic motion phrase in ``caption``, or ``None``."""
    found = None
    for cls, phrases in MOTION_PHRASES.items():
        for ph in phrases:
            i = caption.find(ph)
            if i >= 0 and (found is None or len(ph) > len(found[2])):
                found = (cls, i, ph)
    return found


def _splice(caption: str, found: tuple[str, int, str], phrase: str) -> str:
    _, i, old = found
    return caption[:i] + phrase + caption[i + len(old):]


def motion_swaps(caption: str, k: int = 1, generator: torch.Generator | None = None) -> list[str] | None:
    """``k`` copies of the caption, each with its synthetic motion phrase replaced by a phrase of
    *another* motion class (classes drawn without replacement): hard negatives that differ from the
    caption in the motion only (Papalampidi et al., arXiv:2312.07395, on hard negatives: "same objects with another
    direction"). ``None`` when the caption holds no motion phrase of the synthetic generator."""
    found = _find_motion_phrase(caption)
    if found is None:
        return None
    others = [c for c in MOTION_PHRASES if c != found[0]]
    if not 1 <= k <= len(others):
        raise VideosslError(f"motion_swapped: k must be in 1..{len(others)}, got {k}")
    out = []
    for j in torch.randperm(len(others), generator=generator)[:k].tolist():
        qs = MOTION_PHRASES[others[j]]
        out.append(_splice(caption, found, qs[int(torch.randint(len(qs), (), generator=generator))]))
    return out


def motion_swapped(caption: str, generator: torch.Generator | None = None, k: int = 1) -> str | list[str] | None:
    """One motion-swapped caption ("a red star moving left over …" → "a red star rising over …"), or a
    list of ``k`` (:func:`motion_swaps`); ``None`` when the caption holds no motion phrase."""
    out = motion_swaps(caption, k, generator)
    return out if out is None or k > 1 else out[0]


def order_shuffles(caption: str, k: int = 1, generator: torch.Generator | None = None,
                   tries: int = 8) -> list[str] | None:
    """Up to ``k`` distinct copies of a long caption ("first A, then B, …, finally Z") with the same events in
    other orders: hard negatives that differ from the caption in the order of its events only (spec §10.3:
    "same events in another order"). Each is a random permutation (``generator``) whose caption differs from
    ``caption`` and from the others; fewer than ``k`` when ``tries`` × ``k`` draws find no more (three events hold
    at most five other orders, repeated events fewer). ``None`` when ``caption`` is not a long caption or no
    other order exists (e.g. every event the same)."""
    events = long_caption_events(caption)
    if events is None or len(set(events)) < 2:
        return None
    if k < 1:
        raise VideosslError(f"order_shuffles: k must be at least 1, got {k}")
    out: list[str] = []
    for _ in range(tries * k):
        cand = long_caption([events[i] for i in torch.randperm(len(events), generator=generator).tolist()])
        if cand != caption and cand not in out:
            out.append(cand)
            if len(out) == k:
                break
    return out or None


def with_motion(caption: str, cls: str) -> list[str] | None:
    """The caption once per motion phrase of synthetic class ``cls`` (everything else unchanged);
    ``None`` when the caption holds no motion phrase. Zero-shot with the appearance held fixed."""
    found = _find_motion_phrase(caption)
    return None if found is None else [_splice(caption, found, q) for q in MOTION_PHRASES[cls]]


def caption_ids(captions: list[str], device=None) -> torch.Tensor:
    """(B,) int64 ids equal iff the (whitespace/case-normalised) captions are equal; stable across processes."""
    out = []
    for c in captions:
        key = " ".join(str(c).lower().split()).encode()
        out.append(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little", signed=True))
    return torch.tensor(out, dtype=torch.long, device=device)
