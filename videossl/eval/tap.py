"""The TAP-Vid protocol on our data: videos with point tracks in, per-video TAP-Vid metrics, means and
overlay videos out. The command is :mod:`videossl.eval.commands.tap`; metrics in :mod:`videossl.eval.tapvid`,
trackers in :mod:`videossl.eval.tracking`.

Sources of videos (:class:`TapItem`):

* a synthetic shard set (``videossl data synth``; ``--preset tap`` renders at 256×256): every frame of every
  video of a split at its own size, ``tracks.npz`` → targets ``points`` (x, y) and occluded = ``not visible``
  (outside the frame or hidden), plus the ``flow.npz`` / ``mask.npy`` ground truth for the oracle;
* a TAP-Vid pickle (DAVIS / RGB-Stacking / Kinetics, :mod:`videossl.data.tapvid`): frames resized to 256×256
  as TAP-Vid evaluates them, normalised points × 256.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.shards.format import load_manifest
from videossl.data.shards.render import encode_mp4
from videossl.data.tapvid import read_tapvid_pickle
from videossl.errors import VideosslError
from videossl.eval.tapvid import QUERY_MODES, RESOLUTION, mean_metrics, sample_queries, tapvid_metrics, to_256
from videossl.eval.tracking import (
    correspondence,
    dense_features,
    fit_threshold,
    flow_ae_tracks,
    gt_flow_tracks,
    static_tracks,
)

__all__ = ["HEADLINE", "TapItem", "evaluate_items", "flow_ae_tracker", "gt_flow_tracker", "metric_table",
           "per_video_table", "probe_tracker", "static_tracker", "synthetic_items", "tapnext_tracker", "tapvid_items",
           "write_overlay"]

HEADLINE = (("average_jaccard", "AJ"), ("average_pts_within_thresh", "δ_avg"), ("occlusion_accuracy", "OA"))


@dataclass
class TapItem:
    """One video: ``frames`` (T, H, W, 3) uint8; ``target`` (N, T, 2) (x, y) px of that frame, pixel centres at
    integers; ``occluded`` (N, T); optional ground truth ``forward`` / ``backward`` (T−1, H, W, 2), ``mask``
    (T, H, W)."""

    key: str
    frames: np.ndarray
    target: np.ndarray
    occluded: np.ndarray
    fps: float = 12.0
    forward: np.ndarray | None = None
    backward: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def clip(self) -> torch.Tensor:
        """(1, 3, T, H, W) float in [0, 1]."""
        return torch.from_numpy(self.frames).float().div(255).permute(3, 0, 1, 2)[None].contiguous()


def synthetic_items(data_dir: str, split: str, max_videos: int | None = None, decoder: str = "auto",
                    ground_truth: bool = True) -> Iterator[TapItem]:
    manifest = load_manifest(data_dir)
    video = manifest.get("video") or {}
    size, nf = video.get("height"), video.get("num_frames")
    if not size or video.get("width") != size or not nf:
        raise VideosslError(f"{data_dir}: `eval tap` needs square videos of known size and length (manifest 'video')")
    view = ViewSpec(name="clip", sampler="uniform", frames=int(nf), stride=1, size=int(size), train=False, num_clips=1,
                    crops=1, augment={"output": "uint8"})
    extras = ["tracks.npz"] + (["flow.npz", "mask.npy"] if ground_truth else [])
    ds = VideoShardDataset(data_dir, [view], split=split, batch_size=1, train=False, decoder=decoder, extras=extras,
                           rank=0, world_size=1)
    seen = 0
    for batch in make_loader(ds, num_workers=0):
        if bool(batch["duplicate"][0]):
            continue
        if "tracks" not in batch:
            raise VideosslError(f"{data_dir}: the samples have no tracks.npz member: use `videossl data synth`")
        idx = batch["indices"][0][0].long()
        if not torch.equal(idx, torch.arange(int(nf))):
            raise VideosslError(f"{data_dir}: `eval tap` reads every frame of a video; got frame indices {idx.tolist()}")
        tr = batch["tracks"]
        item = TapItem(batch["key"][0], batch["views"][0][0].permute(0, 2, 3, 1).numpy(),
                       tr["points"][0].numpy().transpose(1, 0, 2).astype(np.float64),
                       ~tr["visible"][0].numpy().T.astype(bool), float(video.get("fps") or 12.0))
        if ground_truth:
            item.forward = batch["flow"]["forward"][0].numpy()
            item.backward = batch["flow"]["backward"][0].numpy()
            item.mask = batch["mask"][0].numpy()
        yield item
        seen += 1
        if max_videos is not None and seen >= max_videos:
            return


def tapvid_items(path: str, max_videos: int | None = None, fps: float = 10.0) -> Iterator[TapItem]:
    """Videos of a TAP-Vid pickle at 256×256 (frames resized bilinearly; points × 256, shifted to pixel centres)."""
    import torch.nn.functional as F

    for i, v in enumerate(read_tapvid_pickle(path)):
        if max_videos is not None and i >= max_videos:
            return
        frames = v.frames
        if frames.shape[1:3] != (RESOLUTION, RESOLUTION):
            x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
            x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False, antialias=True)
            frames = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        target = np.asarray(v.points, np.float64) * RESOLUTION - 0.5
        yield TapItem(v.name, np.ascontiguousarray(frames), target, np.asarray(v.occluded, bool), fps)


# tracker(item, queries (Q, 3) (t, y, x) px, query mode) -> (tracks (Q, T, 2) px, occluded (Q, T)); the mode
# matters only to a tracker with something fitted per mode (the probe's occlusion threshold)
Tracker = Callable[[TapItem, np.ndarray, str], tuple[np.ndarray, np.ndarray]]


def evaluate_items(items, tracker: Tracker, modes=QUERY_MODES, overlay_dir: Path | None = None, overlays: int = 0
                   ) -> dict[str, Any]:
    """Run ``tracker`` on every video and query mode; per-video metrics, means, and overlays (mode ``modes[0]``)."""
    rows: list[dict[str, Any]] = []
    paths: list[str] = []
    for item in items:
        H, W = item.size
        T = item.frames.shape[0]
        for mode in modes:
            q = sample_queries(item.target, item.occluded, mode)
            if len(q) == 0:
                continue
            tracks, occ = tracker(item, q.points, mode)
            m = tapvid_metrics(q.points, q.occluded, to_256(q.target, W, H), occ, to_256(tracks, W, H), mode)
            rows.append({"key": item.key, "mode": mode, "queries": len(q), "frames": T, **m})
            if overlay_dir is not None and mode == modes[0] and len(paths) < overlays:
                p = overlay_dir / f"overlay-{item.key}-{mode}.mp4"
                write_overlay(p, item.frames, q.points, q.target, q.occluded, tracks, occ, item.fps)
                paths.append(str(p))
    if not rows:
        raise VideosslError("no video had a query (no visible track point)")
    means = {mode: mean_metrics([r for r in rows if r["mode"] == mode]) for mode in modes}
    counts = {mode: sum(r["mode"] == mode for r in rows) for mode in modes}
    return {"per_video": rows, "means": means, "videos": counts, "overlays": paths}


# ------------------------------------------------------------------------------------ trackers
def static_tracker() -> Tracker:
    return lambda item, q, mode: static_tracks(q, item.frames.shape[0])


def gt_flow_tracker() -> Tracker:
    def track(item: TapItem, q: np.ndarray, mode: str):
        if item.forward is None or item.backward is None or item.mask is None:
            raise VideosslError(f"{item.key}: the gt-flow oracle needs flow.npz and mask.npy (a `videossl data synth` set)")
        return gt_flow_tracks(q, item.forward, item.backward, item.mask)
    return track


def flow_ae_tracker(model, device: str = "cpu") -> Tracker:
    """Chain a flow autoencoder's forecast flows (zero flow for the burn-in steps, where it forecasts nothing)."""
    cache: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def track(item: TapItem, q: np.ndarray, mode: str):
        if item.key not in cache:
            res = model.forecast(item.clip().to(device))
            T, (H, W) = item.frames.shape[0], item.size
            flows = np.zeros((T - 1, H, W, 2), np.float32)
            for j, s in enumerate(res["steps"]):
                flows[s] = res["flow"][0, j].permute(1, 2, 0).float().cpu().numpy()
            cache.clear()
            cache[item.key] = flows
        return flow_ae_tracks(q, cache[item.key], item.frames.shape[0], item.size)
    return track


def tapnext_tracker(model, device: str = "cpu") -> Tracker:
    """A trained TAPNext (``videossl.models.tapnext``): tracks from its read-out, occluded where its visibility
    logit is below 0; the whole clip in one pass (equal to streaming it frame by frame)."""
    @torch.no_grad()
    def track(item: TapItem, q: np.ndarray, mode: str):
        out = model(item.clip().to(device), torch.tensor(q, dtype=torch.float32, device=device)[None])
        tracks = out.tracks[0].transpose(0, 1).double().cpu().numpy()
        return tracks, (out.visible_logit[0].T < 0).cpu().numpy()
    return track


def probe_tracker(encoder, val_items: list[TapItem], modes=QUERY_MODES, tau: float = 0.05, window: int = 2,
                  device: str = "cpu") -> tuple[Tracker, dict[str, float], dict[str, float]]:
    """The correspondence probe with its occlusion threshold fitted on ``val_items`` (per query mode, max AJ).
    Returns (tracker, threshold by mode, validation AJ by mode)."""
    encoder = encoder.eval().to(device)
    cache: dict[str, torch.Tensor] = {}  # features of the validation videos, and of the current test video
    val_keys = {item.key for item in val_items}

    def raw(item: TapItem, q: np.ndarray):
        if item.key not in cache:
            for k in [k for k in cache if k not in val_keys]:
                del cache[k]
            cache[item.key] = dense_features(encoder, item.clip().to(device))
        return correspondence(None, item.clip(), q, tau=tau, window=window, feats=cache[item.key])

    thresholds, val_aj = {}, {}
    for mode in modes:
        vids = []
        for item in val_items:
            qs = sample_queries(item.target, item.occluded, mode)
            if len(qs) == 0:
                continue
            tracks, score = raw(item, qs.points)
            vids.append({"queries": qs.points, "target": qs.target, "occluded": qs.occluded, "tracks": tracks,
                         "score": score, "size": item.size})
        thresholds[mode], val_aj[mode] = fit_threshold(vids, mode)
    def track(item: TapItem, q: np.ndarray, mode: str):
        tracks, score = raw(item, q)
        return tracks, score < thresholds[mode]

    return track, thresholds, val_aj


# ------------------------------------------------------------------------------------ overlays
def write_overlay(path: Path, frames: np.ndarray, queries: np.ndarray, target: np.ndarray, occluded: np.ndarray,
                  tracks: np.ndarray, pred_occluded: np.ndarray, fps: float = 12.0, max_points: int = 12,
                  size: int = RESOLUTION) -> Path:
    """An mp4 a person can watch: the video scaled to about ``size`` px, per track (one colour each) the true point
    as a ring (filled: visible, hollow: occluded) and the prediction as a cross (grey when predicted occluded),
    joined by a line; the query frame shows a white square around the query; a legend in the top row."""
    from PIL import Image, ImageDraw

    T, H, W, _ = frames.shape
    k = max(1, int(round(size / max(H, W))))
    Ws, Hs = W * k + (W * k) % 2, H * k + (H * k) % 2
    n = min(len(queries), max_points)
    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)]
    out = []

    def sc(p):
        return ((p[0] + 0.5) * k - 0.5, (p[1] + 0.5) * k - 0.5)

    for t in range(T):
        im = Image.fromarray(frames[t]).resize((Ws, Hs), Image.NEAREST)
        d = ImageDraw.Draw(im)
        r = max(3, k)
        for i in range(n):
            col = palette[i % len(palette)]
            gx, gy = sc(target[i, t])
            px, py = sc(tracks[i, t])
            if not occluded[i, t]:
                d.line([(gx, gy), (px, py)], fill=(255, 255, 255), width=1)
            ring = [(gx - r, gy - r), (gx + r, gy + r)]
            d.ellipse(ring, fill=col if not occluded[i, t] else None, outline=col, width=2)
            pc = (128, 128, 128) if pred_occluded[i, t] else col
            d.line([(px - r, py - r), (px + r, py + r)], fill=pc, width=2)
            d.line([(px - r, py + r), (px + r, py - r)], fill=pc, width=2)
            if int(round(queries[i, 0])) == t:
                d.rectangle([(gx - 2 * r, gy - 2 * r), (gx + 2 * r, gy + 2 * r)], outline=(255, 255, 255), width=1)
        d.rectangle([(0, 0), (Ws, 11)], fill=(0, 0, 0))
        d.text((2, 0), f"t={t} o true x pred (hollow/grey: occluded)", fill=(255, 255, 255))
        out.append(np.asarray(im))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_mp4(np.stack(out), fps, crf=23))
    return path


# ------------------------------------------------------------------------------------ tables
def _f(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def per_video_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| video | mode | queries | AJ | δ_avg | OA | <δ1 | <δ2 | <δ4 | <δ8 | <δ16 |", "|---" * 11 + "|"]
    for r in rows:
        lines.append(f"| {r['key']} | {r['mode']} | {r['queries']} | " + " | ".join(
            _f(r[k]) for k in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy", "pts_within_1",
                                "pts_within_2", "pts_within_4", "pts_within_8", "pts_within_16")) + " |")
    return lines


def metric_table(results: list[tuple[str, dict[str, dict[str, float]], dict[str, int]]]) -> list[str]:
    """Means (in %) per (tracker, mode): rows of (name, means by mode, videos by mode)."""
    lines = ["| tracker | mode | videos | AJ | δ_avg | OA | J1 | J2 | J4 | J8 | J16 |", "|---" * 11 + "|"]
    for name, means, videos in results:
        for mode, m in means.items():
            lines.append(f"| {name} | {mode} | {videos.get(mode, 0)} | " + " | ".join(
                _f(m.get(k)) for k in ("average_jaccard", "average_pts_within_thresh", "occlusion_accuracy", "jaccard_1",
                                        "jaccard_2", "jaccard_4", "jaccard_8", "jaccard_16")) + " |")
    return lines
