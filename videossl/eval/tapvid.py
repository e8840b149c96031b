"""TAP-Vid metrics and query sampling (Doersch et al., "TAP-Vid: A Benchmark for Tracking Any Point in a
Video", arXiv:2211.03726, §3 "Evaluation metrics" and §4), in numpy; no TensorFlow.

Conventions (those of the TAP-Vid evaluation code):

* every coordinate is in pixels of a 256×256 frame. TAP-Vid stores points normalised to [0, 1] over the
  frame's extent and multiplies them by 256; the synthetic set puts pixel centres at integers, so its
  pixel centre ``j`` of a W-px frame is at ``(j + 0.5)·256/W`` (:func:`to_256`). The thresholds
  δ ∈ {1, 2, 4, 8, 16} px thus keep their meaning at any source size;
* queries are ``(t, y, x)``, tracks ``(x, y)``; ``occluded`` is True where the point is not visible;
* mode ``first``: one query per track at its first visible frame, scored on the frames *after* it;
  mode ``strided``: a query every 5 frames at every track visible there, scored on every frame but
  the query frame (the query frame itself is never scored);
* OA = mean(predicted occluded == GT occluded); <δ = fraction of GT-visible points within δ (strictly:
  squared distance < δ²), whatever the predicted visibility; δ_avg = its mean over the five δ;
  Jaccard_δ = TP / (GT-visible + FP), TP = GT-visible ∧ predicted visible ∧ within δ,
  FP = predicted visible ∧ (GT-occluded ∨ beyond δ); AJ = mean of Jaccard_δ;
  every metric per video, then averaged over videos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from videossl.errors import VideosslError

THRESHOLDS = (1, 2, 4, 8, 16)
QUERY_MODES = ("first", "strided")
RESOLUTION = 256
QUERY_STRIDE = 5

__all__ = ["QUERY_MODES", "QUERY_STRIDE", "RESOLUTION", "THRESHOLDS", "Queries", "evaluation_mask", "mean_metrics",
           "sample_queries", "sample_queries_first", "sample_queries_strided", "tapvid_metrics", "to_256"]


def to_256(points: np.ndarray, width: int, height: int, pixel_centres_at_integers: bool = True) -> np.ndarray:
    """(…, 2) (x, y) points of a ``width``×``height`` frame → pixels of a 256×256 frame.

    With ``pixel_centres_at_integers`` (the synthetic set: pixel (i, j) is centred at (j, i)) a point is first
    shifted by half a pixel to the frame-extent convention of TAP-Vid's normalised points."""
    p = np.asarray(points, np.float64)
    off = 0.5 if pixel_centres_at_integers else 0.0
    scale = np.array([RESOLUTION / width, RESOLUTION / height])
    return (p + off) * scale


def from_256(points: np.ndarray, width: int, height: int, pixel_centres_at_integers: bool = True) -> np.ndarray:
    """Inverse of :func:`to_256`."""
    p = np.asarray(points, np.float64)
    off = 0.5 if pixel_centres_at_integers else 0.0
    return p / np.array([RESOLUTION / width, RESOLUTION / height]) - off


@dataclass
class Queries:
    """One video's queries and their targets: ``points`` (Q, 3) (t, y, x), ``target`` (Q, T, 2) (x, y),
    ``occluded`` (Q, T) bool, ``track`` (Q,) the track each query came from."""

    points: np.ndarray
    target: np.ndarray
    occluded: np.ndarray
    track: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def sample_queries_first(target: np.ndarray, occluded: np.ndarray) -> Queries:
    """Mode ``first`` (arXiv:2211.03726 §4): one query per track at its first visible frame; tracks never visible
    are dropped. ``target`` (N, T, 2) (x, y), ``occluded`` (N, T)."""
    target, occluded = np.asarray(target, np.float64), np.asarray(occluded, bool)
    vis = ~occluded
    keep = np.flatnonzero(vis.any(1))
    t0 = vis[keep].argmax(1)
    xy = target[keep, t0]
    pts = np.stack([t0, xy[:, 1], xy[:, 0]], 1) if len(keep) else np.zeros((0, 3))
    return Queries(pts.astype(np.float64), target[keep], occluded[keep], keep)


def sample_queries_strided(target: np.ndarray, occluded: np.ndarray, stride: int = QUERY_STRIDE) -> Queries:
    """Mode ``strided``: at frames 0, stride, 2·stride, … a query for every track visible there."""
    target, occluded = np.asarray(target, np.float64), np.asarray(occluded, bool)
    rows: list[tuple[int, int]] = []
    for t in range(0, target.shape[1], stride):
        rows += [(int(n), t) for n in np.flatnonzero(~occluded[:, t])]
    if not rows:
        return Queries(np.zeros((0, 3)), target[:0], occluded[:0], np.zeros(0, int))
    n, t = np.array(rows).T
    xy = target[n, t]
    pts = np.stack([t, xy[:, 1], xy[:, 0]], 1).astype(np.float64)
    return Queries(pts, target[n], occluded[n], n)


def sample_queries(target: np.ndarray, occluded: np.ndarray, mode: str) -> Queries:
    if mode == "first":
        return sample_queries_first(target, occluded)
    if mode == "strided":
        return sample_queries_strided(target, occluded)
    raise VideosslError(f"unknown query mode {mode!r}; choose one of {', '.join(QUERY_MODES)}")


def evaluation_mask(query_t: np.ndarray, num_frames: int, mode: str) -> np.ndarray:
    """(Q, T) bool: the frames each query is scored on (``first``: t > t_q; ``strided``: t ≠ t_q)."""
    if mode not in QUERY_MODES:
        raise VideosslError(f"unknown query mode {mode!r}; choose one of {', '.join(QUERY_MODES)}")
    tq = np.round(np.asarray(query_t)).astype(int)[:, None]
    t = np.arange(num_frames)[None, :]
    return t > tq if mode == "first" else t != tq


def tapvid_metrics(query_points: np.ndarray, gt_occluded: np.ndarray, gt_tracks: np.ndarray, pred_occluded: np.ndarray,
                   pred_tracks: np.ndarray, mode: str, thresholds=THRESHOLDS) -> dict[str, float]:
    """The TAP-Vid metrics of ONE video (coordinates already at 256×256).

    ``query_points`` (Q, 3) (t, y, x); ``gt_occluded`` / ``pred_occluded`` (Q, T) bool; ``gt_tracks`` /
    ``pred_tracks`` (Q, T, 2) (x, y). Returns ``occlusion_accuracy``, ``pts_within_{δ}``, ``jaccard_{δ}``,
    ``average_pts_within_thresh`` (δ_avg) and ``average_jaccard`` (AJ); NaN where a count is zero."""
    gt_occ, pred_occ = np.asarray(gt_occluded, bool), np.asarray(pred_occluded, bool)
    gt, pred = np.asarray(gt_tracks, np.float64), np.asarray(pred_tracks, np.float64)
    if gt.shape != pred.shape or gt_occ.shape != pred_occ.shape or gt.shape[:2] != gt_occ.shape:
        raise VideosslError(f"shape mismatch: tracks {gt.shape} vs {pred.shape}, occlusion {gt_occ.shape} vs {pred_occ.shape}")
    ev = evaluation_mask(np.asarray(query_points)[:, 0], gt.shape[1], mode)

    def ratio(a: float, b: float) -> float:
        return float(a) / float(b) if b > 0 else float("nan")

    out = {"occlusion_accuracy": ratio(((pred_occ == gt_occ) & ev).sum(), ev.sum())}
    vis, pvis = ~gt_occ, ~pred_occ
    n_vis = (vis & ev).sum()
    d2 = ((pred - gt) ** 2).sum(-1)
    within_all, jac_all = [], []
    for th in thresholds:
        within = d2 < th * th
        correct = within & vis
        frac = ratio((correct & ev).sum(), n_vis)
        tp = (correct & pvis & ev).sum()
        fp = ((~vis | ~within) & pvis & ev).sum()
        jac = ratio(tp, n_vis + fp)
        out[f"pts_within_{th}"], out[f"jaccard_{th}"] = frac, jac
        within_all.append(frac)
        jac_all.append(jac)
    out["average_pts_within_thresh"] = float(np.mean(within_all))
    out["average_jaccard"] = float(np.mean(jac_all))
    return out


def mean_metrics(per_video: list[dict[str, float]]) -> dict[str, float]:
    """Mean over videos of every metric (NaNs, e.g. a video without a visible scored point, skipped)."""
    keys = sorted({k for d in per_video for k in d if isinstance(d[k], float | int)})
    out = {}
    for k in keys:
        vals = np.array([d[k] for d in per_video if k in d], np.float64)
        vals = vals[~np.isnan(vals)]
        out[k] = float(vals.mean()) if len(vals) else float("nan")
    return out
