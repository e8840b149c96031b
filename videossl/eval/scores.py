"""Scores → per-video predictions and accuracies, for every classifier of the evaluation suite.

Input checks of feature / label tensors; :func:`aggregate_views` groups the views of each video by
its id (never by position), checks view counts and label consistency, and averages (logits / SVM
decision values, features, or softmax probabilities); top-k and per-class accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from videossl.errors import VideosslError

__all__ = ["AggregatedViews", "aggregate_views", "check_feats", "check_labels", "per_class_accuracy", "top_k_accuracy"]


# --------------------------------------------------------------------------------------------
# validation helpers (shared with knn.py / calibration.py)
# --------------------------------------------------------------------------------------------
def check_feats(feats: Tensor, name: str) -> Tensor:
    if not isinstance(feats, Tensor):
        raise VideosslError(f"{name} must be a torch.Tensor of shape [N, D], got {type(feats).__name__}")
    if feats.dim() != 2:
        raise VideosslError(f"{name} must have shape [N, D], got shape {tuple(feats.shape)}")
    if feats.shape[0] == 0:
        raise VideosslError(f"{name} is empty (0 rows): the split has no samples; check the split files")
    if not feats.is_floating_point():
        raise VideosslError(f"{name} must be a floating-point tensor, got dtype {feats.dtype}")
    if not bool(torch.isfinite(feats).all()):
        raise VideosslError(f"{name} contains NaN or inf values; re-extract the features")
    return feats


def check_labels(
    labels: Tensor | Sequence[int], n: int, name: str, num_classes: int | None = None
) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != n:
        raise VideosslError(
            f"{name} must have shape [{n}] (one label per row), got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise VideosslError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if num_classes is not None and n > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise VideosslError(
                f"{name} must lie in [0, {num_classes - 1}] (num_classes={num_classes}), found range [{lo}, {hi}]"
            )
    return labels


@dataclass
class AggregatedViews:
    """One row per video, in order of each video's first view."""

    values: Tensor  # [V, D] aggregated logits / features / probabilities
    video_ids: list  # [V]
    labels: Tensor | None  # [V] or None
    num_views: Tensor  # [V] views per video


def _ids_to_list(video_ids, n: int) -> list:
    if isinstance(video_ids, Tensor):
        if video_ids.dim() != 1:
            raise VideosslError(f"video_ids must be 1-D, got shape {tuple(video_ids.shape)}")
        ids = video_ids.tolist()
    else:
        ids = list(video_ids)
    if len(ids) != n:
        raise VideosslError(
            f"video_ids has {len(ids)} entries but there are {n} views; they must match one-to-one"
        )
    return ids


def aggregate_views(
    values: Tensor,
    video_ids: Sequence | Tensor,
    *,
    how: Literal["mean_logits", "mean_features", "mean_softmax"] = "mean_logits",
    labels: Tensor | Sequence[int] | None = None,
    views_per_video: int | None = None,
) -> AggregatedViews:
    """Group views by video id and average them.

    ``how``: ``"mean_logits"`` averages scores as given (logits or SVM decision values, BraVe's
    choice); ``"mean_features"`` averages feature vectors (same arithmetic, before the classifier);
    ``"mean_softmax"`` averages softmax probabilities. If ``views_per_video`` (K clips × C crops) is
    given, every video must have exactly that many views. If ``labels`` are given, all views of a
    video must share one label. Violations raise :class:`VideosslError`.
    """
    values = check_feats(values, "values")
    n = values.shape[0]
    if how not in ("mean_logits", "mean_features", "mean_softmax"):
        raise VideosslError(f"how must be 'mean_logits', 'mean_features' or 'mean_softmax', got {how!r}")
    ids = _ids_to_list(video_ids, n)
    index: dict = {}
    inv_list = []
    first_pos = []  # row of each video's first view
    for i, vid in enumerate(ids):
        g = index.get(vid)
        if g is None:
            g = index[vid] = len(index)
            first_pos.append(i)
        inv_list.append(g)
    inverse = torch.tensor(inv_list, dtype=torch.long)
    groups = list(index)
    num_groups = len(groups)
    counts = torch.bincount(inverse, minlength=num_groups)
    if views_per_video is not None:
        bad = (counts != views_per_video).nonzero().flatten().tolist()
        if bad:
            shown = ", ".join(f"{groups[g]!r} has {int(counts[g])}" for g in bad[:3])
            raise VideosslError(
                f"{len(bad)} of {num_groups} videos do not have exactly {views_per_video} views "
                f"(clips x crops): {shown}{' ...' if len(bad) > 3 else ''}; re-extract the missing views"
            )
    x = values.softmax(dim=1) if how == "mean_softmax" else values
    inv_dev = inverse.to(values.device)
    sums = torch.zeros(num_groups, values.shape[1], dtype=values.dtype, device=values.device)
    sums.index_add_(0, inv_dev, x)
    out = sums / counts.to(values.device, values.dtype)[:, None]

    group_labels = None
    if labels is not None:
        lab = check_labels(labels, n, "labels").cpu()
        first = lab[torch.tensor(first_pos, dtype=torch.long)]
        mismatch = (lab != first[inverse]).nonzero().flatten()
        if mismatch.numel():
            g = int(inverse[mismatch[0]])
            found = sorted(set(lab[inverse == g].tolist()))
            raise VideosslError(
                f"video {groups[g]!r} has views with different labels {found}; "
                "views must be grouped by video id and share one label"
            )
        group_labels = first
    return AggregatedViews(values=out, video_ids=groups, labels=group_labels, num_views=counts)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def top_k_accuracy(scores: Tensor, labels: Tensor | Sequence[int], k: int = 1) -> float:
    """Fraction of rows whose label is among the k highest scores (ties broken by ``torch.topk``)."""
    scores = check_feats(scores, "scores")
    labels = check_labels(labels, scores.shape[0], "labels", scores.shape[1]).to(scores.device)
    if not 1 <= k <= scores.shape[1]:
        raise VideosslError(f"k must be in [1, {scores.shape[1]}] (the number of classes), got {k}")
    topk = scores.topk(k, dim=1).indices
    return float((topk == labels[:, None]).any(dim=1).float().mean())


def per_class_accuracy(preds_or_scores: Tensor, labels: Tensor | Sequence[int], num_classes: int) -> Tensor:
    """Top-1 accuracy of each class, [num_classes]; NaN for classes absent from ``labels``.

    ``preds_or_scores`` is either [N] predicted indices or [N, num_classes] scores.
    """
    p = torch.as_tensor(preds_or_scores)
    if p.dim() == 2:
        if p.shape[1] != num_classes:
            raise VideosslError(f"scores have {p.shape[1]} columns but num_classes={num_classes}")
        p = p.argmax(dim=1)
    if p.dim() != 1 or p.shape[0] == 0:
        raise VideosslError(
            f"predictions must be a non-empty [N] or [N, C] tensor, got shape {tuple(p.shape)}"
        )
    labels = check_labels(labels, p.shape[0], "labels", num_classes).to(p.device)
    correct = (p.long() == labels).double()
    total = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels, weights=correct, minlength=num_classes)
    acc = hits / total  # 0/0 → NaN for absent classes
    return acc.float()
