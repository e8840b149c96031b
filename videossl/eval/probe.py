"""Linear probes on cached features: softmax (SGD / Adam / LBFGS) and BraVe's linear SVM.

Everything here works on feature tensors that were extracted upstream from a frozen, eval-mode
encoder, so it is encoder-agnostic and fast.

Protocols (SlowFast-style linear probes; BraVe's linear SVM, arXiv:2103.16559):

* :func:`train_linear_probe` — a linear layer trained with cross-entropy. ``optimizer="sgd"`` is
  the SlowFast-style recipe (momentum 0.9, cosine schedule, no warmup); ``"adam"`` is AdamW with
  the same cosine schedule; ``"lbfgs"`` is full-batch L-BFGS on the L2-regularised objective
  (``weight_decay`` is then the L2 coefficient λ of ``mean CE + λ/2 ||W||²``). ``lr`` is used as
  given: scale it by ``batch_size / 256`` yourself if you follow that rule.
* :func:`train_linear_svm` — BraVe's classifier: ``StandardScaler`` then
  ``sklearn.svm.LinearSVC(C)`` one-vs-rest. scikit-learn is not a dependency, so the LinearSVC
  primal objective is minimised directly in torch, per class c (labels ``y_ic = ±1``)::

      min_{w_c, b_c}  1/2 (||w_c||² + b_c²) + C Σ_i max(0, 1 − y_ic (w_c·x_i + b_c))²

  This is liblinear's L2-regularised squared-hinge primal with ``fit_intercept=True,
  intercept_scaling=1`` (the bias is a constant-1 feature and **is** regularised, as in
  LinearSVC). The K per-class problems are independent; they are solved jointly with full-batch
  L-BFGS (strong-Wolfe line search) on the objective divided by ``C·n`` (same minimiser, better
  scaled). The solution is the unique optimum of a strongly convex problem, so it agrees with
  LinearSVC up to solver tolerance. For two classes LinearSVC fits one binary scorer; here the
  two OvR scorers are exact negatives of each other, so predictions agree.

Test-time multi-view evaluation: :func:`predict_views` scores every view;
:func:`videossl.eval.scores.aggregate_views` groups them per video.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from videossl.errors import VideosslError
from videossl.eval.scores import aggregate_views, check_feats, check_labels, per_class_accuracy, top_k_accuracy

__all__ = [
    "LinearProbe",
    "ProbeResult",
    "train_linear_probe",
    "train_linear_svm",
    "predict_views",
    "evaluate_probe",
]

_CHUNK = 8192  # rows per forward chunk in full-batch passes (bounds memory, not results)


def _resolve_device(device: str | torch.device | None, feats: Tensor) -> torch.device:
    return feats.device if device is None else torch.device(device)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class LinearProbe(nn.Module):
    """``logits = W · (x − mean) / std + b``; the standardisation is part of the model.

    ``kind`` is ``"softmax"`` (cross-entropy probe: outputs are logits) or ``"svm"`` (outputs are
    one-vs-rest decision values). ``class_counts[c]`` is the number of training rows of class c.
    """

    def __init__(self, in_features: int, num_classes: int, kind: str = "softmax") -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.num_classes = int(num_classes)
        self.kind = kind
        self.linear = nn.Linear(in_features, num_classes)
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.long))

    def standardize(self, x: Tensor) -> Tensor:
        return (x.to(self.mean.dtype) - self.mean) / self.std

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.standardize(x))


def _fit_standardizer(feats: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """sklearn ``StandardScaler`` statistics: mean and population std (ddof=0); zero std → 1."""
    mean = torch.zeros(feats.shape[1], dtype=torch.float64, device=feats.device)
    sq = torch.zeros_like(mean)
    for i in range(0, feats.shape[0], _CHUNK):
        mean += feats[i : i + _CHUNK].double().sum(0)
    mean /= feats.shape[0]
    for i in range(0, feats.shape[0], _CHUNK):
        sq += (feats[i : i + _CHUNK].double() - mean).pow(2).sum(0)
    std = (sq / feats.shape[0]).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.to(dtype), std.to(dtype)


def _new_probe(
    train_feats: Tensor,
    labels: Tensor,
    num_classes: int,
    kind: str,
    standardize: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> LinearProbe:
    model = LinearProbe(train_feats.shape[1], num_classes, kind=kind).to(device=device, dtype=dtype)
    if standardize:
        mean, std = _fit_standardizer(train_feats, dtype)
        model.mean.copy_(mean.to(device))
        model.std.copy_(std.to(device))
    model.class_counts.copy_(torch.bincount(labels, minlength=num_classes).to(device))
    return model


def _validate_train(train_feats, train_labels, num_classes) -> tuple[Tensor, Tensor]:
    train_feats = check_feats(train_feats, "train_feats")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise VideosslError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    labels = check_labels(train_labels, train_feats.shape[0], "train_labels", num_classes)
    return train_feats, labels


def _lbfgs(params: list[Tensor], closure, max_iter: int, tol: float) -> None:
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=int(max_iter * 1.25) + 1,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    opt.step(closure)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
def train_linear_probe(
    train_feats: Tensor,
    train_labels: Tensor | Sequence[int],
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    optimizer: Literal["sgd", "adam", "lbfgs"] = "sgd",
    momentum: float = 0.9,
    standardize: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> LinearProbe:
    """Train a softmax linear probe on cached features; returns the model in eval mode.

    ``sgd``/``adam``: ``epochs`` passes of shuffled mini-batches, per-step cosine decay from ``lr``
    to 0. ``lbfgs``: full batch, ``epochs`` is the L-BFGS iteration budget, ``lr``/``batch_size``
    are ignored and ``weight_decay`` is the L2 coefficient. ``train_feats`` may stay on the CPU
    while ``device`` is a GPU: batches are moved as they are used.
    """
    train_feats, labels = _validate_train(train_feats, train_labels, num_classes)
    if optimizer not in ("sgd", "adam", "lbfgs"):
        raise VideosslError(f"optimizer must be one of 'sgd', 'adam', 'lbfgs', got {optimizer!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or weight_decay < 0:
        raise VideosslError(
            f"need epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0; got epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}, weight_decay={weight_decay}"
        )
    dev = _resolve_device(device, train_feats)
    torch.manual_seed(seed)  # nn.Linear init
    model = _new_probe(train_feats, labels, num_classes, "softmax", standardize, dev, dtype)
    n = train_feats.shape[0]
    params = list(model.linear.parameters())

    if optimizer == "lbfgs":
        labels_dev = labels.to(dev)

        def closure():
            for p in params:
                p.grad = None
            total = 0.0
            for i in range(0, n, _CHUNK):
                x = train_feats[i : i + _CHUNK].to(dev)
                loss = nn.functional.cross_entropy(model(x), labels_dev[i : i + _CHUNK], reduction="sum") / n
                loss.backward()
                total += float(loss.detach())
            if weight_decay > 0:
                reg = 0.5 * weight_decay * model.linear.weight.pow(2).sum()
                reg.backward()
                total += float(reg.detach())
            return torch.tensor(total, dtype=dtype)

        _lbfgs(params, closure, max_iter=epochs, tol=1e-7)
        return model.eval()

    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total_steps))
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            x = train_feats[idx.to(train_feats.device)].to(dev)
            y = labels[idx].to(dev)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def train_linear_svm(
    train_feats: Tensor,
    train_labels: Tensor | Sequence[int],
    num_classes: int,
    *,
    C: float = 1e-4,
    max_iter: int = 1000,
    tol: float = 1e-6,
    standardize: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> LinearProbe:
    """BraVe's probe: StandardScaler + one-vs-rest LinearSVC(C) (squared hinge, L2, bias regularised).

    See the module docstring for the exact objective. Deterministic (zero init, full batch).
    ``max_iter`` bounds the L-BFGS iterations; ``tol`` is the max-abs-gradient stopping tolerance
    of the scaled objective. Returns a :class:`LinearProbe` with ``kind="svm"`` whose outputs are
    decision values.
    """
    train_feats, labels = _validate_train(train_feats, train_labels, num_classes)
    if not C > 0:
        raise VideosslError(f"C must be > 0, got {C}")
    dev = _resolve_device(device, train_feats)
    model = _new_probe(train_feats, labels, num_classes, "svm", standardize, dev, dtype)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    n = train_feats.shape[0]
    params = list(model.linear.parameters())
    labels_dev = labels.to(dev)
    reg_scale = 1.0 / (C * n)

    def closure():
        for p in params:
            p.grad = None
        total = 0.0
        for i in range(0, n, _CHUNK):
            x = train_feats[i : i + _CHUNK].to(dev)
            s = model(x)
            y = -torch.ones_like(s)
            y.scatter_(1, labels_dev[i : i + _CHUNK, None], 1.0)
            loss = torch.clamp(1.0 - y * s, min=0).pow(2).sum() / n
            loss.backward()
            total += float(loss.detach())
        reg = 0.5 * reg_scale * (model.linear.weight.pow(2).sum() + model.linear.bias.pow(2).sum())
        reg.backward()
        total += float(reg.detach())
        return torch.tensor(total, dtype=dtype)

    _lbfgs(params, closure, max_iter=max_iter, tol=tol)
    return model.eval()


# --------------------------------------------------------------------------------------------
# prediction and multi-view aggregation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_views(model: LinearProbe, feats: Tensor, *, batch_size: int = _CHUNK) -> Tensor:
    """Score every row (view) of ``feats``: logits (softmax probe) or decision values (SVM), [N, C]."""
    feats = check_feats(feats, "feats")
    if feats.shape[1] != model.in_features:
        raise VideosslError(
            f"feature dimension mismatch: the probe was trained on {model.in_features}-d features, "
            f"got {feats.shape[1]}-d; use the same encoder layer for train and test features"
        )
    model.eval()
    dev = model.mean.device
    out = [model(feats[i : i + batch_size].to(dev)) for i in range(0, feats.shape[0], batch_size)]
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
@dataclass
class ProbeResult:
    top1: float
    top5: float | None
    mean_class_accuracy: float
    per_class: Tensor  # [C], NaN for classes absent from the test split
    num_videos: int
    num_views: int
    scores: Tensor  # [V, C] per-video aggregated scores
    labels: Tensor  # [V]
    video_ids: list


def evaluate_probe(
    model: LinearProbe,
    test_feats: Tensor,
    test_labels: Tensor | Sequence[int],
    video_ids: Sequence | Tensor | None = None,
    *,
    views_per_video: int | None = None,
    how: Literal["mean_logits", "mean_features", "mean_softmax"] = "mean_logits",
    allow_unseen_classes: bool = False,
) -> ProbeResult:
    """Score test views, average per video, report top-1/top-5/per-class accuracy.

    Without ``video_ids`` every row is its own video. ``how="mean_features"`` averages features
    before the classifier. Test labels outside ``[0, num_classes)`` always raise; labels of a class
    that had no training rows raise unless ``allow_unseen_classes`` (usually a label-map mismatch).
    """
    test_feats = check_feats(test_feats, "test_feats")
    labels = check_labels(test_labels, test_feats.shape[0], "test_labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= model.num_classes:
        raise VideosslError(
            f"test labels span [{lo}, {hi}] but the probe was trained on classes [0, {model.num_classes - 1}]; "
            "use the same class index (classInd / sorted names) for train and test"
        )
    if not allow_unseen_classes:
        unseen = sorted(set(labels.unique().tolist()) - set(model.class_counts.nonzero().flatten().tolist()))
        if unseen:
            raise VideosslError(
                f"test labels {unseen[:5]}{' ...' if len(unseen) > 5 else ''} never occur in the training "
                "features; check the label mapping (or pass allow_unseen_classes=True)"
            )
    if test_feats.shape[1] != model.in_features:
        predict_views(model, test_feats)  # raises the dimension-mismatch error
    n = test_feats.shape[0]
    ids = list(range(n)) if video_ids is None else video_ids
    if how == "mean_features":
        agg = aggregate_views(
            test_feats, ids, how="mean_features", labels=labels, views_per_video=views_per_video
        )
        scores = predict_views(model, agg.values)
    else:
        view_scores = predict_views(model, test_feats)
        agg = aggregate_views(view_scores, ids, how=how, labels=labels, views_per_video=views_per_video)
        scores = agg.values
    assert agg.labels is not None
    per_class = per_class_accuracy(scores, agg.labels, model.num_classes)
    return ProbeResult(
        top1=top_k_accuracy(scores, agg.labels, 1),
        top5=top_k_accuracy(scores, agg.labels, 5) if model.num_classes >= 5 else None,
        mean_class_accuracy=float(per_class[~per_class.isnan()].mean()),
        per_class=per_class,
        num_videos=len(agg.video_ids),
        num_views=n,
        scores=scores,
        labels=agg.labels,
        video_ids=agg.video_ids,
    )
