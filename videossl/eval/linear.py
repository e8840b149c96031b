"""Linear evaluation of a frozen encoder: features → linear probe (softmax or SVM) → selective prediction.

Probes: ``probe.kind: softmax`` (L-BFGS / SGD / AdamW on standardised features) or ``svm``
(BraVe's StandardScaler + LinearSVC(C); Recasens et al., 2021). Confidence κ per test video:
max-softmax (MSP; softmax of the SVM decision values for ``svm``; Hendrycks & Gimpel, 2017),
margin, and a *learned* confidence head g(features) ∈ [0, 1] fitted on held-out *train* videos
(the test split is never used to fit anything); see :func:`learned_confidence`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.eval import calibration as cal
from videossl.eval.calibration import held_out_split, train_confidence_probe
from videossl.eval.frozen import EvalConfig, ProbeConfig, check_classes, extract_splits, view_lines
from videossl.eval.plots import plot_per_class_accuracy, plot_reliability_diagram, plot_risk_coverage
from videossl.eval.probe import evaluate_probe, train_linear_probe, train_linear_svm
from videossl.eval.report import abstention_sweep, confidence_metrics
from videossl.eval.scores import aggregate_views

__all__ = ["evaluate_encoder", "evaluate_features", "learned_confidence", "protocol_lines", "train_probe"]


def train_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, p: ProbeConfig):
    if p.kind == "svm":
        return train_linear_svm(feats, labels, num_classes, C=p.svm_c)
    return train_linear_probe(feats, labels, num_classes, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                              batch_size=p.batch_size, optimizer=p.optimizer, seed=p.seed)


def learned_confidence(train, test_mean_feats: torch.Tensor, num_classes: int, p: ProbeConfig
                       ) -> tuple[torch.Tensor | None, str]:
    """g(test video mean features) ∈ [0, 1], or (None, why not).

    ``probe.confidence_holdout`` of the train videos are held out (by video), an auxiliary probe
    of the same kind is trained on the rest, and a logistic regression of its correctness on the
    held-out videos' mean features is g.
    """

    try:
        fit, held = held_out_split(train.video_ids, p.confidence_holdout, seed=p.seed)
        ids = train.video_ids
        aux = train_probe(train.feats[fit], train.labels[fit], num_classes, p)
        held_ids = [ids[i] for i in held.tolist()]
        res = evaluate_probe(aux, train.feats[held], train.labels[held], held_ids, how=p.aggregate,
                             allow_unseen_classes=True)
        correct = res.scores.argmax(1) == res.labels
        mean_f = aggregate_views(train.feats[held], held_ids, how="mean_features").values
        g = train_confidence_probe(mean_f, correct)
    except VideosslError as e:
        return None, str(e)
    n_held = len(set(held_ids))
    return g(test_mean_feats), (f"fitted on {n_held} held-out train videos "
                                f"({int(correct.sum())} correct / {int((~correct).sum())} wrong for the auxiliary probe)")


def evaluate_encoder(encoder: nn.Module, cfg: EvalConfig, out_dir: Path, name: str, cache_dir: Path | None,
                     device: str = "cpu", progress: bool = True) -> dict[str, Any]:

    t0 = time.perf_counter()
    train, test, classes = extract_splits(encoder, cfg, cache_dir, device, progress)
    t_feat = time.perf_counter() - t0
    check_classes(train, test, classes, cfg.data_dir)
    return evaluate_features(train, test, classes, cfg.probe, out_dir, name, t_feat)


def evaluate_features(train, test, classes: list[str], p: ProbeConfig, out_dir: Path, name: str,
                      seconds_features: float = 0.0) -> dict[str, Any]:
    """The probe of ``p`` on the train :class:`~videossl.eval.features.FeatureSet`, scored on the test one:
    accuracy, per-class accuracy, calibration, selective prediction and plots (any frozen features: video, audio)."""
    probe = train_probe(train.feats, train.labels, len(classes), p)
    res = evaluate_probe(probe, test.feats, test.labels, test.video_ids, views_per_video=test.views_per_video,
                         how=p.aggregate)
    scores = res.scores  # per video; SVM decision values: their softmax is a monotone confidence score
    correct = scores.argmax(1) == res.labels
    kappas: dict[str, torch.Tensor] = {"msp": cal.max_softmax(scores), "margin": cal.margin(scores)}
    test_mean = aggregate_views(test.feats, test.video_ids, how="mean_features")
    assert list(test_mean.video_ids) == list(res.video_ids)
    g, g_note = learned_confidence(train, test_mean.values, len(classes), p)
    if g is not None:
        kappas["learned"] = g
    conf_metrics = {k: confidence_metrics(v, correct, p.tau, probability=k != "margin") for k, v in kappas.items()}
    sweep = {k: abstention_sweep(kappas[k], correct, p.taus) for k in kappas if k != "margin"}
    conf = kappas["msp"]
    plots = {
        "per_class": str(plot_per_class_accuracy(res.per_class, out_dir / f"{name}-per_class.png", class_names=classes,
                                                 title=f"{name}: per-class accuracy")),
        "reliability": str(plot_reliability_diagram(conf, correct, out_dir / f"{name}-reliability.png",
                                                    title=name)[0]),
        "risk_coverage": str(plot_risk_coverage(conf, correct, out_dir / f"{name}-risk_coverage.png", tau=p.tau,
                                                title=name)),
    }
    msp = conf_metrics["msp"]
    return {
        "name": name,
        "top1": res.top1,
        "top5": res.top5,
        "mean_class_accuracy": res.mean_class_accuracy,
        "per_class": {c: (None if a != a else float(a)) for c, a in zip(classes, res.per_class.tolist(), strict=True)},
        "ece": msp["ece"],
        "auroc": msp["auroc"],
        "aurc": msp["aurc"],
        "e_aurc": msp["e_aurc"],
        "tau": p.tau,
        "coverage_at_tau": msp["coverage_at_tau"],
        "risk_at_tau": msp["risk_at_tau"],
        "confidence": conf_metrics,
        "learned_confidence": g_note,
        "abstention": sweep,
        "num_train_videos": len(dict.fromkeys(train.video_ids)),
        "num_test_videos": res.num_videos,
        "views_per_video": test.views_per_video,
        "train_rows_per_video": train.views_per_video,
        "feature_dim": int(train.feats.shape[1]),
        "seconds_features": round(seconds_features, 1),
        "plots": plots,
    }


def protocol_lines(cfg: EvalConfig, spec: dict[str, Any], weights: list[str]) -> list[str]:
    """The protocol block; ``weights``: the weights lines (:meth:`videossl.eval.runs.WeightsInfo.lines`)."""
    p = cfg.probe
    probe = f"linear SVM (one-vs-rest squared hinge), C={p.svm_c}" if p.kind == "svm" else \
        f"softmax, {p.optimizer}, {p.epochs} epochs, lr {p.lr}, wd {p.weight_decay}"
    return [
        f"backbone: {spec.get('class_path')} {json.dumps(spec.get('init_args', {}), sort_keys=True)}",
        "feature: the encoder's pooled output (before any SSL projector), frozen, eval mode",
        *view_lines(cfg),
        f"aggregation over views: {p.aggregate}",
        f"data: {cfg.data_dir}, train split '{cfg.train_split}', test split '{cfg.test_split}'",
        f"probe: {probe}; standardised features",
        f"confidence: MSP, margin, learned head ({p.confidence_holdout:.0%} of train videos held out); "
        f"abstain iff confidence < tau = {p.tau}",
        f"pretraining: {cfg.pretrain or 'see run config'}",
        *weights,
    ]
