"""A flow estimator against the synthetic set's ground-truth flow, and its cost beside decoding.

Reads each video of ``--split`` through the reader (H.264 decode, resize so the short side is the
size, centre crop: the whole frame of a square video), estimates the flow between consecutive frames
with ``--estimator`` (:mod:`videossl.models.flow_estimate`) at every ``--sizes`` resolution and, when
the set has ``flow.npz`` (``videossl data synth``), reports the end-point error (px at that size) of
the estimate against the ground-truth ``forward`` flow resized to that size (vectors rescaled) on
all, foreground and moving (‖GT‖ ≥ 0.5 px) pixels, beside the zero-flow baseline (‖GT‖) on the same
pixels (:func:`videossl.eval.flow.estimator_agreement`). On a set without ground truth (real video)
only the cost is reported: milliseconds per clip of decoding and of estimating, in this process.

    python tools/flow_estimate_epe.py --data data/synth --split val --estimator farneback --sizes 32 64
    python tools/flow_estimate_epe.py --data data/bench-real --split train --frames 16 --stride 4 --sizes 112 \\
        --max-videos 16
    python tools/flow_estimate_epe.py --data data/synth --estimator raft --opts '{"weights": "C_T_V2"}' --device cuda

RAFT with ``weights: random`` runs but its flow means nothing: do not report it.
"""

from __future__ import annotations

import argparse
import json
import sys

from videossl.errors import VideosslError
from videossl.eval.flow import estimator_agreement, estimator_lines
from videossl.models.flow_estimate import FLOW_ESTIMATORS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="shard set (with flow.npz for the EPE)")
    p.add_argument("--split", default="val")
    p.add_argument("--estimator", default="farneback", choices=list(FLOW_ESTIMATORS))
    p.add_argument("--opts", default="{}", help="estimator options as JSON, e.g. '{\"winsize\": 7}'")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="resolutions (short side, px)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the whole video)")
    p.add_argument("--stride", type=int, default=1, help="frame stride (1 with ground truth)")
    p.add_argument("--max-videos", type=int, default=None)
    p.add_argument("--decoder", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args(argv)
    try:
        r = estimator_agreement(a.data, a.split, a.estimator, a.sizes, json.loads(a.opts), frames=a.frames,
                                stride=a.stride, max_videos=a.max_videos, decoder=a.decoder, device=a.device)
    except VideosslError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    r.update({"data": a.data, "split": a.split})
    print(f"# {a.data} [{a.split}]\n")
    print("\n".join(estimator_lines(r)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
