"""Write a contact sheet of a few videos of a shard set, with their ground truth drawn.

For each chosen video (one per class by default) it shows evenly spaced frames with the tracked
points (filled dot = visible, cross = hidden/occluded), the masks over the frames (object blue,
distractor red) and the forward optical flow colour-coded (hue = direction, saturation = speed;
the colour wheel of torchvision.utils.flow_to_image). Sets without ground truth show frames only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from videossl.data.decoding import open_video
from videossl.data.shards.format import iter_tar_samples, load_manifest, load_npy, load_npz, split_shard_paths
from videossl.errors import VideosslError

EPILOG = """\
examples:
  videossl data preview data/synth --out preview.png
  videossl data preview data/synth --split test --videos 4 --frames 8 --out sheet.png
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="shard-set folder (with manifest.json)")
    p.add_argument("--out", default="preview.png", help="PNG to write")
    p.add_argument("--split", default="train", help="split to draw from")
    p.add_argument("--videos", type=int, default=None, help="number of videos (default: one per class, at most 8)")
    p.add_argument("--frames", type=int, default=6, help="frames shown per video")


def pick_samples(shard_dir: str, split: str, n: int | None, classes: list[str]):
    want = n if n is not None else min(len(classes), 8)
    seen: set[int] = set()
    picked = []
    for path in split_shard_paths(shard_dir, split):
        for key, members in iter_tar_samples(path):
            if "json" not in members:
                continue
            meta = json.loads(members["json"])
            if n is None and meta.get("label") in seen:
                continue
            seen.add(meta.get("label"))
            picked.append((key, meta, members))
            if len(picked) >= want:
                return picked
    return picked


def flow_colour(flow: np.ndarray) -> np.ndarray:
    import torch
    from torchvision.utils import flow_to_image

    f = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)
    return flow_to_image(f).permute(1, 2, 0).numpy()


def run_cli(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.frames < 1:
        raise VideosslError(f"--frames must be at least 1, got {args.frames}")
    manifest = load_manifest(args.dir)
    samples = pick_samples(args.dir, args.split, args.videos, manifest["classes"])
    if not samples:
        raise VideosslError(f"split {args.split!r} of {args.dir} holds no readable samples")
    has_gt = all("flow.npz" in m for _, _, m in samples)
    rows_per = 3 if has_gt else 1
    cols = args.frames
    fig = plt.figure(figsize=(cols * 1.5 + 0.6, len(samples) * (rows_per * 1.5 + 0.35) + 0.3))
    subfigs = np.atleast_1d(fig.subfigures(len(samples), 1))
    for v, (key, meta, members) in enumerate(samples):
        sub = subfigs[v]
        axes = sub.subplots(rows_per, cols, squeeze=False)
        caption = meta.get("caption") or meta.get("label_name", "")
        sub.suptitle(f"{key} [{meta.get('label_name', '?')}]: {caption}", fontsize=7.5)
        video_ext = next(e for e in ("mp4", "avi", "mkv", "webm") if e in members)
        with open_video(members[video_ext]) as reader:
            n = reader.num_frames
            idx = np.linspace(0, n - 1, cols).round().astype(int)
            frames = reader.get_frames(idx.tolist()).numpy()
        if has_gt:
            mask = load_npy(members["mask.npy"])
            flow = load_npz(members["flow.npz"])["forward"]
            tracks = load_npz(members["tracks.npz"])
        for c, t in enumerate(idx):
            ax = axes[0, c]
            ax.imshow(frames[c])
            ax.set_title(f"t={t}", fontsize=6.5)
            if has_gt:
                pts, vis = tracks["points"][t], tracks["visible"][t]
                ax.scatter(pts[vis, 0], pts[vis, 1], s=9, c="yellow", edgecolors="black", linewidths=0.4)
                ax.scatter(pts[~vis, 0], pts[~vis, 1], s=12, c="red", marker="x", linewidths=0.8)
                ax.set_xlim(-0.5, frames.shape[2] - 0.5)
                ax.set_ylim(frames.shape[1] - 0.5, -0.5)
                overlay = frames[c].astype(np.float32) * 0.45
                overlay[mask[t] == 1] += np.array([30, 90, 255]) * 0.55
                overlay[mask[t] == 2] += np.array([255, 40, 40]) * 0.55
                axes[1, c].imshow(overlay.clip(0, 255).astype(np.uint8))
                axes[2, c].imshow(flow_colour(flow[min(t, len(flow) - 1)]))
        axes[0, 0].set_ylabel("frames+tracks", fontsize=6.5)
        if has_gt:
            axes[1, 0].set_ylabel("mask", fontsize=6.5)
            axes[2, 0].set_ylabel("flow t→t+1", fontsize=6.5)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{args.dir} [{args.split}]: dots = visible track points, x = hidden; "
                 "mask: object blue, distractor red; flow: hue = direction", fontsize=8)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
