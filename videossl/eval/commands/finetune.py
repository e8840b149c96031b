"""Fine-tuning evaluation: the pretrained encoder + a linear head, all trained end to end.

    videossl eval finetune --config recipes/eval/finetune/synthetic.yaml --run runs/brave-synthetic
    videossl eval finetune --config recipes/eval/finetune/ucf101.yaml --run runs/brave-ucf101 --splits 1,2,3

The encoder comes from any videossl checkpoint (``--run``: the run's ``encoder.pt``; ``--ckpt``: a
Lightning ``last.ckpt`` or ``encoder.pt``) or from a plain state dict of another codebase
(``--prefix ''`` and ``--key-map '{"backbone.": ""}'``); every encoder key must be filled
(a missing key is an error), unexpected keys are listed. ``--random-init`` trains the same
architecture from scratch (the baseline).

Training (one :class:`FinetuneModule` under a Lightning ``Trainer`` with the shard-set
:class:`~videossl.data.loader.datamodule.VideoDataModule`): ``train_views`` (one random augmented clip),
head = dropout (``head_dropout``) + linear layer on the encoder's pooled feature, cross-entropy
with ``label_smoothing``, optimiser and schedule from ``optim`` (:class:`OptimConfig`: SGD/AdamW/
LARS, warmup + cosine, LR scaled by global batch / ``ref_batch_size``), ``epochs`` epochs.

* **Layer-wise LR decay** (``layer_decay``, VideoMAE 0.75): the encoder's parameters are cut into
  blocks in registration order (containers such as ``nn.Sequential``/``ModuleList`` are opened;
  a block holding only 1-D parameters, e.g. a norm layer, joins the block before it). With L
  blocks, block i (0 = the stem) gets ``lr × layer_decay^(L − i)`` and the head ``lr``.
  Bias and norm parameters have no weight decay.
* **Mixup / CutMix** (``mixup``): :class:`VideoMixup`, timm's batch-mode ``Mixup`` for video
  tensors (B, C, T, H, W): each batch draws λ ~ Beta(α, α) and pairs every clip with the batch
  reversed; CutMix cuts the *same* box from every frame (λ corrected to the box area); targets
  are the λ-mix of label-smoothed one-hots. (timm's own ``Mixup`` cuts the box in the last two
  dims of a 4-D image batch, so it is not used on 5-D clips.)
* **Test**: the eval ``test_views`` (K clips × C crops) of every test video; every rank scores its
  part of the split, the scores are gathered and de-duplicated by key (each video once), and
  ``aggregate`` averages logits (or softmax) over the K × C views. The report is the linear
  report's: top-1/top-5/mean class accuracy, per-class accuracy, MSP/margin ECE/AUROC/AURC,
  abstention at τ, and the three plots; the fine-tuned weights go to ``OUT/finetuned.pt``
  (``encoder.*`` and ``head.*`` keys).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from videossl.eval.finetune import FinetuneConfig, finetune, protocol_lines
from videossl.eval.options import (
    add_encoder_arguments,
    check_split_template,
    default_device,
    format_split,
    load_eval_recipe,
    output_base_name,
    parse_splits,
)
from videossl.eval.report import fmt_num, report_console, write_report, write_split_summary
from videossl.eval.runs import build_encoder, check_views, no_weights_lines, parse_key_map, random_init_spec, resolve_encoder

EPILOG = """\
examples:
  videossl eval finetune --config recipes/eval/finetune/synthetic.yaml --run runs/brave-synthetic
  videossl eval finetune --config recipes/eval/finetune/synthetic.yaml --run runs/brave-synthetic --random-init
  videossl eval finetune --config recipes/eval/finetune/ucf101.yaml --run runs/brave-ucf101 --splits 1,2,3
  videossl eval finetune --config recipes/eval/finetune/hmdb51.yaml --ckpt r3d50.pth --prefix '' \\
      --key-map '{"backbone.": ""}' --encoder '{"class_path": "videossl.models.VideoResNetEncoder"}'
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="finetune recipe (YAML; may `compose:` fragments)")
    add_encoder_arguments(p)
    p.add_argument("--random-init", action="store_true", help="train the same architecture from scratch (baseline)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--out", default=None, help="output folder (default: <run>/eval/finetune-<data name>)")
    p.add_argument("--device", default=default_device())
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    console = report_console()
    raw = load_eval_recipe(args)
    if args.epochs is not None:
        raw = {**raw, "epochs": args.epochs}
    cfg = FinetuneConfig.from_dict(raw)
    splits = parse_splits(args.splits)
    check_split_template(cfg.data_dir, splits)
    spec, ckpt = resolve_encoder(args, cfg.encoder, need_weights=not args.random_init)
    name = "random-init" if args.random_init else "pretrained"
    km = parse_key_map(args.key_map)
    run = Path(args.run) if args.run else None

    def make_encoder(note=None):
        torch.manual_seed(cfg.seed)
        if args.random_init:
            return build_encoder(random_init_spec(spec), None)
        return build_encoder(spec, ckpt, prefix=args.prefix, key_map=km, console=note, run=run)

    enc, weights = make_encoder(console)  # fail on bad weights before any data is read
    check_views(enc, cfg.train_views + cfg.test_views, console)
    weights_lines = weights.lines() if weights else no_weights_lines()
    base_name = output_base_name(cfg.data_dir, cfg.split, splits)
    out_dir = Path(args.out) if args.out else ((run or Path("runs")) / "eval" / f"finetune-{base_name}")

    def one(c: FinetuneConfig, out: Path) -> dict[str, Any] | None:
        out.mkdir(parents=True, exist_ok=True)
        r = finetune(make_encoder()[0], c, out, name, args.device, progress=not args.no_progress)
        if not r:  # not rank 0
            return None
        protocol = protocol_lines(c, spec, weights_lines)
        table = Table(title=f"fine-tuning on {c.data_dir} [{c.test_split}]")
        for col in ("encoder", "top-1 %", "top-5 %", "mean class %", "ECE", "AURC", "cov@τ", "risk@τ"):
            table.add_column(col, justify="left" if col == "encoder" else "right")
        table.add_row(r["name"], fmt_num(r["top1"], ".1f", 100), fmt_num(r["top5"], ".1f", 100),
                      fmt_num(r["mean_class_accuracy"], ".1f", 100), fmt_num(r["ece"]), fmt_num(r["aurc"]),
                      fmt_num(r["coverage_at_tau"], ".2f"), fmt_num(r["risk_at_tau"]))
        console.print(table)
        for line in protocol:
            console.print(f"  {line}", soft_wrap=True, highlight=False)
        payload = {"kind": "finetune", "dataset": c.dataset_name, "split": c.split, "protocol": protocol,
                   "config": asdict(c), "encoder": spec, "checkpoint": weights.path if weights else None,
                   "checkpoint_sha256": weights.sha256 if weights else None, "weights": weights.as_dict() if weights else None,
                   "results": [r], "chance": 1 / len(r["per_class"])}
        (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        report = write_report(out, [r], protocol, title="Fine-tuning evaluation")
        console.print(f"wrote {out / 'results.json'} and {report}")
        return payload

    if not splits:
        one(FinetuneConfig.from_dict({**raw, "data_dir": format_split(cfg.data_dir, cfg.split)}), out_dir)
        return 0
    per_split = {}
    for s in splits:
        p = one(FinetuneConfig.from_dict({**raw, "data_dir": format_split(cfg.data_dir, s), "split": s}),
                out_dir / f"split{s}")
        if p is not None:
            per_split[s] = p
    if per_split:
        write_split_summary(out_dir, "Fine-tuning evaluation", per_split)
        console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0
