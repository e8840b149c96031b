"""Frozen, multi-view feature extraction, cached on disk.

The encoder runs in eval mode under ``torch.no_grad``; each video of a split yields K clips × C
crops (the eval views of the data config), each view one feature row. Rows are keyed by the video
key; the pipeline's padding duplicates are dropped, so every video appears exactly once. Features
are cached under ``cache_dir`` by a content hash of (encoder weights, shard set, split, views),
so re-running an evaluation with the same checkpoint does not decode the videos again.

Distributed (``torch.distributed`` initialised, or explicit ``rank``/``world_size``): every rank
reads its contiguous part of the split in evaluation order (:class:`VideoShardDataset` with
``rank``/``world_size``), drops the pipeline's padding duplicates, and the per-rank rows are
gathered with ``all_gather_object`` and de-duplicated by video key, so every rank returns the
same :class:`FeatureSet` holding every video exactly once, in the split's order. Only rank 0
writes the cache.

Augmented train features (BraVe's SVM protocol, arXiv:2103.16559): ``passes`` > 1 re-reads the split
``passes`` times with a different epoch seed each time; with random-augmentation views
(``train=True``) each pass adds one augmented embedding per view and video. The rows of all passes
share the video key, so probes, aggregation and held-out splits still group them by video.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videossl.core.checkpoint import read_file
from videossl.data.loader import VideoShardDataset, make_loader
from videossl.data.loader.batch import to_clip
from videossl.errors import VideosslError

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    feats: torch.Tensor  # (N_videos * V, D) float32
    labels: torch.Tensor  # (N_videos * V,) long
    video_ids: list[str]  # (N_videos * V,) the key of each row
    views_per_video: int

    @property
    def num_videos(self) -> int:
        return len(self.video_ids) // max(self.views_per_video, 1)


def state_hash(module: nn.Module) -> str:
    """Content hash of a module's weights and buffers (names, shapes, values)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _views_json(views) -> str:
    return json.dumps([asdict(v) if is_dataclass(v) else v for v in views], sort_keys=True, default=str)


def cache_key(encoder: nn.Module, data_dir: Any, split: str, views) -> str:
    manifest = Path(str(data_dir)) / "manifest.json"
    m = manifest.read_bytes() if manifest.is_file() else str(data_dir).encode()
    h = hashlib.sha256()
    for part in (state_hash(encoder).encode(), hashlib.sha256(m).digest(), split.encode(), _views_json(views).encode()):
        h.update(part)
    return h.hexdigest()[:20]


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_rows(rows: list[tuple[str, torch.Tensor, int]], world_size: int) -> list[tuple[str, torch.Tensor, int]]:
    """All ranks' (key, feats, label) rows, rank order, de-duplicated by key (first occurrence wins)."""
    if world_size > 1:
        parts: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(parts, rows)
        rows = [r for part in parts for r in part]
    seen: set[str] = set()
    out = []
    for key, f, label in rows:
        if key not in seen:
            seen.add(key)
            out.append((key, f, label))
    return out


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    data_dir: str,
    split: str,
    views,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    decoder: str = "auto",
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    passes: int = 1,
    rank: int | None = None,
    world_size: int | None = None,
    seed: int = 0,
) -> FeatureSet:
    """Features of every video of ``split`` for every view (``views`` = ViewSpec list).

    ``rank``/``world_size`` default to ``torch.distributed`` (else a single process); with more
    than one rank, the call is collective (every rank must make it) and returns the gathered set.
    """

    if passes < 1:
        raise VideosslError(f"passes must be >= 1, got {passes}")
    d_rank, d_world = _dist()
    rank = d_rank if rank is None else rank
    world_size = d_world if world_size is None else world_size
    cache_path = None
    if cache_dir is not None:
        extra = "" if passes == 1 and seed == 0 else f"-p{passes}s{seed}"
        cache_path = Path(cache_dir) / f"feats-{split}-{cache_key(encoder, data_dir, split, views)}{extra}.pt"
        if cache_path.is_file():
            d = read_file(cache_path)
            log.info("features from cache %s", cache_path)
            return FeatureSet(d["feats"], d["labels"], list(d["video_ids"]), int(d["views_per_video"]))

    ds = VideoShardDataset(data_dir, views, split=split, batch_size=batch_size, train=False, decoder=decoder,
                           rank=rank, world_size=world_size, seed=seed)
    loader = make_loader(ds, num_workers=num_workers)
    was_training = encoder.training
    encoder.eval().to(device)
    rows: list[tuple[str, torch.Tensor, int]] = []  # (key, (V, D) feats, label) of this rank
    from rich.progress import Progress

    with Progress(transient=True, disable=not progress or rank != 0) as bar:
        task = bar.add_task(f"features [{split}]", total=len(ds) * passes)
        for p in range(passes):
            ds.set_epoch(p)
            seen: set[str] = set()
            for batch in loader:
                keep = (~batch["duplicate"]).tolist()
                per_view = [encoder(to_clip(v.to(device))).float().cpu() for v in batch["views"]]
                f = torch.stack(per_view, 1)  # (B, V, D)
                for i, key in enumerate(batch["key"]):
                    if not keep[i] or key in seen:
                        continue
                    seen.add(key)
                    rows.append((f"{key}\x00{p}" if passes > 1 else key, f[i].clone(), int(batch["label"][i])))
                bar.advance(task)
    encoder.train(was_training)
    rows = gather_rows(rows, world_size)
    if not rows:
        raise VideosslError(f"split {split!r} of {data_dir} yielded no videos: nothing to evaluate")
    if passes > 1:  # group the passes of a video together, video order kept
        order = {k.split("\x00")[0]: i for i, (k, _, _) in reversed(list(enumerate(rows)))}
        rows = sorted(rows, key=lambda r: (order[r[0].split("\x00")[0]], int(r[0].split("\x00")[1])))
        rows = [(k.split("\x00")[0], f, lab) for k, f, lab in rows]
    vpv = int(rows[0][1].shape[0]) * passes
    feats = torch.cat([f for _, f, _ in rows])
    labels = torch.tensor([lab for _, f, lab in rows for _ in range(f.shape[0])])
    ids = [k for k, f, _ in rows for _ in range(f.shape[0])]
    out = FeatureSet(feats, labels, ids, vpv)
    if cache_path is not None and rank == 0:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".part")
        torch.save({"feats": out.feats, "labels": out.labels, "video_ids": out.video_ids,
                    "views_per_video": out.views_per_video}, tmp)
        tmp.replace(cache_path)
    return out
