"""Clip samplers: pure functions of (num_frames, fps, rng) returning frame indices.

Every sampler returns :class:`Clip` objects holding an int64 index array (into the decoded video,
decode-order frame numbers) and flags that say what was done to fit the video:

- ``padded``: the video was too short, and the missing tail repeats the last frame;
- ``looped``: the video was too short, and the whole frame sequence was repeated (BraVe);
- ``valid``: (long-video sampler only) a boolean mask, False on padding positions.

A clip of ``frames`` frames is read either at an integer ``stride`` or at a ``target_fps``; the
latter uses ``step = fps / target_fps`` source frames per output frame and the offsets
``floor(k * step)`` (30 fps at target 15 gives stride 2; 25 fps at target 10 gives 0, 2, 5, 7, 10).

``union_indices`` turns the clips of several views into one sorted index array to decode and,
per view, the positions of its frames in that array ("decode once, cut many views").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from videossl.errors import VideosslError

PLACEMENTS = ("inside_random", "aligned_start", "independent")


@dataclass(frozen=True)
class Clip:
    indices: np.ndarray  # int64 (T,), each in [0, num_frames)
    start: int = 0  # first frame of the window; for looped clips in the looped (virtual) sequence
    padded: bool = False
    looped: bool = False
    valid: np.ndarray | None = None  # bool (T,), long-video sampler only

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def _check(num_frames: int, frames: int) -> None:
    if num_frames <= 0:
        raise VideosslError(f"cannot sample from a video with {num_frames} frames")
    if frames <= 0:
        raise VideosslError(f"a clip needs at least 1 frame, got frames={frames}")


def frame_step(fps: float | None, stride: int = 1, target_fps: float | None = None) -> float:
    """Source frames per output frame: ``stride``, or ``fps / target_fps`` when ``target_fps`` is set."""
    if target_fps is None:
        if stride < 1:
            raise VideosslError(f"stride must be >= 1, got {stride}")
        return float(stride)
    if target_fps <= 0:
        raise VideosslError(f"target_fps must be > 0, got {target_fps}")
    if not fps or fps <= 0:
        raise VideosslError(f"cannot sample at target_fps={target_fps}: the video's fps is unknown ({fps})")
    return float(fps) / float(target_fps)


def clip_offsets(frames: int, step: float) -> np.ndarray:
    """Offsets of a clip's frames from its start: ``floor(k * step)``, k = 0..frames-1."""
    return np.floor(np.arange(frames, dtype=np.float64) * step + 1e-9).astype(np.int64)


def clip_span(frames: int, step: float) -> int:
    """Source frames covered by a clip, first to last inclusive."""
    return int(clip_offsets(frames, step)[-1]) + 1


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _clip_at(start: int, offsets: np.ndarray, num_frames: int) -> Clip:
    idx = start + offsets
    padded = bool(idx[-1] >= num_frames)
    return Clip(np.minimum(idx, num_frames - 1).astype(np.int64), start=int(start), padded=padded)


def random_clip(
    num_frames: int,
    fps: float | None,
    rng: np.random.Generator | int | None,
    frames: int,
    stride: int = 1,
    target_fps: float | None = None,
) -> Clip:
    """One clip of ``frames`` frames at a uniformly random start.

    A video shorter than the clip's span starts at 0 and repeats its last frame (``padded=True``).
    """
    _check(num_frames, frames)
    offsets = clip_offsets(frames, frame_step(fps, stride, target_fps))
    span = int(offsets[-1]) + 1
    start = int(_rng(rng).integers(0, num_frames - span + 1)) if num_frames >= span else 0
    return _clip_at(start, offsets, num_frames)


def uniform_clips(
    num_frames: int,
    fps: float | None,
    num_clips: int,
    frames: int,
    stride: int = 1,
    target_fps: float | None = None,
) -> list[Clip]:
    """``num_clips`` clips with starts evenly spaced from the first to the last possible start.

    Starts are ``round(linspace(0, num_frames - span, K))`` (BraVe's multi-clip evaluation); one clip
    is centred. Short videos give K clips at start 0, padded.
    """
    _check(num_frames, frames)
    if num_clips < 1:
        raise VideosslError(f"num_clips must be >= 1, got {num_clips}")
    offsets = clip_offsets(frames, frame_step(fps, stride, target_fps))
    last_start = max(num_frames - (int(offsets[-1]) + 1), 0)
    if num_clips == 1:
        starts = np.array([last_start // 2])
    else:
        starts = np.round(np.linspace(0, last_start, num_clips)).astype(np.int64)
    return [_clip_at(int(s), offsets, num_frames) for s in starts]


def looped_length(num_frames: int, needed: int) -> int:
    """Length of the sequence repeated whole until it holds ``needed`` frames (BraVe ``extend_sequence``)."""
    return num_frames * max(1, math.ceil(needed / num_frames))


def _looped_clip(start: int, offsets: np.ndarray, num_frames: int) -> Clip:
    virt = start + offsets
    return Clip((virt % num_frames).astype(np.int64), start=int(start), looped=bool(virt[-1] >= num_frames))


def brave_pair(
    num_frames: int,
    fps: float | None,
    rng: np.random.Generator | int | None,
    narrow_frames: int = 16,
    narrow_stride: int = 2,
    broad_frames: int = 64,
    broad_stride: int = 4,
    placement: str = "inside_random",
    narrow_fps: float | None = None,
    broad_fps: float | None = None,
) -> tuple[Clip, Clip]:
    """BraVe's (narrow, broad) windows (arXiv:2103.16559). Short videos are looped whole.

    - ``inside_random``: broad start uniform; narrow start uniform inside the broad window
      (narrow frames ⊂ broad window).
    - ``aligned_start``: narrow start uniform; the broad window starts at the same frame.
    - ``independent``: each start uniform over its own (looped) sequence.

    ``start`` of each clip is in the looped sequence (``index = (start + offset) % num_frames``).
    """
    if placement not in PLACEMENTS:
        raise VideosslError(f"unknown placement {placement!r}: choose one of {', '.join(PLACEMENTS)}")
    _check(num_frames, narrow_frames)
    _check(num_frames, broad_frames)
    rng = _rng(rng)
    n_off = clip_offsets(narrow_frames, frame_step(fps, narrow_stride, narrow_fps))
    b_off = clip_offsets(broad_frames, frame_step(fps, broad_stride, broad_fps))
    n_span, b_span = int(n_off[-1]) + 1, int(b_off[-1]) + 1
    if placement == "inside_random":
        if n_span > b_span:
            raise VideosslError(
                f"placement inside_random needs the narrow span ({n_span} frames) <= the broad span ({b_span})"
            )
        length = looped_length(num_frames, b_span)
        b0 = int(rng.integers(0, length - b_span + 1))
        n0 = b0 + int(rng.integers(0, b_span - n_span + 1))
    elif placement == "aligned_start":
        length = looped_length(num_frames, max(n_span, b_span))
        n0 = b0 = int(rng.integers(0, length - max(n_span, b_span) + 1))
    else:
        n0 = int(rng.integers(0, looped_length(num_frames, n_span) - n_span + 1))
        b0 = int(rng.integers(0, looped_length(num_frames, b_span) - b_span + 1))
    return _looped_clip(n0, n_off, num_frames), _looped_clip(b0, b_off, num_frames)


def long_video_clip(
    num_frames: int,
    fps: float | None,
    target_fps: float,
    max_frames: int,
    rng: np.random.Generator | int | None = None,
) -> Clip:
    """Up to ``max_frames`` frames at ``target_fps`` with a validity mask.

    A video with more frames than fit starts at 0 (``rng=None``, evaluation) or at a uniformly random
    start (``rng`` given). A shorter one gets ``count`` real frames, then repeats of its last sampled
    frame with ``valid=False`` and ``padded=True``.
    """
    _check(num_frames, max_frames)
    step = frame_step(fps, 1, target_fps)
    count = min(max_frames, int(math.floor((num_frames - 1) / step + 1e-9)) + 1)
    offsets = clip_offsets(count, step)
    span = int(offsets[-1]) + 1
    start = int(_rng(rng).integers(0, num_frames - span + 1)) if rng is not None else 0
    idx = np.empty(max_frames, dtype=np.int64)
    idx[:count] = start + offsets
    idx[count:] = idx[count - 1]
    valid = np.zeros(max_frames, dtype=bool)
    valid[:count] = True
    return Clip(idx, start=start, padded=count < max_frames, valid=valid)


def union_indices(clips: Sequence[Clip | np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted unique frame indices of all clips, and per clip the positions of its frames in them.

    ``frames = reader.get_frames(union)`` then ``frames[positions[v]]`` is view ``v``'s clip.
    """
    arrays = [np.asarray(c.indices if isinstance(c, Clip) else c, dtype=np.int64).reshape(-1) for c in clips]
    if not arrays:
        return np.empty(0, np.int64), []
    union, inverse = np.unique(np.concatenate(arrays), return_inverse=True)
    bounds = np.cumsum([0] + [a.size for a in arrays])
    return union.astype(np.int64), [inverse[bounds[i] : bounds[i + 1]].astype(np.int64) for i in range(len(arrays))]


# ------------------------------------------------------------------------------------ view samplers
class SampledView(Protocol):
    """What a view sampler reads of a view spec (:class:`videossl.data.loader.views.ViewSpec`)."""

    sampler: str
    frames: int
    stride: int
    target_fps: float | None
    copies: int
    num_clips: int
    train: bool


def _random_view(v: SampledView, num_frames: int, fps: float, rng: np.random.Generator) -> list[Clip]:
    return [random_clip(num_frames, fps, rng, v.frames, v.stride, v.target_fps) for _ in range(v.copies)]


def _uniform_view(v: SampledView, num_frames: int, fps: float, rng: np.random.Generator) -> list[Clip]:
    return [c for _ in range(v.copies) for c in uniform_clips(num_frames, fps, v.num_clips, v.frames, v.stride, v.target_fps)]


def _long_view(v: SampledView, num_frames: int, fps: float, rng: np.random.Generator) -> list[Clip]:
    random_start = v.train and getattr(v, "random_start", True)
    return [long_video_clip(num_frames, fps, v.target_fps, v.frames, rng if random_start else None) for _ in range(v.copies)]


#: name → the clips of one view (in output order). A new sampler is one function and one entry here.
VIEW_SAMPLERS: dict[str, Callable[[SampledView, int, float, np.random.Generator], list[Clip]]] = {
    "random": _random_view,
    "uniform": _uniform_view,
    "long": _long_view,
}
#: samplers drawn jointly, one clip each, by :func:`brave_pair` (BraVe's narrow and broad views)
PAIR_SAMPLERS = ("narrow", "broad")
SAMPLERS = (*VIEW_SAMPLERS, *PAIR_SAMPLERS)


def sample_views(views: Sequence[SampledView], num_frames: int, fps: float, rng: np.random.Generator,
                 placement: str = "inside_random") -> list[tuple[int, Clip]]:
    """(view index, clip) for every clip of every view, in output order.

    A BraVe pair (one ``narrow`` and one ``broad`` view) is drawn first and jointly with
    ``placement``; every other view then draws from its :data:`VIEW_SAMPLERS` entry, in order.
    """
    pair: dict[str, Clip] = {}
    roles = {v.sampler: v for v in views if v.sampler in PAIR_SAMPLERS}
    if roles:
        nv, bv = roles["narrow"], roles["broad"]
        n, b = brave_pair(num_frames, fps, rng, nv.frames, nv.stride, bv.frames, bv.stride, placement,
                          narrow_fps=nv.target_fps, broad_fps=bv.target_fps)
        pair = {"narrow": n, "broad": b}
    out: list[tuple[int, Clip]] = []
    for i, v in enumerate(views):
        clips = [pair[v.sampler]] if v.sampler in pair else VIEW_SAMPLERS[v.sampler](v, num_frames, fps, rng)
        out += [(i, c) for c in clips]
    return out


# ------------------------------------------------------------------------------- variable frame rate
def retime(clip: Clip, times: np.ndarray, fps: float) -> Clip:
    """A clip drawn by index on a variable-frame-rate video, moved to the frames shown at its times.

    Samplers space frames by index at ``fps`` (the video's nominal rate), which is spacing by time only at
    a constant rate. For a VFR video (``times``: each frame's presentation time in seconds, increasing,
    as the shard maker records them) index ``v`` is read as the time ``times[0] + v / fps`` and replaced
    by the frame nearest to that time. Indices stay in range and in order; a constant-rate video at
    ``fps`` is unchanged.
    """
    times = np.asarray(times, dtype=np.float64)
    n = times.shape[0]
    if n < 2 or not fps or fps <= 0 or not (np.diff(times) > 0).all():
        return clip
    at = times[0] + clip.indices.astype(np.float64) / float(fps)
    after = np.clip(np.searchsorted(times, at), 1, n - 1)  # times[after - 1] < at <= times[after] inside the video
    nearer_before = (at - times[after - 1]) <= (times[after] - at)
    idx = np.where(nearer_before, after - 1, after).astype(np.int64)
    return Clip(idx, clip.start, clip.padded, clip.looped, clip.valid)
