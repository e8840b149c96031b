"""Online evaluation of a streaming (pipelined) model: per-frame predictions with their delay, accuracy at
each frame index, FLOPs per frame (``torch.utils.flop_counter``), frames/s and latency against the
sequential per-frame model measured in the same run.

    videossl eval online --config recipes/streaming/bp_diff.yaml --weights runs/stream-bp-diff/checkpoints/last.ckpt
    videossl eval online --run runs/stream-bp-diff --clocks 1 1 2 4

The model is built from a recipe (``--config``) or a run folder's ``config.yaml`` (``--run``); ``--weights`` is a
Lightning checkpoint or state dict of the whole module (default with ``--run``: its last checkpoint); without
weights the model is its random initialisation (say so). ``--clocks`` overrides the clocks for evaluation.
``--reversal-pair A B`` (default the synthetic set's ``translate_left translate_right``, where the data has both)
also scores that pair of classes with the position cue removed: every clip of the pair forwards and backwards
(``StreamingClassifier.reversal_pair_accuracy``; a model that sees one frame at a time scores exactly 0.5).
Writes ``results.json`` (and prints it) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videossl.data.loader.datamodule import VideoDataModule
from videossl.errors import VideosslError
from videossl.eval.online import flops_per_frame, online_predictions, timing
from videossl.eval.runs import build_method, load_method_weights, run_config
from videossl.recipes import load_recipe

EPILOG = """\
Examples:
  videossl eval online --config recipes/streaming/bp_diff.yaml --weights runs/stream-bp-diff/checkpoints/last.ckpt
  videossl eval online --run runs/stream-bp-diff --clocks 1 1 2 4     # slower clocks for the upper stages
  videossl eval online --config recipes/streaming/bp_diff_clocks.yaml --data data/synth --max-batches 2   # random init
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="a streaming recipe (recipes/streaming/*.yaml)")
    src.add_argument("--run", help="a `videossl fit` run folder of a streaming recipe")
    p.add_argument("--weights", default=None, help="checkpoint of the whole module (default: <run>/checkpoints/last.ckpt)")
    p.add_argument("--data", default=None, help="shard set (default: the config's data.data_dir)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--clocks", type=int, nargs="+", default=None, help="override the stages' clocks")
    p.add_argument("--max-batches", type=int, default=0, help="score only this many batches (0: all)")
    p.add_argument("--reversal-pair", nargs=2, default=None, metavar=("A", "B"),
                   help="two classes that are each other played backwards, scored forwards and backwards (default: "
                        "translate_left translate_right when the data has them; 'none' 'none' to skip)")
    p.add_argument("--out", default="runs/eval-online", help="folder for results.json")


def run_cli(args: argparse.Namespace) -> int:
    if args.run:
        cfg, _ = run_config(Path(args.run))
        weights = args.weights or str(Path(args.run) / "checkpoints" / "last.ckpt")
    else:
        cfg, weights = load_recipe(args.config), args.weights
    cfg.pop("compose", None)
    data_cfg = dict(cfg.get("data") or {})
    if args.data:
        data_cfg["data_dir"] = args.data
    dm = VideoDataModule(**data_cfg)
    from videossl.data.shards.format import load_manifest

    classes = list(load_manifest(data_cfg["data_dir"])["classes"])
    num_classes = len(classes)
    pair_names = args.reversal_pair or (["translate_left", "translate_right"]
                                        if {"translate_left", "translate_right"} <= set(classes) else None)
    if pair_names and pair_names != ["none", "none"]:
        missing = [c for c in pair_names if c not in classes]
        if missing:
            raise VideosslError(f"--reversal-pair: {missing} not among the data's classes {classes}")
        pair = (classes.index(pair_names[0]), classes.index(pair_names[1]))
    else:
        pair = None
    model = build_method(cfg, init_overrides={"num_classes": num_classes})
    if not hasattr(model, "online_logits"):
        raise VideosslError(f"{type(model).__name__} is not a streaming model (no online_logits)")
    if weights:
        if not Path(weights).is_file():
            raise VideosslError(f"--weights {weights}: no such file")
        load_method_weights(model, Path(weights))
    if args.clocks:
        if len(args.clocks) != model.encoder.num_stages:
            raise VideosslError(f"--clocks: give {model.encoder.num_stages} values")
        model.encoder.clocks = list(args.clocks)
    model.eval()
    dm.setup("fit" if args.split == "val" else "test")
    loader = dm.val_dataloader() if args.split == "val" else dm.test_dataloader()
    loader = loader[0] if isinstance(loader, list) else loader
    correct, n, delays = None, 0, None
    pair_ok = pair_n = 0
    frame = None
    for i, batch in enumerate(loader):
        if args.max_batches and i >= args.max_batches:
            break
        keep = ~batch["duplicate"]
        x, y = model.clip_inputs(batch)[keep], batch["label"][keep]
        r = online_predictions(model, x, y)
        if pair is not None:
            c, s = model.reversal_pair_accuracy(model.view_clip(batch)[keep], y, pair)
            pair_ok, pair_n = pair_ok + c, pair_n + s
        correct = r["correct"] if correct is None else correct + r["correct"]
        n, delays, frame = n + r["n"], r["delays"], x[:1, :, 0]
    if not n:
        raise VideosslError(f"no {args.split} clips read")
    first = model.first_scored_tick()
    per_frame = [float(c) / n for c in correct]
    online = sum(per_frame[first:]) / max(len(per_frame) - first, 1)
    flops = flops_per_frame(model.encoder, frame)
    times = timing(model.encoder, frame)
    res = {"model": type(model).__name__, "mode": model.mode, "clocks": model.encoder.clocks, "skips": model.encoder.skips,
           "lagged_skips": model.encoder.lagged,
           "weights": weights or "random init", "split": args.split, "clips": n, "online_acc": online,
           "acc_per_frame_index": per_frame, "delay_per_tick": delays, "first_scored_tick": first,
           "flops_per_frame": flops, "timing_one_process": times}
    if pair is not None:
        res["reversal_pair"] = {"classes": pair_names, "acc": pair_ok / pair_n if pair_n else None, "scored": pair_n}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "acc_per_frame_index"}, indent=1))
    print("accuracy per frame index:", " ".join(f"{a:.3f}" for a in per_frame))
    return 0
