"""Linear evaluation of a frozen *audio* backbone (BraVe's V/A broad backbone, or any spectrogram encoder).

    videossl eval audio --config recipes/eval/audio/synthetic.yaml --run runs/brave-synthetic-va --compare-random
    videossl eval audio --config recipes/eval/audio/esc50.yaml --run runs/brave-va --data-dir ~/data/ESC-50-master

The encoder: ``--run RUN`` takes the method's audio backbone (``--part audio``: the part a method names for
it, e.g. BraVe's broad audio encoder) with its architecture from ``config.yaml`` and its weights from
``checkpoints/last.ckpt``; or ``--encoder NAME|JSON`` (``audio-small``, ``audio-resnet50``) with
``--weights FILE`` (``--prefix`` selects its keys). ``--compare-random`` also evaluates the same
architecture randomly initialised. Data: a shard set whose videos carry sound (its train / test splits)
or an ESC-50 folder (``esc50:`` in the recipe or ``--esc50 DIR``; 5-fold cross-validation, each fold's
report and the mean ± std). Outputs (``--out``, default ``<run>/eval/audio-<data>``): ``results.json``,
``report.md``, per-class / reliability / risk-coverage plots per encoder (and per fold).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from videossl.errors import VideosslError
from videossl.eval.audio import AudioEvalConfig, audio_protocol_lines, load_items, timed_features
from videossl.eval.linear import evaluate_features
from videossl.eval.options import add_baseline_arguments, default_device
from videossl.eval.report import fmt_num, report_console, write_report, write_split_summary
from videossl.eval.runs import (
    build_encoder,
    build_from_spec,
    no_weights_lines,
    parse_encoder,
    parse_key_map,
    part_from_run,
    random_init_spec,
)
from videossl.recipes import load_recipe

EPILOG = """\
examples:
  videossl eval audio --config recipes/eval/audio/synthetic.yaml --run runs/brave-synthetic-va --compare-random
  videossl eval audio --config recipes/eval/audio/synthetic.yaml --run runs/brave-synthetic-vaf --part audio
  videossl eval audio --config recipes/eval/audio/esc50.yaml --esc50 ~/data/ESC-50-master --run runs/brave-va
  videossl eval audio --config recipes/eval/audio/esc50.yaml --esc50 ESC-50-master --encoder audio-small --random-only
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="audio eval recipe (YAML; may `compose:` fragments)")
    p.add_argument("--run", default=None, help="a `videossl fit` run folder: the audio backbone (--part) and last.ckpt")
    p.add_argument("--part", default="audio", help="which of the run's encoders (default: audio, e.g. BraVe's broad audio)")
    p.add_argument("--weights", "--ckpt", dest="ckpt", default=None,
                   help="weights (a Lightning checkpoint or a state dict; default with --run: checkpoints/last.ckpt)")
    p.add_argument("--encoder", default=None, help="encoder: a registry name (audio-small, audio-resnet50) or JSON spec")
    p.add_argument("--prefix", default=None, help="keep checkpoint keys with this prefix (default: the part's, or '')")
    p.add_argument("--key-map", default=None, help='JSON {"old_prefix": "new_prefix"} renames applied after --prefix')
    p.add_argument("--data-dir", default=None, help="shard set with sound (overrides the recipe's data_dir)")
    p.add_argument("--esc50", default=None, help="an ESC-50 folder (meta/esc50.csv + audio/): 5-fold cross-validation")
    add_baseline_arguments(p, "audio")
    p.set_defaults(device=default_device())


def _resolve(args, cfg: AudioEvalConfig) -> tuple[dict[str, Any], Path | None, str]:
    """(encoder spec, weights or None, key prefix)."""
    if args.run:
        run = Path(args.run)
        if not run.is_dir():
            raise VideosslError(f"run folder {run} does not exist")
        spec, ckpt, prefix = part_from_run(run, args.part)
        if args.encoder:
            spec = parse_encoder(args.encoder)
        return spec, Path(args.ckpt) if args.ckpt else ckpt, prefix if args.prefix is None else args.prefix
    if args.encoder:
        spec = parse_encoder(args.encoder)
    elif cfg.encoder:
        spec = cfg.encoder
    else:
        raise VideosslError("no audio encoder: give --run (a run with an audio backbone), --encoder or `encoder:` in the recipe")
    if args.ckpt is None and not args.random_only:
        raise VideosslError("no weights: give --run or --weights (or --random-only)")
    return spec, Path(args.ckpt) if args.ckpt else None, args.prefix or ""


def run_cli(args: argparse.Namespace) -> int:
    console = report_console()
    raw = load_recipe(args.config)
    if args.data_dir:
        raw = {**raw, "data_dir": args.data_dir, "esc50": None}
    if args.esc50:
        raw = {**raw, "esc50": args.esc50, "data_dir": None}
    cfg = AudioEvalConfig.from_dict(raw)
    spec, ckpt, prefix = _resolve(args, cfg)
    encoders, info = [], None
    if not args.random_only:
        torch.manual_seed(args.seed)
        enc, info = build_encoder(spec, ckpt, prefix=prefix, key_map=parse_key_map(args.key_map), console=console)
        encoders.append(("pretrained", enc))
    if args.compare_random or args.random_only:
        torch.manual_seed(args.seed)
        encoders.append(("random-init", build_from_spec(random_init_spec(spec))))
    weights_lines = info.lines() if info else no_weights_lines()
    base = Path(args.run) if args.run else Path("runs")
    out_dir = Path(args.out) if args.out else base / "eval" / f"audio-{cfg.dataset_name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rounds, classes = load_items(cfg)
    audio = cfg.spec()
    protocol = audio_protocol_lines(cfg, spec, weights_lines, args.part if args.run else "given encoder")
    per_round: dict[str, dict[str, Any]] = {}
    for name_round, (train_items, test_items) in rounds.items():
        out = out_dir / f"split{name_round}" if name_round else out_dir
        out.mkdir(parents=True, exist_ok=True)
        results, skipped = [], {}
        for name, enc in encoders:
            console.print(f"evaluating {name}{f' (fold {name_round})' if name_round else ''} ...")
            train, t1 = timed_features(enc, train_items, audio, cfg.train_clips or cfg.num_clips, cfg, args.device)
            test, t2 = timed_features(enc, test_items, audio, cfg.num_clips, cfg, args.device)
            skipped = {"train": train.skipped, "test": test.skipped}
            r = evaluate_features(train.features, test.features, classes, cfg.probe, out, name, t1 + t2)
            r["skipped_no_audio"] = {k: len(v) for k, v in skipped.items()}
            results.append(r)
        lines = protocol + [f"recordings without readable audio (skipped): train {len(skipped['train'])}, "
                            f"test {len(skipped['test'])}" + (f", e.g. {skipped['train'][:1] or skipped['test'][:1]}"
                                                              if skipped["train"] or skipped["test"] else "")]
        title = f"audio linear probe on {cfg.dataset_name}" + (f" [fold {name_round}]" if name_round else "")
        _print_table(console, results, title)
        payload = {"kind": "audio", "dataset": cfg.dataset_name, "split": name_round or None, "protocol": lines,
                   "config": raw, "encoder": spec, "checkpoint": info.path if info else None,
                   "checkpoint_sha256": info.sha256 if info else None,
                   "weights": info.as_dict() if info else None, "results": results, "chance": 1 / len(classes),
                   "skipped": skipped}
        (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        write_report(out, results, lines, title="Audio linear evaluation")
        per_round[name_round] = payload
    for line in protocol:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    console.print(f"  chance: {100 / len(classes):.1f} %")
    if len(per_round) > 1:
        summary = write_split_summary(out_dir, "Audio linear evaluation (ESC-50 folds)", per_round)
        for name, m in summary["mean"].items():
            t = m["top1"]
            console.print(f"  {name}: top-1 {100 * t['mean']:.1f} ± {100 * t['std']:.1f} % over folds {', '.join(per_round)}")
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


def _print_table(console, results, title: str) -> None:
    table = Table(title=title)
    for col in ("encoder", "top-1 %", "top-5 %", "mean class %", "ECE", "AURC"):
        table.add_column(col, justify="right" if col != "encoder" else "left")
    for r in results:
        table.add_row(r["name"], fmt_num(r["top1"], ".1f", 100), fmt_num(r["top5"], ".1f", 100),
                      fmt_num(r["mean_class_accuracy"], ".1f", 100), fmt_num(r["ece"]), fmt_num(r["aurc"]))
    console.print(table)
