"""View specs: how each view of a sample is sampled (a :data:`~videossl.data.loader.sampling.SAMPLERS`
name) and transformed (random augmentation for training, resize + crops for evaluation)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from videossl.data.loader import sampling
from videossl.data.loader.transforms import AugmentConfig
from videossl.errors import VideosslError

__all__ = ["MAX_DECODE_SCALE", "ViewSpec", "check_views", "decode_scale", "needed_scale"]


@dataclass
class ViewSpec:
    """One view: how its frames are sampled and how they are transformed.

    ``sampler``: ``random`` (``frames`` at ``stride`` or ``target_fps``, random start), ``uniform``
    (``num_clips`` evenly spaced clips), ``long`` (up to ``frames`` frames at ``target_fps`` with a
    validity mask; in training from a random start, or from the video's start with ``random_start:
    false`` as the long-video paper's stage 2 samples, arXiv:2312.07395 §4), ``narrow`` / ``broad``
    (the BraVe pair, drawn jointly with ``placement``).
    ``train=True``: random augmentation (``augment``) to ``size``; ``train=False``: the eval
    transform (resize the short side to ``resize`` or ``size``, then ``crops`` crops); ``augment``'s
    ``output``/``mean``/``std`` set the output type in both cases. ``copies`` independent draws of
    the view (2 for SimCLR-style contrastive views). A sample's ``views`` list holds, in order, for
    each spec, each copy / clip, each crop, one tensor ``(T, 3, size, size)``.
    """

    name: str = "clip"
    sampler: str = "random"
    frames: int = 16
    stride: int = 2
    target_fps: float | None = None
    size: int = 224
    train: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_clips: int = 1
    crops: int = 1
    resize: int | None = None
    copies: int = 1
    random_start: bool = True  # training, sampler "long": a random start; False = from the video's start

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.sampler not in sampling.SAMPLERS:
            raise VideosslError(f"view {self.name!r}: unknown sampler {self.sampler!r} "
                                f"(choose one of {', '.join(sampling.SAMPLERS)})")
        if self.frames < 1 or self.size < 1 or self.copies < 1 or self.num_clips < 1 or self.crops < 1:
            raise VideosslError(f"view {self.name!r}: frames, size, copies, num_clips and crops must be >= 1")
        if self.sampler == "long" and not self.target_fps:
            raise VideosslError(f"view {self.name!r}: the long-video sampler needs target_fps")
        if self.sampler in ("narrow", "broad") and self.copies != 1:
            raise VideosslError(f"view {self.name!r}: a BraVe {self.sampler} view has copies=1")
        if self.train and self.crops != 1:
            raise VideosslError(f"view {self.name!r}: crops > 1 is an eval option (train=False)")

    @property
    def num_outputs(self) -> int:
        n = self.copies * (self.num_clips if self.sampler == "uniform" else 1)
        return n * (1 if self.train else self.crops)

    def out_bytes(self) -> int:
        per = 1 if self.augment.output == "uint8" else 4
        return self.num_outputs * self.frames * self.size * self.size * 3 * per


#: decode-side downscaling applies only when every view needs at most this fraction of the source size
MAX_DECODE_SCALE = 0.75


def needed_scale(v: ViewSpec, height: int, width: int) -> float:
    """The smallest factor the source frames can be scaled by, for view ``v``, with no crop of the view
    then needing more upsampling than at full size: a training view's smallest random-resized crop
    (area ``scale[0]``, aspect ``ratio`` extremes) must stay >= ``size`` px; an eval view's short side is
    resized to ``resize`` (or ``size``) anyway. Rotation-invariant (depends on ``H * W`` and ``min(H, W)``)."""
    if not v.train:
        return (v.resize or v.size) / min(height, width)
    a = v.augment
    area = height * width * a.scale[0]
    smallest = min(math.sqrt(area / a.ratio[1]), math.sqrt(area * a.ratio[0]), height, width)
    return v.size / smallest


def decode_scale(views: Sequence[ViewSpec], height: int, width: int, max_scale: float = MAX_DECODE_SCALE) -> float | None:
    """The factor to decode a ``height`` x ``width`` source at for these views, or None (full size) when
    some view needs more than ``max_scale`` of it (too little to gain)."""
    if height <= 0 or width <= 0:
        return None
    s = max(needed_scale(v, height, width) for v in views)
    return s if s <= max_scale else None


def check_views(views: Sequence[ViewSpec], placement: str) -> list[ViewSpec]:
    views = [ViewSpec(**v) if isinstance(v, dict) else v for v in views]
    if not views:
        raise VideosslError("no views configured: give at least one ViewSpec")
    kinds = Counter(v.sampler for v in views)
    if kinds["narrow"] or kinds["broad"]:
        if kinds["narrow"] != 1 or kinds["broad"] != 1:
            raise VideosslError("a BraVe pair needs exactly one 'narrow' and one 'broad' view")
        if placement not in sampling.PLACEMENTS:
            raise VideosslError(f"unknown placement {placement!r}: choose one of {', '.join(sampling.PLACEMENTS)}")
    return views
