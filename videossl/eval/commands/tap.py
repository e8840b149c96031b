"""Tracking any point: the TAP-Vid protocol (Doersch et al., arXiv:2211.03726) on a synthetic shard set or a
TAP-Vid pickle.

    videossl eval tap --baseline gt-flow --data data/synth-tap           # oracle: chained ground-truth flow
    videossl eval tap --run runs/brave-synthetic --compare-random         # frozen-feature correspondence probe

Trackers:

* ``--baseline static``: the query position on every frame, always visible;
* ``--baseline gt-flow``: chaining the synthetic set's ground-truth flow, visibility from its masks (an oracle:
  it checks that tracks, flow and visibility agree, and needs ``flow.npz`` / ``mask.npy``);
* ``--baseline flow-ae --run RUN``: chaining the forecast flows of a trained flow autoencoder (a `videossl fit`
  run of ``recipes/flow_ae/*``; every point predicted visible while in the frame);
* ``--run RUN`` of a TAPNext (``recipes/tapnext/*``): the trained tracker itself (occluded: visibility logit < 0);
* ``--run RUN`` / ``--encoder NAME --weights FILE`` (no ``--baseline``): the frozen-feature correspondence probe
  of the encoder (``forward_features``: Small3D, VideoResNet, TSM-ResNet, the flow AE's encoder): the query's
  feature bilinearly from its frame's map (nearest feature time index), cosine to every location of each
  frame, soft-argmax (``--tau``) within ``--window`` cells of the best match; occluded where the best
  cosine is below a threshold fitted (max AJ) on ``--val-split``. ``--compare-random`` adds the same
  encoder at random init (seed ``--seed``).

Protocol (arXiv:2211.03726 §3–4): every frame of each video at its own size; coordinates scaled to 256×256
(a pixel centre j of a W-px frame is at (j + 0.5)·256/W); query modes ``first`` (the first visible point of
each track, scored on later frames) and ``strided`` (queries every 5 frames, scored on all other frames);
OA, <δ for δ = 1, 2, 4, 8, 16 px, δ_avg, Jaccard_δ, AJ per video, then the mean over videos. A TAP-Vid
pickle (``--tapvid FILE``) is resized to 256×256 as TAP-Vid does.

Outputs in ``--out`` (default ``<run>/eval/tap-<data>`` or ``runs/eval/tap-<baseline>-<data>``): ``results.json``
(per-video rows, means; read by ``videossl eval compare``), ``per_video.csv``, ``report.md`` (protocol, means,
per-video table) and ``overlay-*.mp4`` for the first ``--overlays`` videos (true points as rings, hollow when
occluded; predictions as crosses, grey when predicted occluded; mode ``first``).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from videossl.errors import VideosslError
from videossl.eval.report import report_console, write_markdown
from videossl.eval.runs import (
    build_method,
    encoders_to_evaluate,
    load_method_weights,
    no_weights_lines,
    resolve_encoder,
    run_config,
)
from videossl.eval.tap import (
    HEADLINE,
    evaluate_items,
    flow_ae_tracker,
    gt_flow_tracker,
    metric_table,
    per_video_table,
    probe_tracker,
    static_tracker,
    synthetic_items,
    tapnext_tracker,
    tapvid_items,
)
from videossl.eval.tapvid import QUERY_MODES, QUERY_STRIDE, THRESHOLDS

EPILOG = """\
examples:
  videossl data synth --out data/synth-tap --preset tap --num-videos 64
  videossl eval tap --baseline gt-flow --data data/synth-tap
  videossl eval tap --baseline static --data data/synth
  videossl eval tap --baseline flow-ae --run runs/flow_ae-synthetic --data data/synth
  videossl eval tap --run runs/brave-synthetic --data data/synth --compare-random
  videossl eval tap --encoder small3d --weights runs/brave-synthetic/encoder.pt --tapvid tapvid_davis.pkl --val-tapvid val.pkl
"""

BASELINES = ("static", "gt-flow", "flow-ae")


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", choices=BASELINES, default=None, help="a baseline tracker instead of an encoder probe")
    p.add_argument("--run", default=None, help="a `videossl fit` run: its encoder (probe) or, with --baseline flow-ae, "
                                               "its flow autoencoder")
    p.add_argument("--encoder", default=None, help="encoder registry name or JSON {class_path, init_args} (probe)")
    p.add_argument("--weights", "--ckpt", dest="ckpt", default=None, help="encoder weights (default <run>/encoder.pt)")
    p.add_argument("--prefix", default="encoder.", help="key prefix of the encoder in the weights file")
    p.add_argument("--key-map", default=None, help="JSON prefix renames applied to the weights' keys")
    p.add_argument("--compare-random", action="store_true", help="also probe the encoder at random init")
    p.add_argument("--random-only", action="store_true", help="probe only the random-init encoder")
    p.add_argument("--data", default=None, help="a synthetic shard set with tracks.npz (default: the run's data_dir)")
    p.add_argument("--tapvid", default=None, help="a TAP-Vid pickle (DAVIS / RGB-Stacking / Kinetics) instead of --data")
    p.add_argument("--val-tapvid", default=None, help="TAP-Vid pickle to fit the probe's occlusion threshold on "
                                                      "(default: the --tapvid file itself, stated in the report)")
    p.add_argument("--split", default="test", help="split to evaluate (shard sets)")
    p.add_argument("--val-split", default="val", help="split the probe's occlusion threshold is fitted on")
    p.add_argument("--modes", nargs="+", choices=QUERY_MODES, default=list(QUERY_MODES), help="query modes")
    p.add_argument("--max-videos", type=int, default=None, help="at most this many test videos")
    p.add_argument("--max-val-videos", type=int, default=32, help="at most this many validation videos (probe)")
    p.add_argument("--tau", type=float, default=0.05, help="soft-argmax temperature on cosine similarity (probe)")
    p.add_argument("--window", type=int, default=2, help="soft-argmax window radius in feature cells (probe)")
    p.add_argument("--overlays", type=int, default=4, help="overlay mp4s for the first N videos")
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init encoder")
    p.add_argument("--decoder", default="auto", help="video decoder backend of the shard reader")


def _data_of(args: argparse.Namespace) -> str | None:
    if args.data or args.tapvid or not args.run:
        return args.data
    cfg, _ = run_config(Path(args.run))
    data = cfg.get("data") or {}
    return (data.get("init_args") or data).get("data_dir")


def run_cli(args: argparse.Namespace) -> int:
    console = report_console(stderr=True)
    start = time.perf_counter()
    data = _data_of(args)
    if not data and not args.tapvid:
        raise VideosslError("no data: give --data (a synthetic shard set) or --tapvid (a TAP-Vid pickle)")
    source = Path(args.tapvid or data)
    name = source.stem if args.tapvid else source.name
    modes = list(dict.fromkeys(args.modes))
    probe = args.baseline is None
    if probe and not (args.run or args.encoder or args.ckpt):
        raise VideosslError("give --baseline static|gt-flow|flow-ae, or an encoder to probe (--run / --encoder --weights)")
    if args.baseline == "flow-ae" and not args.run:
        raise VideosslError("--baseline flow-ae needs --run (a flow-autoencoder `videossl fit` run folder)")
    if args.baseline == "gt-flow" and args.tapvid:
        raise VideosslError("--baseline gt-flow needs ground-truth flow: a synthetic shard set (--data), not --tapvid")
    if args.out:
        out = Path(args.out)
    elif args.run:
        out = Path(args.run) / "eval" / (f"tap-{args.baseline}-{name}" if args.baseline else f"tap-{name}")
    else:
        out = Path("runs/eval") / f"tap-{args.baseline or 'probe'}-{name}"
    out.mkdir(parents=True, exist_ok=True)

    def items(split: str, limit: int | None, gt: bool):
        if args.tapvid:
            return tapvid_items(args.tapvid if split == args.split else (args.val_tapvid or args.tapvid), limit)
        return synthetic_items(str(data), split, limit, args.decoder, ground_truth=gt)

    trackers, protocol, extra = [], [], {}
    ckpt = None
    run_cfg = run_config(Path(args.run)) if args.run and not args.encoder else None
    is_tracker = run_cfg is not None and str((run_cfg[0].get("model") or {}).get("class_path", "")).endswith("TAPNextMethod")
    if probe and is_tracker:  # a trained point tracker: evaluated as it is, not probed
        probe = False
        model = build_method(run_cfg[0], str(run_cfg[1]))
        ckpt = Path(args.ckpt) if args.ckpt else Path(args.run) / "checkpoints" / "last.ckpt"
        load_method_weights(model, ckpt)
        tracker = model.encoder.eval().to(args.device)
        trackers.append(("tapnext", tapnext_tracker(tracker, args.device)))
        protocol += [f"TAPNext: {run_cfg[1]}, weights {ckpt}, isolate_queries {tracker.isolate_queries}, "
                     f"{tracker.img_size} px; occluded where the visibility logit < 0"]
    elif args.baseline == "static":
        trackers.append(("static", static_tracker()))
    elif args.baseline == "gt-flow":
        trackers.append(("gt-flow oracle", gt_flow_tracker()))
    elif args.baseline == "flow-ae":
        from videossl.eval.flow import build_model
        cfg, cfg_path = run_config(Path(args.run))
        model = build_model(cfg)
        ckpt = Path(args.ckpt) if args.ckpt else Path(args.run) / "checkpoints" / "last.ckpt"
        load_method_weights(model, ckpt)
        model.eval().to(args.device)
        trackers.append(("flow-ae forecast flow", flow_ae_tracker(model, args.device)))
        protocol += [f"flow autoencoder: {cfg_path}, weights {ckpt}, burn-in {model.burn_in} (zero flow before it)"]
    else:
        spec, ckpt = resolve_encoder(args, None, need_weights=not args.random_only)
        encs, info = encoders_to_evaluate(args, spec, ckpt, console)
        protocol += (info.lines() if info else no_weights_lines())
        val_src = (args.val_tapvid or args.tapvid) if args.tapvid else f"{data} [{args.val_split}]"
        val = list(items(args.val_split, args.max_val_videos, False))
        if not val:
            raise VideosslError(f"no validation videos in {val_src} to fit the occlusion threshold on")
        protocol += [f"encoder: {spec.get('class_path')} {json.dumps(spec.get('init_args') or {})}",
                     f"probe: forward_features, stride {getattr(encs[0][1], 'feature_stride', '?')} (time, space); "
                     f"cosine, soft-argmax tau {args.tau} within {args.window} cells of the argmax; nearest feature time "
                     "index; occlusion threshold on the best cosine fitted for max AJ on "
                     f"{len(val)} validation videos of {val_src}"
                     + (" (the test file itself: no separate validation set)" if args.tapvid and not args.val_tapvid
                        else "")]
        for label, enc in encs:
            tracker, th, vaj = probe_tracker(enc, val, modes, args.tau, args.window, args.device)
            trackers.append((label, tracker))
            extra[label] = {"threshold": th, "val_average_jaccard": vaj}
            protocol.append(f"{label}: thresholds " + ", ".join(f"{m} {th[m]:.3f} (val AJ {100 * vaj[m]:.1f})"
                                                                 for m in modes))
    results, table, per_video, overlays = [], [], [], []
    for i, (label, tracker) in enumerate(trackers):
        r = evaluate_items(items(args.split, args.max_videos, args.baseline == "gt-flow"), tracker, modes,
                           out if i == 0 else None, args.overlays if i == 0 else 0)
        table.append((label, r["means"], r["videos"]))
        for mode in modes:
            results.append({"name": label, "query_mode": mode, "num_test_videos": r["videos"][mode],
                            **r["means"][mode], **({k: v for k, v in extra.get(label, {}).items()})})
        per_video += [{"tracker": label, **row} for row in r["per_video"]]
        overlays += r["overlays"]
    seconds = round(time.perf_counter() - start, 1)
    kind = "tap" if probe else f"tap-{args.baseline or 'tapnext'}"
    d = {"kind": kind, "dataset": str(source), "split": None if args.tapvid else args.split, "modes": modes,
         "checkpoint": str(ckpt) if ckpt else None, "resolution": 256, "thresholds_px": list(THRESHOLDS),
         "query_stride": QUERY_STRIDE, "results": results, "per_video": per_video, "overlays": overlays,
         "seconds": seconds}
    (out / "results.json").write_text(json.dumps(d, indent=2))
    keys = ["tracker", "key", "mode", "queries", "frames", *[k for k in per_video[0] if k not in
                                                             ("tracker", "key", "mode", "queries", "frames")]]
    with open(out / "per_video.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(per_video)
    what = f"{args.baseline} baseline" if args.baseline else ("correspondence probe" if probe else trackers[0][0])
    lines = [f"# TAP evaluation: {what} on {source}" + ("" if args.tapvid else f" [{args.split}]"), "",
             "## Protocol", "",
             f"- data: {source}" + ("" if args.tapvid else f", split {args.split}") + f"; every frame at its own size "
             f"(TAP-Vid pickles: resized to 256x256); query modes {', '.join(modes)} (strided: every {QUERY_STRIDE} "
             "frames); coordinates scaled to 256x256; thresholds " + ", ".join(map(str, THRESHOLDS)) + " px; "
             "metrics per video, then the mean over videos (arXiv:2211.03726 §3)",
             *[f"- {x}" for x in protocol], f"- {seconds} s", "",
             "## Means (%)", "", *metric_table(table), "",
             "## Per video (%)" + (f": {trackers[0][0]}" if len(trackers) > 1 else ""), "",
             *per_video_table([row for row in per_video if row["tracker"] == trackers[0][0]]), "",
             "Overlays (mode first): " + (", ".join(Path(p).name for p in overlays) or "none")]
    write_markdown(out, lines)
    print("\n".join(metric_table(table)))
    head = ", ".join(f"{lab} {results[0][k] * 100:.1f}" for k, lab in HEADLINE)
    console.print(f"[green]wrote[/] {out}/results.json, report.md, per_video.csv and {len(overlays)} overlay(s) in "
                  f"{seconds} s ({trackers[0][0]}, {modes[0]}: {head})")
    return 0
