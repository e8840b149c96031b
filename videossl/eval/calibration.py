"""Selective prediction and calibration on classifier outputs (after Kumaran et al., arXiv:2603.22161 and arXiv:2603.17839).

Confidence scores κ (higher = more confident), all per sample:

* :func:`max_softmax` — maximum softmax probability (MSP);
* :func:`margin` — softmax probability of the top class minus that of the runner-up;
* :func:`negative_entropy` — −H(softmax);
* :func:`view_agreement` — fraction of a video's views whose argmax equals the mean-score argmax;
* :class:`ConfidenceProbe` — a learned head g(features) ∈ [0, 1]: logistic regression predicting
  whether the frozen classifier is correct, fitted on a held-out part of the *train* features
  (:func:`held_out_split` splits by video id so the views of a video never straddle the split).

Temperature scaling (:func:`fit_temperature`) is the calibration baseline.

Metrics, with N samples sorted by κ, highest first:

* **Risk–coverage curve.** The curve has one point per *distinct* κ value t (descending): answer
  exactly the samples with κ ≥ t; coverage = answered / N; selective risk = errors among the
  answered / answered. Evaluating only at distinct κ values means ties cannot move any result.
* **AURC** = (1/N) Σ_{k=1..N} r_k with r_k = (errors in the top k) / k (Geifman et al., 2019). With
  ties, every position inside a tie group takes the risk at the end of its group, i.e. AURC =
  Σ_points Δcoverage · risk (a left-continuous step integral). Without ties both are identical.
* **E-AURC** = AURC − AURC of the oracle order (all correct samples first), computed exactly at
  finite N: (1/N) Σ_{k>n_correct} (k − n_correct) / k.
* **Abstention at an instructed threshold τ**: answer only when κ ≥ τ (:func:`selective_at_threshold`).
* **ECE**: top-label calibration error with equal-width bins, L1 norm, 15 bins by default, identical
  to torchmetrics ``MulticlassCalibrationError`` (bins ``[lo, hi)`` from ``linspace(0, 1, n+1)``;
  a confidence of exactly 1.0, e.g. a float32-saturated softmax, falls in an extra final bin
  ``[1, 1]``, as in torchmetrics).
* **AUROC** of κ for separating correct (positive) from wrong predictions: the Mann–Whitney
  statistic, ties counted ½ (same as torchmetrics ``BinaryAUROC``); NaN if either group is empty.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from videossl.errors import VideosslError
from videossl.eval.probe import LinearProbe, train_linear_probe
from videossl.eval.scores import aggregate_views, check_feats, check_labels

__all__ = [
    "max_softmax",
    "margin",
    "negative_entropy",
    "view_agreement",
    "top_label",
    "fit_temperature",
    "held_out_split",
    "ConfidenceProbe",
    "train_confidence_probe",
    "ReliabilityData",
    "reliability_data",
    "expected_calibration_error",
    "auroc",
    "RiskCoverage",
    "risk_coverage_curve",
    "aurc",
    "e_aurc",
    "SelectivePoint",
    "selective_at_threshold",
    "risk_at_coverage",
    "coverage_at_risk",
]


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _check_scores(scores: Tensor, name: str = "logits") -> Tensor:
    scores = check_feats(scores, name)
    if scores.shape[1] < 2:
        raise VideosslError(f"{name} must have at least 2 classes (columns), got {scores.shape[1]}")
    return scores


def _check_conf_correct(confidences: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    conf = torch.as_tensor(confidences)
    corr = torch.as_tensor(correct)
    if conf.dim() != 1 or conf.shape[0] == 0:
        raise VideosslError(f"confidences must be a non-empty 1-D tensor, got shape {tuple(conf.shape)}")
    if corr.shape != conf.shape:
        raise VideosslError(
            f"correct must have the same shape as confidences {tuple(conf.shape)}, got {tuple(corr.shape)}"
        )
    if not conf.is_floating_point() or not bool(torch.isfinite(conf).all()):
        raise VideosslError("confidences must be finite floating-point values")
    if corr.dtype != torch.bool:
        if not bool(((corr == 0) | (corr == 1)).all()):
            raise VideosslError("correct must be boolean (or 0/1): whether each prediction was right")
        corr = corr.bool()
    return conf, corr.to(conf.device)


# --------------------------------------------------------------------------------------------
# confidence scores
# --------------------------------------------------------------------------------------------
def max_softmax(logits: Tensor) -> Tensor:
    """MSP: max_c softmax(logits)_c, [N]."""
    return _check_scores(logits).softmax(dim=1).max(dim=1).values


def margin(logits: Tensor) -> Tensor:
    """Softmax probability of the top class minus that of the second, [N], in [0, 1]."""
    top2 = _check_scores(logits).softmax(dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def negative_entropy(logits: Tensor) -> Tensor:
    """−H(softmax(logits)) in nats, [N] (0 = one-hot, −log C = uniform)."""
    logp = _check_scores(logits).log_softmax(dim=1)
    return (logp.exp() * logp).sum(dim=1)


def view_agreement(
    view_scores: Tensor, video_ids: Sequence | Tensor, *, views_per_video: int | None = None
) -> Tensor:
    """Per video (in :func:`aggregate_views` order): fraction of its views whose argmax equals the
    argmax of the video's mean score."""
    view_scores = _check_scores(view_scores, "view_scores")
    agg = aggregate_views(view_scores, video_ids, how="mean_logits", views_per_video=views_per_video)
    onehot = nn.functional.one_hot(view_scores.argmax(dim=1), view_scores.shape[1]).to(view_scores.dtype)
    votes = aggregate_views(onehot, video_ids, how="mean_logits").values  # same group order
    return votes.gather(1, agg.values.argmax(dim=1, keepdim=True)).squeeze(1)


def top_label(
    scores: Tensor, labels: Tensor | Sequence[int], *, logits: bool = True
) -> tuple[Tensor, Tensor]:
    """(top-label confidence, correct) from logits (``logits=True``) or probabilities."""
    scores = _check_scores(scores, "scores")
    labels = check_labels(labels, scores.shape[0], "labels", scores.shape[1]).to(scores.device)
    probs = scores.softmax(dim=1) if logits else scores
    conf, pred = probs.max(dim=1)
    return conf, pred == labels


def fit_temperature(logits: Tensor, labels: Tensor | Sequence[int], *, max_iter: int = 100) -> float:
    """Temperature T minimising the NLL of softmax(logits / T) (fit on a validation split)."""
    logits = _check_scores(logits).detach().double()
    labels = check_labels(labels, logits.shape[0], "labels", logits.shape[1]).to(logits.device)
    log_t = torch.zeros((), dtype=torch.float64, device=logits.device, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


# --------------------------------------------------------------------------------------------
# learned confidence head
# --------------------------------------------------------------------------------------------
def held_out_split(
    video_ids: Sequence | Tensor, fraction: float = 0.2, *, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Row indices (fit, held_out) with about ``fraction`` of the *videos* held out; all views of a
    video go to the same side."""
    ids = video_ids.tolist() if isinstance(video_ids, Tensor) else list(video_ids)
    if not 0 < fraction < 1:
        raise VideosslError(f"fraction must be in (0, 1), got {fraction}")
    groups = list(dict.fromkeys(ids))
    n_held = round(fraction * len(groups))
    if len(groups) < 2 or n_held == 0 or n_held == len(groups):
        raise VideosslError(
            f"cannot hold out {fraction:.0%} of {len(groups)} videos and keep both sides non-empty"
        )
    perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))
    held = {groups[i] for i in perm[:n_held].tolist()}
    mask = torch.tensor([v in held for v in ids])
    return (~mask).nonzero().flatten(), mask.nonzero().flatten()


class ConfidenceProbe(nn.Module):
    """g(x) = sigmoid-equivalent P(classifier correct | features), via a 2-class softmax probe."""

    def __init__(self, probe: LinearProbe) -> None:
        super().__init__()
        self.probe = probe

    @torch.no_grad()
    def forward(self, feats: Tensor) -> Tensor:
        feats = check_feats(feats, "feats")
        if feats.shape[1] != self.probe.in_features:
            raise VideosslError(
                f"feature dimension mismatch: confidence probe expects {self.probe.in_features}-d, got {feats.shape[1]}-d"
            )
        return self.probe(feats.to(self.probe.mean.device)).softmax(dim=1)[:, 1]


def train_confidence_probe(
    feats: Tensor,
    correct: Tensor,
    *,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
    standardize: bool = True,
    device: str | torch.device | None = None,
) -> ConfidenceProbe:
    """Logistic regression (full-batch L-BFGS, L2 ``weight_decay``) of correctness on features.

    Fit it on features/correctness of a held-out part of the train split (see :func:`held_out_split`),
    never on the test split.
    """
    feats = check_feats(feats, "feats")
    corr = torch.as_tensor(correct).cpu()
    if corr.shape != (feats.shape[0],):
        raise VideosslError(
            f"correct must have shape [{feats.shape[0]}] (one flag per row), got {tuple(corr.shape)}"
        )
    _, corr = _check_conf_correct(torch.zeros(feats.shape[0]), corr)
    if corr.all() or not corr.any():
        raise VideosslError(
            "the confidence probe needs both correct and wrong predictions in its training split; "
            "use a larger held-out split"
        )
    probe = train_linear_probe(
        feats,
        corr.long(),
        2,
        optimizer="lbfgs",
        epochs=max_iter,
        weight_decay=weight_decay,
        standardize=standardize,
        device=device,
    )
    return ConfidenceProbe(probe).eval()


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
@dataclass
class ReliabilityData:
    """Per-bin statistics; the last bin is the degenerate ``[1, 1]`` bin (torchmetrics convention)."""

    lower: Tensor  # [B+1]
    upper: Tensor  # [B+1]
    count: Tensor  # [B+1] samples per bin
    accuracy: Tensor  # [B+1] fraction correct (NaN for empty bins)
    confidence: Tensor  # [B+1] mean confidence (NaN for empty bins)
    ece: float  # Σ (count/N) |accuracy − confidence|
    mce: float  # max over non-empty bins of |accuracy − confidence|
    n_bins: int


def reliability_data(confidences: Tensor, correct: Tensor, *, n_bins: int = 15) -> ReliabilityData:
    """Equal-width binning of top-label confidences, and the ECE / MCE it implies."""
    conf, corr = _check_conf_correct(confidences, correct)
    if n_bins < 1:
        raise VideosslError(f"n_bins must be >= 1, got {n_bins}")
    if bool((conf < 0).any() or (conf > 1).any()):
        raise VideosslError("confidences for calibration must be probabilities in [0, 1]")
    edges = torch.linspace(0, 1, n_bins + 1, dtype=conf.dtype, device=conf.device)
    idx = torch.bucketize(conf, edges, right=True) - 1  # [lo, hi); exactly 1.0 → bin n_bins
    nb = n_bins + 1
    count = torch.bincount(idx, minlength=nb).double()
    sum_conf = torch.bincount(idx, weights=conf.double(), minlength=nb)
    sum_corr = torch.bincount(idx, weights=corr.double(), minlength=nb)
    accuracy = sum_corr / count
    mean_conf = sum_conf / count
    gap = (accuracy - mean_conf).abs()
    nonempty = count > 0
    ece = float((gap[nonempty] * count[nonempty]).sum() / count.sum())
    mce = float(gap[nonempty].max())
    upper = torch.cat([edges[1:], edges[-1:]])
    return ReliabilityData(
        lower=edges.cpu().double(),
        upper=upper.cpu().double(),
        count=count.cpu().long(),
        accuracy=accuracy.cpu(),
        confidence=mean_conf.cpu(),
        ece=ece,
        mce=mce,
        n_bins=n_bins,
    )


def expected_calibration_error(confidences: Tensor, correct: Tensor, *, n_bins: int = 15) -> float:
    """Top-label ECE (L1, equal-width bins); equals torchmetrics ``MulticlassCalibrationError``
    on ``top_label(probs, labels)``."""
    return reliability_data(confidences, correct, n_bins=n_bins).ece


# --------------------------------------------------------------------------------------------
# ranking quality and selective prediction
# --------------------------------------------------------------------------------------------
def auroc(confidences: Tensor, correct: Tensor) -> float:
    """P(κ_correct > κ_wrong) + ½ P(tie); NaN when all predictions are right or all wrong."""
    conf, corr = _check_conf_correct(confidences, correct)
    n_pos = int(corr.sum())
    n_neg = conf.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    conf = conf.double()
    order = conf.argsort()
    sorted_conf = conf[order]
    _, inverse, counts = torch.unique_consecutive(sorted_conf, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    avg_rank = ends - (counts.double() - 1) / 2  # 1-based average rank of each tie group
    ranks = torch.empty_like(conf)
    ranks[order] = avg_rank[inverse]
    u = float(ranks[corr].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


@dataclass
class RiskCoverage:
    """One point per distinct confidence value, from the highest threshold to the lowest."""

    thresholds: Tensor  # [P] κ values, descending; answering κ >= threshold
    coverage: Tensor  # [P] fraction answered, ascending to 1
    risk: Tensor  # [P] error rate among the answered
    aurc: float
    e_aurc: float
    oracle_aurc: float
    error_rate: float  # risk at full coverage


def _oracle_aurc(n: int, n_wrong: int) -> float:
    n_correct = n - n_wrong
    k = torch.arange(n_correct + 1, n + 1, dtype=torch.float64)
    return float(((k - n_correct) / k).sum() / n) if n_wrong else 0.0


def risk_coverage_curve(confidences: Tensor, correct: Tensor) -> RiskCoverage:
    """Risk–coverage curve, AURC and E-AURC (definitions in the module docstring)."""
    conf, corr = _check_conf_correct(confidences, correct)
    conf = conf.double().cpu()
    wrong = (~corr).double().cpu()
    n = conf.shape[0]
    order = conf.argsort(descending=True, stable=True)
    sc = conf[order]
    cum_err = wrong[order].cumsum(0)
    _, counts = torch.unique_consecutive(sc, return_counts=True)
    ends = counts.cumsum(0)  # answered count at each distinct threshold
    thresholds = sc[ends - 1]
    risk = cum_err[ends - 1] / ends.double()
    coverage = ends.double() / n
    aurc_v = float((counts.double() * risk).sum() / n)
    oracle = _oracle_aurc(n, int(wrong.sum()))
    return RiskCoverage(
        thresholds=thresholds,
        coverage=coverage,
        risk=risk,
        aurc=aurc_v,
        e_aurc=aurc_v - oracle,
        oracle_aurc=oracle,
        error_rate=float(wrong.mean()),
    )


def aurc(confidences: Tensor, correct: Tensor) -> float:
    return risk_coverage_curve(confidences, correct).aurc


def e_aurc(confidences: Tensor, correct: Tensor) -> float:
    return risk_coverage_curve(confidences, correct).e_aurc


@dataclass
class SelectivePoint:
    tau: float
    coverage: float  # fraction with κ >= τ (answered)
    risk: float  # error rate among the answered; NaN if nothing is answered
    n_answered: int
    abstention_rate: float  # 1 − coverage


def selective_at_threshold(confidences: Tensor, correct: Tensor, tau: float) -> SelectivePoint:
    """The policy "answer only when κ ≥ τ": its coverage and selective risk."""
    conf, corr = _check_conf_correct(confidences, correct)
    answered = conf >= tau
    n_ans = int(answered.sum())
    cov = n_ans / conf.shape[0]
    risk = float((~corr[answered]).double().mean()) if n_ans else math.nan
    return SelectivePoint(
        tau=float(tau), coverage=cov, risk=risk, n_answered=n_ans, abstention_rate=1.0 - cov
    )


def risk_at_coverage(confidences: Tensor, correct: Tensor, target_coverage: float) -> float:
    """Selective risk at the highest threshold whose coverage is at least ``target_coverage``
    (e.g. 0.8; accuracy at 80 % coverage = 1 − this)."""
    if not 0 < target_coverage <= 1:
        raise VideosslError(f"target_coverage must be in (0, 1], got {target_coverage}")
    curve = risk_coverage_curve(confidences, correct)
    i = int((curve.coverage >= target_coverage - 1e-12).nonzero()[0])
    return float(curve.risk[i])


def coverage_at_risk(confidences: Tensor, correct: Tensor, max_risk: float) -> float:
    """Largest coverage over the curve's thresholds whose selective risk is ≤ ``max_risk``; 0 if none."""
    curve = risk_coverage_curve(confidences, correct)
    ok = curve.risk <= max_risk + 1e-12
    return float(curve.coverage[ok].max()) if bool(ok.any()) else 0.0
