"""Weighted kNN and nearest-neighbour retrieval of a frozen encoder.

    videossl eval knn --config recipes/eval/knn/synthetic.yaml --run runs/brave-synthetic --compare-random

Features come from the same cached, multi-view extraction as ``videossl eval linear`` (the
recipe's ``views``). The bank is the train split, the queries the test split. InstDisc-style (Wu et al., 2018)
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from videossl.errors import VideosslError
from videossl.eval.frozen import EvalConfig, prepare_frozen_eval
from videossl.eval.knn_eval import evaluate_knn, protocol_lines, write_report
from videossl.eval.options import (
    add_baseline_arguments,
    add_encoder_arguments,
    load_eval_recipe,
)
from videossl.eval.report import fmt_num, report_console, write_split_summary

EPILOG = """\
examples:
  videossl eval knn --config recipes/eval/knn/synthetic.yaml --run runs/brave-synthetic --compare-random
  videossl eval knn --config recipes/eval/knn/hmdb51.yaml --run runs/brave-hmdb51 --splits 1,2,3
"""


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
    ev = prepare_frozen_eval(args, {**raw, "knn": knn}, "knn", console)
    spec, encoders, out_dir, splits, weights = ev.spec, ev.encoders, ev.out_dir, ev.splits, ev.weights

    def one(cfg_one: EvalConfig, out: Path) -> dict[str, Any]:
        out.mkdir(parents=True, exist_ok=True)
        cache = None if args.no_cache else out / "cache"
        results = [evaluate_knn(enc, cfg_one, name, cache, args.device) for name, enc in encoders]
        protocol = protocol_lines(cfg_one, spec, ev.weights_lines())
        table = Table(title=f"kNN on {cfg_one.data_dir} [{cfg_one.test_split}]")
        ks, rk = list(results[0]["knn"]), list(results[0]["retrieval"])
        for col in ["encoder", *(f"k={k} %" for k in ks), *rk]:
            table.add_column(col, justify="left" if col == "encoder" else "right")
        for r in results:
            table.add_row(r["name"], *(fmt_num(r["knn"][k], ".1f", 100) for k in ks),
                          *(fmt_num(r["retrieval"][k], ".1f", 100) for k in rk))
        console.print(table)
        for line in protocol:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
        payload = {"kind": "knn", "dataset": cfg_one.dataset_name, "split": cfg_one.split, "protocol": protocol,
                   "config": asdict(cfg_one), "encoder": spec, "checkpoint": weights.path if weights else None,
                   "checkpoint_sha256": ev.ckpt_hash, "weights": weights.as_dict() if weights else None,
                   "results": results, "chance": 1 / len(results[0]["per_class"])}
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        report = write_report(out, results, protocol)
        console.print(f"wrote {out / 'results.json'} and {report}")
        return payload

    per_split = {s: one(cfg_one, out) for s, cfg_one, out in ev.runs()}
    if not splits:
        return 0
    write_split_summary(out_dir, "kNN evaluation", per_split)
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


__all__ = ["add_cli_arguments", "run_cli"]
