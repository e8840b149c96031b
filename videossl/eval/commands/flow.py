"""Flow, next-frame and label-propagation evaluation of a flow autoencoder on ground-truth video.

    videossl eval flow --run runs/flow_ae-synthetic

Needs a shard set with ``flow.npz`` and ``mask.npy`` members (``videossl data synth``). Each video
is read whole (``--frames``, default all) at its full frame (no crop, no resize), so ground truth and
predictions share pixels. The model forecasts the backward flow B_{t+1→t} and the frame Y_{t+1} from
frames ≤ t, for t ≥ burn_in. Reported (means over forecast steps, then videos):

* **EPE** (px, full resolution) of the forecast flow against ``flow.npz['backward']`` on all pixels,
  on foreground pixels (mask of frame t+1 > 0: object or distractor) and on moving pixels
  (‖GT‖ ≥ 0.5 px), beside the zero-flow baseline (‖GT‖) on the same pixels. Forecast, not estimate:
  the model never sees frame t+1.
* **Next frame**: PSNR (data range 1) and SSIM (Gaussian 11×11, σ 1.5) of Ŷ_{t+1} clamped to [0, 1],
  in the model's channel space (grey when the model converts RGB), beside copy-last-frame (Y_t).
* **Label propagation**: the GT mask at a start frame s ≥ burn_in is backward-warped along the
  forecast flows k steps (no re-seeding; one-hot per object, zero padding = background, argmax);
  IoU per object present at s (1.0 when prediction and truth are both empty), averaged over
  objects, start frames, then videos, for k ∈ {1, 2, 5, 10}; beside copy-mask (zero flow) and
  propagation with the ground-truth flow (upper bound).

Outputs in ``--out`` (default ``<run>/eval/flow-<data>``): ``results.json``, ``report.md`` and one
PNG panel per video for the first ``--panels`` videos (frames, forecast frames, true vs forecast
flow on a common colour scale (torchvision ``flow_to_image``), masks propagated from frame burn_in).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from videossl.errors import VideosslError
from videossl.eval.flow import build_model, evaluate, report_lines
from videossl.eval.report import report_console, write_markdown
from videossl.eval.runs import load_method_weights
from videossl.recipes import load_recipe

EPILOG = """\
examples:
  videossl eval flow --run runs/flow_ae-synthetic
  videossl eval flow --run runs/flow_ae-synthetic --data data/synth --split test --panels 8
  videossl eval flow --config recipes/flow_ae/synthetic.yaml --random     # untrained model (sanity baseline)
"""

def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="a `videossl fit` run folder (config.yaml + checkpoints/last.ckpt)")
    p.add_argument("--config", default=None, help="a training recipe / config YAML giving the model (instead of --run)")
    p.add_argument("--ckpt", default=None,
                   help="weights (Lightning checkpoint or state dict); default <run>/checkpoints/last.ckpt")
    p.add_argument("--random", action="store_true", help="evaluate the model randomly initialised (no weights)")
    p.add_argument("--data", default=None, help="shard set with flow.npz/mask.npy (default: the config's data_dir)")
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: all); k=10 needs burn_in + 11")
    p.add_argument("--max-videos", type=int, default=None, help="evaluate at most this many videos")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--panels", type=int, default=4, help="PNG panels for the first N videos")
    p.add_argument("--out", default=None, help="output folder (default <run>/eval/flow-<data>)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init (with --random)")


def run_cli(args: argparse.Namespace) -> int:
    console = report_console(stderr=True)
    start = time.perf_counter()
    if not args.run and not args.config:
        raise VideosslError("give --run RUN (a `videossl fit` folder) or --config RECIPE")
    run = Path(args.run) if args.run else None
    cfg_path = Path(args.config) if args.config else run / "config.yaml"
    if not cfg_path.is_file():
        raise VideosslError(f"{cfg_path} does not exist")
    cfg = load_recipe(cfg_path)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    ckpt = None
    if not args.random:
        ckpt = Path(args.ckpt) if args.ckpt else (run / "checkpoints" / "last.ckpt" if run else None)
        if ckpt is None:
            raise VideosslError("no weights: give --run, --ckpt, or --random for an untrained model")
        load_method_weights(model, ckpt)
    data = args.data or ((cfg.get("data") or {}).get("init_args") or cfg.get("data") or {}).get("data_dir")
    if not data:
        raise VideosslError("no data: give --data")
    out = Path(args.out) if args.out else ((run or Path("runs/eval")) / "eval" / f"flow-{Path(str(data)).name}")
    r = evaluate(model, str(data), args.split, args.frames, args.batch_size, args.num_workers, args.max_videos,
                 out, args.panels, args.device)
    r.update({"checkpoint": str(ckpt) if ckpt else None, "config": str(cfg_path), "data": str(data), "split": args.split,
              "preset": getattr(model, "preset", None), "seconds": round(time.perf_counter() - start, 1)})
    (out / "results.json").write_text(json.dumps(r, indent=2))
    lines = [f"# Flow evaluation: {cfg_path} ({'random init' if args.random else ckpt}) on {data} [{args.split}]", ""]
    lines += report_lines(r)
    write_markdown(out, lines)
    print("\n".join(report_lines(r)))
    console.print(f"[green]wrote[/] {out}/results.json, report.md and {len(r['panels'])} panel(s) in {r['seconds']} s")
    return 0
