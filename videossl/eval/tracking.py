"""Point trackers for ``videossl eval tap``: baselines (static, chained flow) and the frozen-feature
correspondence probe of any encoder with a dense feature map.

Every tracker answers one video's queries: given ``queries`` (Q, 3) (t, y, x) in pixels of the video's own
frame (pixel centres at integer coordinates) it returns ``(tracks (Q, T, 2) (x, y), occluded (Q, T) bool)``
in the same pixels; the TAP-Vid metrics then scale both to 256×256 (:mod:`videossl.eval.tapvid`).

* **static**: the query position on every frame, always visible (TAP-Vid's trivial baseline).
* **chained flow**: the query point is moved frame to frame by a dense flow, forwards from the query frame with
  ``p_{t+1} = p_t + F_t(p_t)`` and backwards with ``p_{t−1} = p_t + B_t(p_t)`` (bilinear flow look-up).
  The ground-truth oracle reads the synthetic set's flow and masks: while the point is on its own object
  (mask label at the query), the flow at the point; when hidden, a least-squares affine motion fitted to the
  flow of the object's visible pixels (the synthetic motions are similarities, so this is exact up to the
  pixel grid), and it predicts "occluded" where the mask at the point is not the object or the point
  is out of the frame. The flow-autoencoder tracker chains the *forecast* backward flows B_{t+1→t}
  (arXiv:1511.06309 §2): forwards by inverting them with a fixed-point iteration ``q = p − B(q)``,
  backwards directly; occluded only outside the frame.
* **correspondence probe** (frozen features, in the spirit of the TAP-Vid paper's feature-matching
  baselines, arXiv:2211.03726 §5): the query's feature is sampled bilinearly from the encoder's map at the
  nearest feature time index, its cosine similarity to every location of each frame's map (nearest time
  index) is taken, and the position is the soft-argmax (temperature ``tau``) within ``window`` cells of the
  argmax; a point is predicted occluded where the best similarity is below a threshold fitted on the
  validation split (:func:`fit_threshold`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from videossl.errors import VideosslError
from videossl.eval.tapvid import mean_metrics, tapvid_metrics, to_256

__all__ = ["bilinear", "chain", "correspondence", "dense_features", "fit_threshold", "flow_ae_tracks", "gt_flow_tracks",
           "static_tracks"]

Step = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


def bilinear(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Sample ``field`` (H, W, C) at ``pts`` (P, 2) (x, y) bilinearly, coordinates clamped to the frame."""
    H, W = field.shape[:2]
    x = np.clip(pts[:, 0], 0, W - 1)
    y = np.clip(pts[:, 1], 0, H - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    wx, wy = (x - x0)[:, None], (y - y0)[:, None]
    return ((1 - wy) * ((1 - wx) * field[y0, x0] + wx * field[y0, x1])
            + wy * ((1 - wx) * field[y1, x0] + wx * field[y1, x1]))


def static_tracks(queries: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    xy = np.asarray(queries, np.float64)[:, [2, 1]]
    return np.repeat(xy[:, None], num_frames, 1), np.zeros((len(xy), num_frames), bool)


def chain(queries: np.ndarray, num_frames: int, forward: Step, backward: Step) -> np.ndarray:
    """Chain the query points through time. ``forward(t, pts, idx)`` → positions at t+1 of the points at t;
    ``backward(t, pts, idx)`` → positions at t−1 (``idx``: which queries they are). Returns (Q, T, 2)."""
    q = np.asarray(queries, np.float64)
    out = np.zeros((len(q), num_frames, 2))
    tq = np.round(q[:, 0]).astype(int)
    for t0 in np.unique(tq):
        idx = np.flatnonzero(tq == t0)
        p = q[idx][:, [2, 1]].copy()
        out[idx, t0] = p
        for t in range(t0, num_frames - 1):
            p = forward(t, p, idx)
            out[idx, t + 1] = p
        p = out[idx, t0].copy()
        for t in range(t0, 0, -1):
            p = backward(t, p, idx)
            out[idx, t - 1] = p
    return out


def _inside(pts: np.ndarray, H: int, W: int) -> np.ndarray:
    return (pts[:, 0] > -0.5) & (pts[:, 0] < W - 0.5) & (pts[:, 1] > -0.5) & (pts[:, 1] < H - 0.5)


def _labels_at(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    H, W = mask.shape
    x = np.clip(np.round(pts[:, 0]).astype(int), 0, W - 1)
    y = np.clip(np.round(pts[:, 1]).astype(int), 0, H - 1)
    lab = mask[y, x].astype(int)
    return np.where(_inside(pts, H, W), lab, -1)


def _affine(mask: np.ndarray, flow: np.ndarray, label: int) -> np.ndarray | None:
    """(3, 2) least-squares affine map p → p + flow(p) over the pixels of ``label`` (None if under 3 pixels)."""
    ys, xs = np.nonzero(mask == label)
    if len(xs) < 3:
        return None
    src = np.stack([xs, ys, np.ones_like(xs)], 1).astype(np.float64)
    dst = src[:, :2] + flow[ys, xs]
    A, *_ = np.linalg.lstsq(src, dst, rcond=None)
    return A


def gt_flow_tracks(queries: np.ndarray, forward: np.ndarray, backward: np.ndarray, mask: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The ground-truth-flow oracle (see the module docstring). ``forward`` / ``backward`` (T−1, H, W, 2) (dx, dy)
    as in the synthetic set's ``flow.npz``; ``mask`` (T, H, W) labels."""
    T, H, W = mask.shape
    q = np.asarray(queries, np.float64)
    tq = np.round(q[:, 0]).astype(int)
    labels = _labels_at_frames(mask, tq, q[:, [2, 1]])
    cache: dict[tuple[str, int, int], np.ndarray | None] = {}

    def move(pts: np.ndarray, idx: np.ndarray, m: np.ndarray, flow: np.ndarray, key: tuple[str, int]) -> np.ndarray:
        lab = labels[idx]
        on = _labels_at(m, pts) == lab
        out = pts + bilinear(flow, pts)
        for la in np.unique(lab[~on]):
            k = (*key, int(la))
            if k not in cache:
                cache[k] = _affine(m, flow, int(la))
            A = cache[k]
            sel = ~on & (lab == la)
            if A is not None:
                out[sel] = np.concatenate([pts[sel], np.ones((sel.sum(), 1))], 1) @ A
        return out

    tracks = chain(q, T, lambda t, p, i: move(p, i, mask[t], forward[t], ("f", t)),
                   lambda t, p, i: move(p, i, mask[t], backward[t - 1], ("b", t)))
    occ = np.zeros((len(q), T), bool)
    for t in range(T):
        occ[:, t] = _labels_at(mask[t], tracks[:, t]) != labels
    return tracks, occ


def _labels_at_frames(mask: np.ndarray, t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.array([_labels_at(mask[ti], p[None])[0] for ti, p in zip(t, pts, strict=True)], int)


def flow_ae_tracks(queries: np.ndarray, flows: np.ndarray, num_frames: int, size: tuple[int, int],
                   iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Chain forecast backward flows. ``flows`` (T−1, H, W, 2): entry t = B_{t+1→t} at the pixels of frame t+1
    (zero where the model made no forecast, e.g. the burn-in steps)."""
    H, W = size

    def fwd(t: int, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        q = p.copy()
        for _ in range(iterations):  # q + B(q) = p
            q = p - bilinear(flows[t], q)
        return q

    def bwd(t: int, p: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return p + bilinear(flows[t - 1], p)

    tracks = chain(queries, num_frames, fwd, bwd)
    occ = ~np.stack([_inside(tracks[:, t], H, W) for t in range(num_frames)], 1)
    return tracks, occ


# ------------------------------------------------------------------------------------ correspondence probe
def _nearest_index(t: np.ndarray | int, num_frames: int, num_feat: int) -> np.ndarray:
    """Feature time index nearest to frame ``t`` (frame t covers [t, t+1) of T; index k covers [k, k+1)·T/T')."""
    k = np.floor((np.asarray(t, np.float64) + 0.5) * num_feat / num_frames)
    return np.clip(k, 0, num_feat - 1).astype(int)


@torch.no_grad()
def dense_features(encoder: torch.nn.Module, clip: torch.Tensor) -> torch.Tensor:
    """The encoder's ``forward_features`` of one clip (1, C, T, H, W), L2-normalised over channels: (C, T', h, w)."""
    if not hasattr(encoder, "forward_features"):
        raise VideosslError(f"{type(encoder).__name__} has no forward_features(): the correspondence probe needs a "
                            "dense per-frame feature map (Small3D, VideoResNetEncoder, TSMResNet, FlowEncoder, ViViT)")
    feats = encoder.forward_features(clip).float()  # (1, C, T', h, w)
    if feats.ndim != 5:
        raise VideosslError(f"forward_features must return (B, C, T', H', W'), got {tuple(feats.shape)}")
    return F.normalize(feats[0], dim=0).cpu()


@torch.no_grad()
def correspondence(encoder: torch.nn.Module | None, clip: torch.Tensor, queries: np.ndarray, tau: float = 0.05,
                   window: int = 2, feats: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frozen-feature correspondence of one video. ``clip`` (1, C, T, H, W) float as the encoder takes it;
    ``feats``: its :func:`dense_features` if already computed (then ``encoder`` is not called).

    Returns (tracks (Q, T, 2) in pixels, best cosine similarity (Q, T)); the query frame gets the query itself."""
    T, H, W = clip.shape[2:]
    feats = dense_features(encoder, clip) if feats is None else feats
    C, Tf, h, w = feats.shape
    sx, sy = W / w, H / h
    q = np.asarray(queries, np.float64)
    Q = len(q)
    if Q == 0:
        return np.zeros((0, T, 2)), np.zeros((0, T))
    kq = _nearest_index(np.round(q[:, 0]), T, Tf)
    # query features: bilinear at feature-grid coordinates (cell centres at integers)
    u = (q[:, 2] + 0.5) / sx - 0.5
    v = (q[:, 1] + 0.5) / sy - 0.5
    grid = torch.tensor(np.stack([2 * (u + 0.5) / w - 1, 2 * (v + 0.5) / h - 1], 1), dtype=feats.dtype)
    qf = torch.stack([F.grid_sample(feats[:, k][None], grid[i].view(1, 1, 1, 2), mode="bilinear", padding_mode="border",
                                    align_corners=False).view(C) for i, k in enumerate(kq)])
    qf = F.normalize(qf, dim=1)
    sims = torch.einsum("qc,cthw->qthw", qf, feats)  # (Q, T', h, w)
    flat = sims.flatten(2)
    best, arg = flat.max(-1)  # (Q, T')
    ay, ax = arg // w, arg % w
    yy = torch.arange(h, dtype=feats.dtype).view(1, 1, h, 1)
    xx = torch.arange(w, dtype=feats.dtype).view(1, 1, 1, w)
    near = ((yy - ay[..., None, None]).abs() <= window) & ((xx - ax[..., None, None]).abs() <= window)
    logits = (sims / tau).masked_fill(~near, float("-inf"))
    prob = logits.flatten(2).softmax(-1).view_as(sims)
    ex = (prob * xx).sum((-2, -1))
    ey = (prob * yy).sum((-2, -1))
    k_of_t = _nearest_index(np.arange(T), T, Tf)
    px = ((ex + 0.5) * sx - 0.5).numpy()[:, k_of_t]
    py = ((ey + 0.5) * sy - 0.5).numpy()[:, k_of_t]
    tracks = np.stack([px, py], -1)
    score = best.numpy()[:, k_of_t].astype(np.float64)
    tq = np.round(q[:, 0]).astype(int)
    tracks[np.arange(Q), tq] = q[:, [2, 1]]
    score[np.arange(Q), tq] = 1.0
    return tracks, score


def fit_threshold(videos: list[dict], mode: str, candidates: int = 41) -> tuple[float, float]:
    """The similarity threshold (occluded below it) that maximises the mean AJ over ``videos``; each video a dict
    with ``queries``, ``target``, ``occluded``, ``tracks``, ``score``, ``size`` (H, W). Returns (threshold, AJ)."""
    scores = np.concatenate([v["score"].ravel() for v in videos if v["score"].size]) if videos else np.zeros(0)
    if scores.size == 0:
        return float("-inf"), float("nan")
    grid = np.unique(np.concatenate([np.quantile(scores, np.linspace(0, 1, candidates)), [-np.inf]]))
    best = (float("-inf"), -1.0)
    for th in grid:
        per = []
        for v in videos:
            H, W = v["size"]
            per.append(tapvid_metrics(v["queries"], v["occluded"], to_256(v["target"], W, H), v["score"] < th,
                                      to_256(v["tracks"], W, H), mode))
        aj = mean_metrics(per).get("average_jaccard", float("nan"))
        if aj == aj and aj > best[1]:
            best = (float(th), float(aj))
    return best
