"""Zero-shot evaluation of a video–text model: text↔video retrieval R@1/5/10 and zero-shot
classification by class-name prompts.

Pure metric functions (tested against hand computations):

* :func:`recall_at_k` — for each query row of a similarity matrix, is any gallery item with the
  query's id among its top k? (several videos may share one caption: all of them count);
* :func:`retrieval_metrics` — text→video and video→text R@1/5/10 and median rank;
* :func:`zeroshot_accuracy` — top-1/top-5 and mean per-class accuracy of ``argmax video · classᵀ``;
* :func:`class_embeddings` — mean of the normalised embeddings of every prompt of a class;
* :func:`caption_zeroshot` (synthetic set) — classification among the video's own caption with its
  motion phrase set to each class in turn: appearance held fixed, only motion decides.

``videossl eval zeroshot --run RUN`` rebuilds the model of a ``videossl fit`` run (its
``config.yaml``), loads ``checkpoints/last.ckpt``, embeds every test video (eval views of the run,
unmasked, embeddings averaged over clips × crops) and every caption, and reports the numbers next
to chance (1/N for retrieval R@1, 1/classes for classification). Duplicate samples (the padding of
the last eval batch) are dropped; identical captions are one retrieval target shared by their videos.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.table import Table

from videossl.data.loader import ViewSpec
from videossl.errors import VideosslError
from videossl.eval.report import report_console
from videossl.eval.retrieval import evaluate, load_run_model

EPILOG = """\
Examples:
  videossl eval zeroshot --run runs/long-video-synthetic                 # test split, run's eval views
  videossl eval zeroshot --run runs/long-video-synthetic --split train --device cuda
  videossl eval zeroshot --run RUN --ckpt RUN/checkpoints/last.ckpt --out results/zs
Chance: R@1 = 1/(number of distinct captions), zero-shot top-1 = 1/(number of classes).
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, help="a `videossl fit` run folder of a video–text model (config.yaml + checkpoints/)")
    p.add_argument("--ckpt", default=None, help="checkpoint (default RUN/checkpoints/last.ckpt)")
    p.add_argument("--data-dir", default=None, help="shard-set folder (default: the run's data_dir)")
    p.add_argument("--split", default="test")
    p.add_argument("--views", default=None, help="eval views as JSON list of ViewSpec dicts (default: the run's eval_views)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="folder for results.json (default RUN/zeroshot)")


def run_cli(args: argparse.Namespace) -> int:
    run = Path(args.run)
    model, data = load_run_model(run, Path(args.ckpt) if args.ckpt else None)
    data_dir = args.data_dir or data.get("data_dir")
    if not data_dir:
        raise VideosslError("no data: give --data-dir (the run's config names no data_dir)")
    views = json.loads(args.views) if args.views else data.get("eval_views")
    if not views:
        raise VideosslError("no eval views: give --views (the run's config has no eval_views)")
    views = [ViewSpec(**{**v, "train": False}) if isinstance(v, dict) else v for v in views]
    res = evaluate(model, data_dir, args.split, views, args.device, args.batch_size)
    table = Table(title=f"zero-shot: {run} [{args.split}, {res['videos']} videos]")
    table.add_column("metric")
    table.add_column("value %", justify="right")
    table.add_column("chance %", justify="right")
    for k in ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10"):
        if k in res:
            table.add_row(k, f"{100 * res[k]:.1f}", f"{100 * min(1.0, int(k.split('_r')[1]) * res['chance_r1']):.1f}")
    for k in ("zs_top1", "zs_top5", "zs_mean_class", "zs_caption_top1"):
        if k in res:
            ch = res["chance_top1"] * (min(5, res["classes"]) if k == "zs_top5" else 1)
            table.add_row(k, f"{100 * res[k]:.1f}", f"{100 * ch:.1f}")
    report_console().print(table)
    out = Path(args.out) if args.out else run / "zeroshot"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(f"results: {out / 'results.json'}")
    return 0


__all__ = ["add_cli_arguments", "run_cli"]
