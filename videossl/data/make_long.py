"""``videossl data make-long``: pseudo-long videos stitched from the clips of any shard set.

Each long sample is K clips of K *different* classes from one split of the source (UCF101, HMDB51,
Kinetics, a folder set or the synthetic short set), each decoded at ``--fps`` (frames at 0, 1/fps, 2/fps,
… seconds of the clip; ``--fps 0`` keeps every frame), scaled to ``--size`` x ``--size`` (centre square
crop, antialiased) and concatenated, then encoded as one H.264 mp4 at ``--fps``. The caption follows the
masked long-video paper's pseudo-long videos (arXiv:2312.07395): "a person does A, then B, …" for
human-action sets (class names made readable: ``ApplyEyeMakeup`` → "apply eye makeup"); for the synthetic
short set, the clips' own captions as "first …, then …, finally …". The label is the ordered (first,
last) class pair, as in the long synthetic preset; ``events`` holds each clip's frame range, class, source
key and caption. Splits stay splits: a long test sample is made of test clips only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

from videossl.data.decoding import open_video
from videossl.data.prompts import class_phrase, dataset_kind
from videossl.data.shards.format import (
    SPLITS,
    SplitWriter,
    build_manifest,
    ensure_writable_dir,
    iter_tar_samples,
    json_bytes,
    load_manifest,
    split_shard_paths,
    write_manifest,
    write_split_index,
)
from videossl.data.shards.render import encode_mp4
from videossl.data.shards.synthetic_long import event_caption, long_caption
from videossl.errors import VideosslError

EPILOG = """\
examples:
  videossl data make-long --source shards/ucf101 --out shards/ucf101-long --clips 8 --fps 1
  videossl data make-long --source data/synth --out data/synth-stitched --clips 4 --fps 0 --size 48
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="a shard-set folder (with manifest.json)")
    p.add_argument("--out", required=True, help="output shard-set folder")
    p.add_argument("--clips", type=int, default=8, help="K: clips (of different classes) per long video")
    p.add_argument("--fps", type=float, default=1.0, help="frames per second kept from each clip (0: every frame)")
    p.add_argument("--size", type=int, default=112, help="frame side of the output, px (even)")
    p.add_argument("--num-videos", type=int, default=None,
                   help="long videos per split (default: as many as the split's clips allow, each clip used once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-per-shard", type=int, default=64)


def person_caption(names: list[str]) -> str:
    """ "a person does A, then B, then C" for human-action class names."""
    phrases = [class_phrase(n) for n in names]
    return "a person does " + ", then ".join(phrases)


def clip_frames(data: bytes, fps: float, size: int) -> tuple[torch.Tensor, float]:
    """(frames (N, size, size, 3) uint8 at ``fps`` (all when 0), the clip's native fps)."""
    with open_video(data) as r:
        native = r.fps or 25.0
        n = r.num_frames
        idx = np.arange(n) if fps <= 0 else np.unique(np.floor(np.arange(0, n / native, 1.0 / fps) * native).astype(int))
        frames = r.get_frames(idx[idx < n])
    x = frames.permute(0, 3, 1, 2)
    s = min(x.shape[-2:])
    x = F.center_crop(x, [s, s])
    x = F.resize(x, [size, size], antialias=True)
    return x.permute(0, 2, 3, 1).contiguous(), native


def _clips_by_class(source: Path, split: str) -> dict[int, list[tuple[str, dict, bytes]]]:
    out: dict[int, list[tuple[str, dict, bytes]]] = {}
    for path in split_shard_paths(source, split):
        for key, members in iter_tar_samples(path):
            if "json" not in members:
                continue
            meta = json.loads(members["json"])
            video = next((members[e] for e in ("mp4", "avi", "mkv", "webm", "mov") if e in members), None)
            if video is None or not isinstance(meta.get("label"), int) or meta["label"] < 0:
                continue
            out.setdefault(meta["label"], []).append((key, meta, video))
    return out


def plan_groups(counts: dict[int, int], k: int, rng: np.random.Generator, limit: int | None) -> list[list[tuple[int, int]]]:
    """Groups of ``k`` (class, clip index) pairs, classes distinct within a group, each clip used at most once."""
    left = {c: list(rng.permutation(n)) for c, n in counts.items() if n > 0}
    groups = []
    while limit is None or len(groups) < limit:
        avail = [c for c, v in left.items() if v]
        if len(avail) < k:
            break
        weights = np.array([len(left[c]) for c in avail], float)
        chosen = rng.choice(avail, size=k, replace=False, p=weights / weights.sum())
        groups.append([(int(c), int(left[int(c)].pop())) for c in chosen])
    return groups


def make_long(source: str | Path, out: str | Path, clips: int = 8, fps: float = 1.0, size: int = 112,
              num_videos: int | None = None, seed: int = 0, max_per_shard: int = 64) -> dict[str, Any]:
    """Write the stitched long set (see the module docstring); returns its manifest."""
    source = Path(source)
    m = load_manifest(source)
    classes = list(m.get("classes") or [])
    if clips < 2:
        raise VideosslError(f"--clips must be at least 2 (a long video is a sequence), got {clips}")
    if len(classes) < clips:
        raise VideosslError(f"{source} has {len(classes)} classes: --clips {clips} needs that many different classes")
    if size < 16 or size % 2:
        raise VideosslError(f"--size must be an even number >= 16, got {size}")
    kind = dataset_kind(classes)
    out_dir = ensure_writable_dir(out)
    pair = [f"{a} then {b}" for a in classes for b in classes]
    shards, labels = {}, {}
    out_fps = fps if fps > 0 else None
    for si, split in enumerate(s for s in SPLITS if s in m["splits"]):
        by_class = _clips_by_class(source, split)
        rng = np.random.default_rng([seed, si])
        groups = plan_groups({c: len(v) for c, v in by_class.items()}, clips, rng, num_videos)
        writer = SplitWriter(out_dir, split, max_count=max_per_shard)
        labels[split] = []
        for gi, group in enumerate(groups):
            parts, events, t = [], [], 0
            for c, i in group:
                key, meta, video = by_class[c][i]
                frames, native = clip_frames(video, fps, size)
                out_fps = out_fps or native
                cap = event_caption(meta.get("caption") or class_phrase(classes[c]))
                events.append({"start": t, "end": t + len(frames), "label": c, "label_name": classes[c], "key": key,
                               "caption": cap})
                parts.append(frames.numpy())
                t += len(frames)
            names = [classes[c] for c, _ in group]
            caption = long_caption([e["caption"] for e in events]) if kind == "synthetic" else person_caption(names)
            label = group[0][0] * len(classes) + group[-1][0]
            video = np.concatenate(parts)
            k = f"long_{split}_{gi:06d}"
            meta = {"key": k, "label": label, "label_name": pair[label], "split": split, "caption": caption,
                    "events": events, "fps": out_fps, "num_frames": int(video.shape[0]), "width": size, "height": size,
                    "duration": video.shape[0] / out_fps, "source": f"make-long:{source.name}:{split}:{gi}"}
            writer.write(k, {"mp4": encode_mp4(video, out_fps), "json": json_bytes(meta)})
            labels[split].append(label)
        shards[split] = writer.close()
        write_split_index(out_dir, split, shards[split])
    if not any(labels.values()):
        raise VideosslError(f"no long video could be made from {source}: each needs {clips} clips of different classes")
    manifest = build_manifest(
        kind="make-long", classes=pair, splits=shards, labels_per_split=labels,
        params={"source": str(source), "clips": clips, "fps": fps, "size": size, "seed": seed},
        video={"fps": out_fps, "width": size, "height": size, "num_frames": None, "codec": "h264"},
        extra={"source_classes": classes},
    )
    write_manifest(out_dir, manifest)
    return manifest


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console

    m = make_long(args.source, args.out, clips=args.clips, fps=args.fps, size=args.size, num_videos=args.num_videos,
                  seed=args.seed, max_per_shard=args.max_per_shard)
    counts = ", ".join(f"{s} {v['num_samples']}" for s, v in m["splits"].items())
    Console(stderr=True).print(f"[green]wrote[/] long videos ({counts}) of {args.clips} clips each to {args.out}")
    return 0


__all__ = ["clip_frames", "make_long", "person_caption", "plan_groups"]
