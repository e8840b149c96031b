"""Frozen, multi-view feature extraction, cached on disk.

The encoder runs in eval mode under ``torch.no_grad``; each video of a split yields K clips × C
crops (the eval views of the data config), each view one feature row. Rows are keyed by the video
key; the pipeline's padding duplicates are dropped, so every video appears exactly once. Features
are cached under ``cache_dir`` by a content hash of (encoder weights, shard set, split, views),
so re-running an evaluation with the same checkpoint does not decode the videos again.
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
) -> FeatureSet:
    """Features of every video of ``split`` for every eval view (``views`` = ViewSpec list)."""
    from videossl.data.pipeline import VideoShardDataset, make_loader
    from videossl.methods.base import to_clip

    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"feats-{split}-{cache_key(encoder, data_dir, split, views)}.pt"
        if cache_path.is_file():
            d = torch.load(cache_path, weights_only=True)
            log.info("features from cache %s", cache_path)
            return FeatureSet(d["feats"], d["labels"], list(d["video_ids"]), int(d["views_per_video"]))

    ds = VideoShardDataset(data_dir, views, split=split, batch_size=batch_size, train=False, decoder=decoder,
                           rank=0, world_size=1)
    loader = make_loader(ds, num_workers=num_workers)
    was_training = encoder.training
    encoder.eval().to(device)
    feats, labels, ids = [], [], []
    seen: set[str] = set()
    vpv = None
    from rich.progress import Progress

    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"features [{split}]", total=len(ds))
        for batch in loader:
            keep = (~batch["duplicate"]).tolist()
            per_view = [encoder(to_clip(v.to(device))).float().cpu() for v in batch["views"]]
            f = torch.stack(per_view, 1)  # (B, V, D)
            vpv = f.shape[1]
            for i, key in enumerate(batch["key"]):
                if not keep[i] or key in seen:
                    continue
                seen.add(key)
                feats.append(f[i])
                labels += [int(batch["label"][i])] * vpv
                ids += [key] * vpv
            bar.advance(task)
    encoder.train(was_training)
    if not feats:
        raise VideosslError(f"split {split!r} of {data_dir} yielded no videos: nothing to evaluate")
    out = FeatureSet(torch.cat(feats), torch.tensor(labels), ids, int(vpv or 1))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"feats": out.feats, "labels": out.labels, "video_ids": out.video_ids,
                    "views_per_video": out.views_per_video}, cache_path)
    return out
