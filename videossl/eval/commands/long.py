"""Long-video evaluation of a video–text run: segments aggregated (ShortViViT + pooling) vs the long encoder.

    videossl eval long --run runs/long-video-synthetic --data-dir data/synth-long --aggregate segments --pool mean
    videossl eval long --run runs/long-video-stage2-synthetic --aggregate long
    videossl eval long --compare runs/long-video-synthetic/eval/long-* runs/long-video-stage2-synthetic/eval/long-*

The comparison of arXiv:2312.07395 (§6.1–6.2, Table 3) on the long synthetic set (``videossl data synth --preset
long``): both read the first ``--frames`` frames of each video at ``--fps`` from the start, unmasked. ``segments``
cuts them into consecutive ``--segment-frames`` segments, encodes each on its own and pools the segment vectors
(``--pool mean``: order-invariant; ``--pool attention``: learned queries with segment-position embeddings,
trained on the train split); ``long`` runs the encoder once over all frames. Metrics on the test split, each
next to its chance level: order-sensitive zero-shot (the caption against the same events in other orders),
text→video / video→text retrieval R@1/5/10, and a linear probe on the event-order label (first, last event)
trained on the train split. Algorithms: :mod:`videossl.eval.long_video`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from videossl.errors import VideosslError
from videossl.eval.frozen import ProbeConfig
from videossl.eval.long_video import (
    AGGREGATES,
    COMPARE_COLUMNS,
    METRIC_ROWS,
    POOLS,
    LongEvalOptions,
    compare_markdown,
    compare_rows,
    evaluate_long,
    protocol_lines,
    write_long_report,
)
from videossl.eval.options import default_device
from videossl.eval.report import fmt_num, report_console
from videossl.eval.retrieval import load_run_model
from videossl.eval.runs import check_views, file_hash, run_config

EPILOG = """\
examples:
  # (a) ShortViViT + aggregation: the stage-1 run on consecutive 16-frame segments of the long videos
  videossl eval long --run runs/long-video-synthetic --data-dir data/synth-long --aggregate segments --pool mean
  videossl eval long --run runs/long-video-synthetic --data-dir data/synth-long --aggregate segments --pool attention
  # (b) the stage-2 long encoder over the same 128 frames, unmasked
  videossl eval long --run runs/long-video-stage2-synthetic --aggregate long
  # side by side
  videossl eval long --compare runs/long-video-synthetic/eval runs/long-video-stage2-synthetic/eval --out cmp.md
Chance: order zero-shot 1/(1 + shuffled captions), R@k = k/(distinct captions), probe 1/(event-order classes).
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="a `videossl fit` run of a video-text model (config.yaml + checkpoints/)")
    p.add_argument("--ckpt", default=None, help="checkpoint (default RUN/checkpoints/last.ckpt)")
    p.add_argument("--data-dir", default=None, help="a long synthetic shard set (default: the run's data_dir)")
    p.add_argument("--aggregate", choices=AGGREGATES, default="long",
                   help="segments: the encoder on consecutive segments, vectors pooled; long: one pass over all frames")
    p.add_argument("--segment-frames", type=int, default=16, help="frames per segment (segments only)")
    p.add_argument("--segment-stride", type=int, default=1,
                   help="every k-th frame of a segment goes to the encoder (2: 16-frame segments as 8-frame clips)")
    p.add_argument("--pool", choices=tuple(POOLS), default="mean", help="how segment vectors become one (segments only)")
    p.add_argument("--no-positions", action="store_true", help="attention pool without segment-position embeddings")
    p.add_argument("--frames", type=int, default=128,
                   help="frames read from each video's start (128: stage 2's view; 256 holds every long-preset video whole)")
    p.add_argument("--fps", type=float, default=1.0, help="sampling rate of those frames")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the encoder's img_size)")
    p.add_argument("--pool-epochs", type=int, default=100)
    p.add_argument("--pool-lr", type=float, default=1e-3)
    p.add_argument("--pool-seed", type=int, default=0)
    p.add_argument("--probe-seed", type=int, default=0)
    p.add_argument("--train-split", default="train", help="split the probe and the attention pool are fitted on")
    p.add_argument("--split", default="test", help="split every metric is computed on")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=default_device())
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--out", default=None, help="output folder (default RUN/eval/long-<aggregation>-<data name>)")
    p.add_argument("--compare", nargs="+", default=None, metavar="RESULTS",
                   help="instead: put these `eval long` results (results.json files or folders) side by side")


def run_compare(args: argparse.Namespace) -> int:
    rows = compare_rows(args.compare)
    table = Table(title="long-video evaluation: side by side")
    for c in COMPARE_COLUMNS:
        table.add_column(c)
    for r in rows:
        table.add_row(*(r[c] for c in COMPARE_COLUMNS))
    console = report_console()
    console.print(table)
    md = compare_markdown(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
        console.print(f"wrote {args.out}")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    if args.compare:
        return run_compare(args)
    if not args.run:
        raise VideosslError("give --run RUN (a video-text run) or --compare RESULTS ...")
    run = Path(args.run)
    ckpt = Path(args.ckpt) if args.ckpt else run / "checkpoints" / "last.ckpt"
    model, data = load_run_model(run, ckpt)
    cfg, _ = run_config(run)
    data_dir = args.data_dir or data.get("data_dir")
    if not data_dir:
        raise VideosslError("no data: give --data-dir (the run's config names no data_dir)")
    size = args.size or int(getattr(model.encoder, "img_size", (48, 48))[0])
    o = LongEvalOptions(aggregate=args.aggregate, frames=args.frames, target_fps=args.fps, size=size,
                        segment_frames=args.segment_frames, segment_stride=args.segment_stride, pool=args.pool,
                        positions=not args.no_positions, pool_epochs=args.pool_epochs, pool_lr=args.pool_lr,
                        pool_seed=args.pool_seed, probe=ProbeConfig(seed=args.probe_seed))
    console = report_console()
    enc_frames = o.segment_frames // o.segment_stride if o.aggregate == "segments" else o.frames
    check_views(model.encoder, [{"name": o.aggregate, "frames": enc_frames, "size": size}], console, "encoder input")
    out = Path(args.out) if args.out else run / "eval" / f"long-{o.name}-{Path(data_dir).name}"
    out.mkdir(parents=True, exist_ok=True)
    res = evaluate_long(model, data_dir, o, train_split=args.train_split, test_split=args.split,
                        batch_size=args.batch_size, device=args.device,
                        cache_dir=None if args.no_cache else out.parent / "cache-long")  # shared by the pools
    sha = file_hash(ckpt)
    weights = [f"weights: {ckpt} (sha256 {sha})"]
    protocol = protocol_lines(o, cfg.get("model") or {}, data_dir, (args.train_split, args.split), weights, res)
    table = Table(title=f"eval long: {o.name} [{args.split}, {res['num_test_videos']} videos]")
    for col in ("metric", "value %", "chance %"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label, chance in METRIC_ROWS:
        if res.get(key) is not None:
            table.add_row(label, fmt_num(res[key], ".1f", 100), fmt_num(chance(res), ".1f", 100))
    console.print(table)
    for line in protocol:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    payload = {"kind": "long", "dataset": Path(data_dir).name, "data_dir": str(data_dir), "split": args.split,
               "protocol": protocol, "options": asdict(o), "checkpoint": str(ckpt), "checkpoint_sha256": sha,
               "results": [res]}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = write_long_report(out, payload)
    console.print(f"wrote {out / 'results.json'} and {report}")
    return 0


__all__ = ["add_cli_arguments", "run_cli"]
