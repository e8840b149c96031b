"""Weighted kNN and nearest-neighbour retrieval of a frozen encoder (evaluation.md §4).

    videossl eval knn --config recipes/eval/knn/synthetic.yaml --run runs/brave-synthetic --compare-random

Features come from the same cached, multi-view extraction as ``videossl eval linear`` (the
recipe's ``views``). The bank is the train split, the queries the test split. InstDisc-style
weighted kNN: L2-normalised features, cosine similarity, the top-k train neighbours vote with
weight exp(sim / T); ``knn.k`` (default 200 and 20; the first is the headline number) and
``knn.temperature`` (default 0.07). ``knn.features``: ``mean_views`` (default) averages each
video's view features, train and test alike, before the kNN; ``views`` puts every train view in
the bank and averages the kNN class scores over each test video's views. Retrieval: R@k
(``knn.retrieval_ks``) of each test video's mean feature against the train videos' mean features
("NN@1" in CoCLR). kNN is a cheap signal, never a headline protocol. ``--splits 1,2,3`` as for
``videossl eval linear``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from videossl.errors import VideosslError
from videossl.eval.common import (
    add_baseline_arguments,
    add_encoder_arguments,
    check_split_template,
    format_split,
    load_eval_recipe,
    parse_splits,
    report_console,
    report_header,
    resolve_encoder,
    write_markdown,
    write_split_summary,
)
from videossl.eval.knn import WeightedKNN, retrieval_recall_at_k
from videossl.eval.linear import (
    EvalConfig,
    _check_classes,
    _f,
    encoders_to_evaluate,
    extract_splits,
    view_lines,
)
from videossl.eval.probe import aggregate_views, per_class_accuracy

EPILOG = """\
examples:
  videossl eval knn --config recipes/eval/knn/synthetic.yaml --run runs/brave-synthetic --compare-random
  videossl eval knn --config recipes/eval/knn/hmdb51.yaml --run runs/brave-hmdb51 --splits 1,2,3
"""


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
    _check_classes(train, test, classes, cfg.data_dir)
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


def protocol_lines(cfg: EvalConfig, spec: dict[str, Any], ckpt: str | None, ckpt_hash: str | None) -> list[str]:
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
        f"checkpoint: {ckpt or 'none'}" + (f" (sha256 {ckpt_hash})" if ckpt_hash else ""),
    ]


def write_report(out_dir: Path, results: list[dict[str, Any]], protocol: list[str]) -> Path:
    ks = list(results[0]["knn"])
    rk = list(results[0]["retrieval"])
    lines = report_header("kNN evaluation", protocol, "Results (%)")
    lines += ["| encoder | " + " | ".join(f"kNN k={k}" for k in ks) + " | mean class acc | " + " | ".join(rk) + " |",
              "|---|" + "---|" * (len(ks) + 1 + len(rk))]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_f(r["knn"][k], ".1f", 100) for k in ks)
                     + f" | {_f(r['mean_class_accuracy'], '.1f', 100)} | "
                     + " | ".join(_f(r["retrieval"][k], ".1f", 100) for k in rk) + " |")
    return write_markdown(out_dir, lines)


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="eval recipe (YAML; may `compose:` fragments); uses its `knn:` section")
    add_encoder_arguments(p)
    p.add_argument("--k", default=None, help="comma-separated k values (overrides knn.k), e.g. 200,20")
    p.add_argument("--temperature", type=float, default=None, help="vote temperature T (overrides knn.temperature)")
    add_baseline_arguments(p, "knn")


def run_cli(args: argparse.Namespace) -> int:

    console = report_console()
    raw = load_eval_recipe(args)
    knn = dict(raw.get("knn") or {})
    if args.k:
        try:
            knn["k"] = [int(k) for k in args.k.split(",") if k.strip()]
        except ValueError:
            raise VideosslError(f"--k must be comma-separated integers, got {args.k!r}") from None
    if args.temperature is not None:
        if args.temperature <= 0:
            raise VideosslError(f"--temperature must be positive, got {args.temperature}")
        knn["temperature"] = args.temperature
    raw = {**raw, "knn": knn}
    cfg = EvalConfig.from_dict(raw)
    splits = parse_splits(args.splits)
    check_split_template(cfg.data_dir, splits)
    spec, ckpt = resolve_encoder(args, cfg.encoder, need_weights=not args.random_only)
    encoders, ckpt_hash = encoders_to_evaluate(args, spec, ckpt, console)
    run = Path(args.run) if args.run else None
    base_name = Path(cfg.data_dir.replace("{split}", "s" if splits else str(cfg.split))).name
    out_dir = Path(args.out) if args.out else ((run or Path("runs")) / "eval" / f"knn-{base_name}")
    ckpt_str = str(ckpt) if ckpt and not args.random_only else None

    def one(cfg_one: EvalConfig, out: Path) -> dict[str, Any]:
        from rich.table import Table

        out.mkdir(parents=True, exist_ok=True)
        cache = None if args.no_cache else out / "cache"
        results = [evaluate_knn(enc, cfg_one, name, cache, args.device) for name, enc in encoders]
        protocol = protocol_lines(cfg_one, spec, ckpt_str, ckpt_hash)
        table = Table(title=f"kNN on {cfg_one.data_dir} [{cfg_one.test_split}]")
        ks, rk = list(results[0]["knn"]), list(results[0]["retrieval"])
        for col in ["encoder", *(f"k={k} %" for k in ks), *rk]:
            table.add_column(col, justify="left" if col == "encoder" else "right")
        for r in results:
            table.add_row(r["name"], *(_f(r["knn"][k], ".1f", 100) for k in ks),
                          *(_f(r["retrieval"][k], ".1f", 100) for k in rk))
        console.print(table)
        for line in protocol:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
        payload = {"kind": "knn", "dataset": cfg_one.dataset_name, "split": cfg_one.split, "protocol": protocol,
                   "config": asdict(cfg_one), "encoder": spec, "checkpoint": ckpt_str, "checkpoint_sha256": ckpt_hash,
                   "results": results, "chance": 1 / len(results[0]["per_class"])}
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        report = write_report(out, results, protocol)
        console.print(f"wrote {out / 'results.json'} and {report}")
        return payload

    if not splits:
        one(EvalConfig.from_dict({**raw, "data_dir": format_split(cfg.data_dir, cfg.split)}), out_dir)
        return 0
    per_split = {s: one(EvalConfig.from_dict({**raw, "data_dir": format_split(cfg.data_dir, s), "split": s}),
                        out_dir / f"split{s}") for s in splits}
    write_split_summary(out_dir, "kNN evaluation", per_split)
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


__all__ = ["evaluate_knn", "run_cli", "add_cli_arguments"]
