"""Linear evaluation of a frozen encoder: features → linear probe (softmax or SVM) → report.

    videossl eval linear --config recipes/eval/linear/synthetic.yaml --run runs/brave-synthetic --compare-random

The protocol (encoder, views, splits, probe) is fixed in the eval recipe and printed with every
number. ``--run`` takes the encoder's architecture from the training run's ``config.yaml`` and its
weights from ``encoder.pt`` (or ``--ckpt`` a Lightning checkpoint / state dict, loaded with
``weights_only=True``; ``--prefix``/``--key-map`` for foreign state dicts; a missing key is an
error, unexpected keys are listed). ``--compare-random`` also evaluates the same architecture
randomly initialised, the baseline every self-supervised number needs. Outputs (``--out``, default
``<run>/eval/linear-<data>``): ``results.json``, ``report.md`` and, per encoder, plots of
per-class accuracy, the reliability diagram and the risk–coverage curve.

Probes: ``probe.kind: softmax`` (L-BFGS / SGD / AdamW on standardised features) or ``svm``
(BraVe's StandardScaler + LinearSVC(C); Recasens et al., 2021). BraVe's protocol
(``recipes/eval/linear/*_brave_svm.yaml``) also sets ``train_views`` (random augmented clips) and
``train_passes: 10``: the train split is read 10 times, one augmented clip per video per pass, and
the SVM is fitted on all 10 embeddings per video; the test split uses the eval ``views``
(10 clips × 3 crops) and the SVM decision values are averaged per video.

Selective prediction (Geifman & El-Yaniv, 2017; Geifman et al., 2019), per encoder, on the per-video test scores:
confidence κ = max-softmax (MSP; softmax of the SVM decision values for ``svm``), margin, and a
*learned* confidence head g(features) ∈ [0, 1]: ``probe.confidence_holdout`` of the *train*
videos are held out (by video), an auxiliary probe of the same kind is trained on the rest, and a
logistic regression of its correctness on the held-out videos' mean features is g; g is then
applied to the test videos' mean features (the test split is never used to fit anything). For each
κ: ECE (15 bins; MSP and g only, margin is not a probability), AUROC (correct vs wrong), AURC,
E-AURC, and the instructed abstention "answer iff κ ≥ τ" at ``probe.tau`` (coverage, risk) plus a
τ sweep (``probe.taus``) with the payoff +1 correct, −τ/(1−τ) wrong, 0 abstained, for which
answering is optimal exactly when P(correct) > τ.

UCF101/HMDB51: report split 1 and the mean of the 3 official splits. Recipes name
``data_dir: data/ucf101-s{split}``; ``--splits 1,2,3`` evaluates each split into
``OUT/split<N>/`` and writes the mean ± std over the splits to ``OUT/results.json``/``report.md``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from videossl.eval.frozen import EvalConfig, FrozenEval, prepare_frozen_eval
from videossl.eval.linear import evaluate_encoder, protocol_lines
from videossl.eval.options import (
    add_baseline_arguments,
    add_encoder_arguments,
    load_eval_recipe,
)
from videossl.eval.report import fmt_num, report_console, write_report, write_split_summary

EPILOG = """\
examples:
  videossl eval linear --config recipes/eval/linear/synthetic.yaml --run runs/brave-synthetic --compare-random
  videossl eval linear --config recipes/eval/linear/synthetic_brave_svm.yaml --run runs/brave-synthetic
  videossl eval linear --config recipes/eval/linear/ucf101.yaml --run runs/brave-ucf101 --splits 1,2,3
  videossl eval linear --config recipes/eval/linear/ucf101.yaml --ckpt runs/brave-ucf101/checkpoints/last.ckpt \\
      --encoder '{"class_path": "videossl.models.TSMResNet", "init_args": {"depth": 50}}'
  videossl eval linear --config recipes/eval/linear/tv_swin3d_t_synthetic.yaml --encoder tv-swin3d_t --weights KINETICS400_V1
  videossl eval linear --config recipes/eval/linear/synthetic.yaml --weights converted.pt   # an encoder file
  videossl eval linear --config recipes/eval/linear/hmdb51.yaml --ckpt r3d.pth --prefix '' \\
      --key-map '{"backbone.": ""}' --encoder '{"class_path": "videossl.models.VideoResNetEncoder"}'
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="eval recipe (YAML; may `compose:` fragments)")
    add_encoder_arguments(p)
    add_baseline_arguments(p, "linear")


def run_cli(args: argparse.Namespace) -> int:
    console = report_console()
    ev = prepare_frozen_eval(args, load_eval_recipe(args), "linear", console)
    out_dir, splits = ev.out_dir, ev.splits
    per_split = {}
    for s, one, out in ev.runs():
        if s is not None:
            console.print(f"[bold]split {s}[/]: {one.data_dir}")
        per_split[s] = run_one(args, one, ev, out, console)
    if not splits:
        return 0
    summary = write_split_summary(out_dir, "Linear evaluation", per_split)
    for name, m in summary["mean"].items():
        top1 = m["top1"]
        console.print(f"  {name}: top-1 {100 * top1['mean']:.1f} ± {100 * top1['std']:.1f} % over splits {', '.join(splits)}")
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


def run_one(args, cfg: EvalConfig, ev: FrozenEval, out_dir: Path, console) -> dict[str, Any]:
    spec, encoders, weights = ev.spec, ev.encoders, ev.weights
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_cache else out_dir / "cache"
    results = []
    for name, enc in encoders:
        what = weights.source if name == "pretrained" and weights else "same architecture, random init"
        console.print(f"evaluating {name} ({what}) ...")
        results.append(evaluate_encoder(enc, cfg, out_dir, name, cache, args.device))
    protocol = protocol_lines(cfg, spec, ev.weights_lines())
    table = Table(title=f"linear probe on {cfg.data_dir} [{cfg.test_split}]")
    for col in ("encoder", "top-1 %", "top-5 %", "mean class %", "ECE", "AURC", "AURC learned", "cov@τ", "risk@τ"):
        table.add_column(col, justify="right" if col != "encoder" else "left")
    for r in results:
        learned = r["confidence"].get("learned", {}).get("aurc")
        table.add_row(r["name"], fmt_num(r["top1"], ".1f", 100), fmt_num(r["top5"], ".1f", 100),
                      fmt_num(r["mean_class_accuracy"], ".1f", 100), fmt_num(r["ece"]), fmt_num(r["aurc"]), fmt_num(learned),
                      fmt_num(r["coverage_at_tau"], ".2f"), fmt_num(r["risk_at_tau"]))
    console.print(table)
    for line in protocol:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    chance = 1 / len(results[0]["per_class"])
    console.print(f"  chance: {100 * chance:.1f} %")
    payload = {"kind": "linear", "dataset": cfg.dataset_name, "split": cfg.split, "protocol": protocol,
               "config": asdict(cfg), "encoder": spec,
               "checkpoint": weights.path if weights else None, "checkpoint_sha256": ev.ckpt_hash,
               "weights": weights.as_dict() if weights else None, "results": results, "chance": chance}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = write_report(out_dir, results, protocol)
    console.print(f"wrote {out_dir / 'results.json'} and {report}")
    return payload
