"""The kNN protocol of a frozen encoder: weighted kNN accuracy and nearest-neighbour retrieval.

The bank is the train split, the queries the test split (features from
:func:`videossl.eval.frozen.extract_splits`). Weighted kNN as in InstDisc (Wu et al., 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination"); retrieval R@k of each
test video's mean feature against the train videos' mean features ("NN@1" in CoCLR; Han et al.,
2020). The algorithms are :mod:`videossl.eval.knn`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from videossl.errors import VideosslError
from videossl.eval.frozen import EvalConfig, check_classes, extract_splits, view_lines
from videossl.eval.knn import WeightedKNN, retrieval_recall_at_k
from videossl.eval.report import fmt_num, report_header, write_markdown
from videossl.eval.scores import aggregate_views, per_class_accuracy

__all__ = ["evaluate_knn", "protocol_lines", "write_report"]


def evaluate_knn(encoder: nn.Module, cfg: EvalConfig, name: str, cache_dir: Path | None, device: str = "cpu",
                 progress: bool = True) -> dict[str, Any]:

    kc = cfg.knn
    if not kc.k or any(k < 1 for k in kc.k):
        raise VideosslError(f"knn.k must be a non-empty list of positive integers, got {kc.k}")
    if kc.features not in ("mean_views", "views"):
        raise VideosslError(f"knn.features must be 'mean_views' or 'views', got {kc.features!r}")
    t0 = time.perf_counter()
    train, test, classes = extract_splits(encoder, cfg, cache_dir, device, progress)
    t_feat = time.perf_counter() - t0
    check_classes(train, test, classes, cfg.data_dir)
    tr = aggregate_views(train.feats, train.video_ids, how="mean_features", labels=train.labels)
    te = aggregate_views(test.feats, test.video_ids, how="mean_features", labels=test.labels,
                         views_per_video=test.views_per_video)
    accs: dict[str, float] = {}
    per_class = None
    for k in kc.k:
        if kc.features == "mean_views":
            knn = WeightedKNN(tr.values, tr.labels, len(classes), k=k, temperature=kc.temperature)
            scores = knn.scores(te.values).cpu()
        else:
            knn = WeightedKNN(train.feats, train.labels, len(classes), k=k, temperature=kc.temperature)
            scores = aggregate_views(knn.scores(test.feats).cpu(), test.video_ids, how="mean_logits").values
        pred = scores.argmax(1)
        accs[str(k)] = float((pred == te.labels).float().mean())
        if per_class is None:
            per_class = per_class_accuracy(pred, te.labels, len(classes))
    ks = [k for k in kc.retrieval_ks if k <= tr.values.shape[0]]
    retrieval = retrieval_recall_at_k(te.values, te.labels, tr.values, tr.labels, ks) if ks else {}
    headline = str(kc.k[0])
    assert per_class is not None
    return {
        "name": name,
        "top1": accs[headline],
        "top5": None,
        "mean_class_accuracy": float(per_class[~per_class.isnan()].mean()),
        "k": kc.k[0],
        "knn": accs,
        "retrieval": {f"R@{k}": v for k, v in retrieval.items()},
        "per_class": {c: (None if a != a else float(a)) for c, a in zip(classes, per_class.tolist(), strict=True)},
        "num_train_videos": int(tr.values.shape[0]),
        "num_test_videos": int(te.values.shape[0]),
        "views_per_video": test.views_per_video,
        "feature_dim": int(train.feats.shape[1]),
        "seconds_features": round(t_feat, 1),
    }


def protocol_lines(cfg: EvalConfig, spec: dict[str, Any], weights: list[str]) -> list[str]:
    """The protocol block; ``weights``: the weights lines (:meth:`videossl.eval.runs.WeightsInfo.lines`)."""
    kc = cfg.knn
    return [
        f"backbone: {spec.get('class_path')} {json.dumps(spec.get('init_args', {}), sort_keys=True)}",
        "feature: the encoder's pooled output (before any SSL projector), frozen, eval mode",
        *view_lines(cfg),
        f"kNN: cosine, weighted votes exp(sim/T), T={kc.temperature}, k={', '.join(map(str, kc.k))} "
        f"(headline k={kc.k[0]}); features: {kc.features}",
        f"retrieval: test video mean feature vs train video mean features, R@{', R@'.join(map(str, kc.retrieval_ks))}",
        f"data: {cfg.data_dir}, bank = split '{cfg.train_split}', queries = split '{cfg.test_split}'",
        f"pretraining: {cfg.pretrain or 'see run config'}",
        *weights,
    ]


def write_report(out_dir: Path, results: list[dict[str, Any]], protocol: list[str]) -> Path:
    ks = list(results[0]["knn"])
    rk = list(results[0]["retrieval"])
    lines = report_header("kNN evaluation", protocol, "Results (%)")
    lines += ["| encoder | " + " | ".join(f"kNN k={k}" for k in ks) + " | mean class acc | " + " | ".join(rk) + " |",
              "|---|" + "---|" * (len(ks) + 1 + len(rk))]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(fmt_num(r["knn"][k], ".1f", 100) for k in ks)
                     + f" | {fmt_num(r['mean_class_accuracy'], '.1f', 100)} | "
                     + " | ".join(fmt_num(r["retrieval"][k], ".1f", 100) for k in rk) + " |")
    return write_markdown(out_dir, lines)
