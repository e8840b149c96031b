"""Long-video evaluation: short segments aggregated vs one encoder over the whole video.

The comparison of Papalampidi et al., "A Simple Recipe for Contrastively Pre-training Video-First Encoders
Beyond 16 Frames" (arXiv:2312.07395, §6.1–6.2, Table 3): a short-clip encoder (ShortViViT, 16 frames at
1 fps) applied to consecutive segments of a long video and its segment vectors pooled, against the stage-2
encoder (LongViViT) that attends jointly over all frames at once (§3.1: the video vector is the mean of the
output tokens; evaluation unmasked). Both read the same frames: the first ``frames`` frames of each video at
``target_fps`` from the start (§4; the long-video sampler, padding marked invalid).

Aggregations (:data:`EXTRACTORS`: name → ``(encode, clip, valid, opts) -> (feats (B, S, D), present (B, S))``):

* ``segments`` — :func:`split_segments` cuts the clip into S = ⌈T / L⌉ consecutive segments of
  ``segment_frames`` = L frames (every ``segment_stride``-th frame of each goes to the encoder); the last
  one is padded with its last frame, marked invalid; segments without a real frame are not encoded. Each
  segment is encoded on its own (its temporal positions restart at 0), so it sees only its own L frames.
* ``long`` — one encoder pass over all T frames (S = 1): joint attention over every token of the video.

Pools (:data:`POOLS`: name → ``fit(train, model, opts) -> (pool, info)``, fitted on the *train* split only):

* ``mean`` — :func:`mean_pool`: equal weight per segment holding a real frame, no segment index, no
  parameters. It is a function of the *set* of segment vectors: invariant to the order of the segments,
  so on an order-only task (the same events in another order) it can use nothing but the order *inside*
  a segment (a segment spanning an event boundary).
* ``attention`` — :class:`AttentionPool`: learned queries (``heads``) attending over the segment vectors
  plus learned segment-position embeddings (``positions=False``: none, and it is order-invariant too),
  trained with the run's video–text InfoNCE (its frozen video projection, text tower and temperature)
  on the train split's captions; initialised to be exactly :func:`mean_pool`.

Metrics (test split): :func:`order_zeroshot` — each video against its own caption and the same events in
other orders (the sample's ``shuffled_captions``), chance 1/(1 + shuffled), ties shared; caption retrieval
R@1/5/10 (:func:`videossl.eval.retrieval.caption_retrieval`); a linear probe on the event-order label
(first event, last event), trained on the train split (:func:`videossl.eval.linear.train_probe`).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from videossl.core.checkpoint import read_file
from videossl.data.loader import ViewSpec
from videossl.data.loader.batch import to_clip
from videossl.data.loader.sampling import frame_step
from videossl.data.prompts import caption_ids
from videossl.data.shards.format import iter_tar_samples, load_manifest, split_shard_paths
from videossl.errors import VideosslError
from videossl.eval.compare import find_results, load_results
from videossl.eval.features import cache_key
from videossl.eval.frozen import ProbeConfig
from videossl.eval.linear import train_probe
from videossl.eval.probe import evaluate_probe
from videossl.eval.report import fmt_num, report_header, write_markdown
from videossl.eval.retrieval import caption_retrieval, unique_samples
from videossl.losses.infonce import infonce

__all__ = ["AGGREGATES", "EXTRACTORS", "POOLS", "AttentionPool", "LongEvalOptions", "LongFeatures", "Segments",
           "compare_rows", "compare_markdown", "event_order_probe", "evaluate_long", "events_in_view", "extract_long",
           "long_features", "mean_pool", "order_accuracy", "order_zeroshot", "protocol_lines", "read_long_meta",
           "segment_features", "split_segments", "train_attention_pool", "write_long_report"]


@dataclass
class LongEvalOptions:
    """What an evaluation sees and fits (every field is printed in the protocol block)."""

    aggregate: str = "long"  # segments | long
    frames: int = 128  # frames read from the start of each video at target_fps
    target_fps: float = 1.0
    size: int = 48
    segment_frames: int = 16
    segment_stride: int = 1
    pool: str = "mean"  # mean | attention (segments only)
    positions: bool = True  # attention pool: learned segment-position embeddings
    heads: int = 4
    pool_epochs: int = 100
    pool_lr: float = 1e-3
    pool_weight_decay: float = 0.05
    pool_batch_size: int = 64
    pool_seed: int = 0
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        if self.aggregate not in AGGREGATES:
            raise VideosslError(f"unknown aggregate {self.aggregate!r}: choose one of {', '.join(AGGREGATES)}")
        if self.pool not in POOLS:
            raise VideosslError(f"unknown pool {self.pool!r}: choose one of {', '.join(POOLS)}")
        if self.aggregate == "long" and self.pool != "mean":
            raise VideosslError("--pool applies to --aggregate segments (the long encoder yields one vector per video)")
        if self.frames < 1 or self.target_fps <= 0 or self.size < 1:
            raise VideosslError(f"need frames >= 1, fps > 0, size >= 1; got {self.frames}, {self.target_fps}, {self.size}")
        if self.segment_frames < 1 or self.segment_stride < 1 or self.segment_frames % self.segment_stride:
            raise VideosslError(f"--segment-frames ({self.segment_frames}) must be a positive multiple of --segment-stride "
                                f"({self.segment_stride})")

    @property
    def num_segments(self) -> int:
        return math.ceil(self.frames / self.segment_frames) if self.aggregate == "segments" else 1

    @property
    def name(self) -> str:
        if self.aggregate == "long":
            return "long"
        pool = self.pool + ("" if self.pool == "mean" or self.positions else "-nopos")
        return f"segments{self.segment_frames}" + (f"s{self.segment_stride}" if self.segment_stride > 1 else "") + f"-{pool}"

    def view(self) -> ViewSpec:
        return ViewSpec(name="clip", sampler="long", frames=self.frames, target_fps=self.target_fps, size=self.size,
                        train=False)


# ------------------------------------------------------------------------------------ segments
class Segments(NamedTuple):
    clips: torch.Tensor  # (B * S, C, L / stride, H, W)
    valid: torch.Tensor  # (B * S, L / stride) bool: real frames
    present: torch.Tensor  # (B, S) bool: the segment holds at least one real frame


def split_segments(clip: torch.Tensor, valid: torch.Tensor | None, frames: int, stride: int = 1) -> Segments:
    """Consecutive segments of ``frames`` frames of ``clip`` (B, C, T, H, W), in order, covering every frame once:
    S = ⌈T / frames⌉; the last one is padded with its last frame (marked invalid); ``stride`` keeps every
    ``stride``-th frame of each segment (its first frame first). ``valid`` (B, T) marks real frames (None: all)."""
    if clip.ndim != 5:
        raise VideosslError(f"split_segments expects (B, C, T, H, W), got shape {tuple(clip.shape)}")
    b, c, t, h, w = clip.shape
    if frames < 1 or stride < 1 or frames % stride:
        raise VideosslError(f"segment frames ({frames}) must be a positive multiple of the stride ({stride})")
    valid = torch.ones(b, t, dtype=torch.bool, device=clip.device) if valid is None else valid.to(clip.device).bool()
    if valid.shape != (b, t):
        raise VideosslError(f"valid must be (B, T) = {(b, t)}, got {tuple(valid.shape)}")
    s = math.ceil(t / frames)
    pad = s * frames - t
    if pad:
        clip = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, pad, -1, -1)], 2)
        valid = torch.cat([valid, valid.new_zeros(b, pad)], 1)
    clips = clip.view(b, c, s, frames, h, w).transpose(1, 2)[:, :, :, ::stride]  # (B, S, C, L', H, W)
    seg_valid = valid.view(b, s, frames)[:, :, ::stride]
    return Segments(clips.reshape(b * s, c, frames // stride, h, w), seg_valid.reshape(b * s, -1), seg_valid.any(-1))


@torch.no_grad()
def segment_features(encode, clip: torch.Tensor, valid: torch.Tensor | None, frames: int, stride: int = 1,
                     chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``(feats (B, S, D), present (B, S))``: ``encode(segment_clips, valid)`` of every segment holding a real
    frame (:func:`split_segments`), each on its own; absent segments are zero rows."""
    seg = split_segments(clip, valid, frames, stride)
    b, s = seg.present.shape
    idx = seg.present.reshape(-1).nonzero().flatten()
    out = None
    for i in range(0, len(idx), chunk):
        j = idx[i : i + chunk]
        v = seg.valid[j]
        f = encode(seg.clips[j], None if bool(v.all()) else v).float()
        if out is None:
            out = f.new_zeros(b * s, f.shape[-1])
        out[j] = f
    if out is None:
        raise VideosslError("no segment holds a real frame")
    return out.view(b, s, -1), seg.present


@torch.no_grad()
def long_features(encode, clip: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(feats (B, 1, D), present (B, 1))``: one encoder pass over every frame of the clip."""
    v = None if valid is None or bool(valid.all()) else valid
    f = encode(clip, v).float()
    return f[:, None], torch.ones(f.shape[0], 1, dtype=torch.bool, device=f.device)


EXTRACTORS = {
    "segments": lambda encode, clip, valid, o: segment_features(encode, clip, valid, o.segment_frames, o.segment_stride),
    "long": lambda encode, clip, valid, o: long_features(encode, clip, valid),
}
AGGREGATES = tuple(EXTRACTORS)


# ------------------------------------------------------------------------------------ pools
def mean_pool(feats: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(N, D): the mean of the present segment vectors of ``feats`` (N, S, D), each weighted equally."""
    w = present.to(feats.dtype)[..., None]
    return (feats * w).sum(1) / w.sum(1).clamp(min=1.0)


class AttentionPool(nn.Module):
    """Attention over segment vectors: per head h, a learned query ``q_h`` scores each present segment s by
    ``q_h · k(x_s + p_s)``; the output's head-h slice is the softmax-weighted sum of ``x_s + v(x_s + p_s)``.
    ``p_s`` are learned segment-position embeddings (``positions=False``: none, order-invariant). Initialised
    to :func:`mean_pool` (queries and ``v`` zero: uniform weights, values ``x_s``)."""

    def __init__(self, dim: int, max_segments: int, heads: int = 4, positions: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise VideosslError(f"attention pool: feature dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.max_segments = int(dim), int(heads), int(max_segments)
        self.pos = nn.Parameter(torch.randn(1, max_segments, dim) * 0.02) if positions else None
        self.query = nn.Parameter(torch.zeros(heads, dim // heads))
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        nn.init.zeros_(self.value.weight)
        nn.init.zeros_(self.value.bias)

    def forward(self, feats: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        n, s, d = feats.shape
        if d != self.dim or s > self.max_segments:
            raise VideosslError(f"attention pool built for {self.max_segments} segments of dim {self.dim}, got {s} x {d}")
        x = feats + self.pos[:, :s] if self.pos is not None else feats
        k = self.key(x).view(n, s, self.heads, -1)
        scores = (k * self.query).sum(-1) / math.sqrt(d // self.heads)  # (N, S, heads)
        scores = scores.masked_fill(~present[..., None], float("-inf"))
        w = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a video without any segment: zeros
        vals = (feats + self.value(x)).view(n, s, self.heads, -1)
        return (w[..., None] * vals).sum(1).reshape(n, d)


def train_attention_pool(feats: torch.Tensor, present: torch.Tensor, text_emb: torch.Tensor, ids: torch.Tensor,
                         video_proj: nn.Module, temperature: float, o: LongEvalOptions) -> tuple[AttentionPool, dict]:
    """An :class:`AttentionPool` fitted by symmetric InfoNCE between ``video_proj(pool(segments))`` and the frozen
    caption embeddings ``text_emb`` (N, E) (captions sharing an id are all positives), AdamW with a cosine
    schedule, ``o.pool_epochs`` passes of shuffled batches; ``video_proj`` is not trained."""
    torch.manual_seed(o.pool_seed)  # the pool's init
    pool = AttentionPool(feats.shape[-1], feats.shape[1], o.heads, o.positions)
    proj = copy.deepcopy(video_proj).cpu().float().requires_grad_(False)
    opt = torch.optim.AdamW(pool.parameters(), lr=o.pool_lr, weight_decay=o.pool_weight_decay)
    n, bs = feats.shape[0], min(o.pool_batch_size, feats.shape[0])
    steps = o.pool_epochs * max(n // bs, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * i / steps)))
    gen = torch.Generator().manual_seed(o.pool_seed)
    t = F.normalize(text_emb.float(), dim=-1)
    losses = []
    pool.train()
    for _ in range(o.pool_epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - bs + 1, bs):  # full batches only: InfoNCE's negatives
            j = perm[i : i + bs]
            v = F.normalize(proj(pool(feats[j], present[j])), dim=-1)
            loss = infonce(v, t[j], temperature, labels=ids[j], normalize=False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    first, last = sum(losses[:10]) / max(len(losses[:10]), 1), sum(losses[-10:]) / max(len(losses[-10:]), 1)
    return pool.eval(), {"steps": len(losses), "loss_first10": first, "loss_last10": last}


def _fit_mean(train: LongFeatures, model, o: LongEvalOptions):
    return mean_pool, {"parameters": 0}


def _fit_attention(train: LongFeatures, model, o: LongEvalOptions):
    text = _embed_texts(model.embed_text, list(dict.fromkeys(train.captions)))
    index = {c: i for i, c in enumerate(dict.fromkeys(train.captions))}
    t = text[[index[c] for c in train.captions]]
    pool, info = train_attention_pool(train.feats, train.present, t, caption_ids(train.captions), model.video_proj,
                                      float(model.temperature().detach()), o)
    info["parameters"] = sum(p.numel() for p in pool.parameters())
    return (lambda f, m: pool(f, m)), info


POOLS = {"mean": _fit_mean, "attention": _fit_attention}


# ------------------------------------------------------------------------------------ features
@dataclass
class LongFeatures:
    keys: list[str]
    captions: list[str]
    labels: torch.Tensor  # (N,)
    feats: torch.Tensor  # (N, S, D) encoder features per segment (S = 1: the long encoder)
    present: torch.Tensor  # (N, S) bool


@torch.no_grad()
def extract_long(model, data_dir: str, split: str, o: LongEvalOptions, *, batch_size: int = 8, device: str = "cpu",
                 cache_dir: Path | None = None) -> LongFeatures:
    """Encoder features (eval mode: nothing masked) of every video of ``split`` under ``o.aggregate``, cached
    under ``cache_dir`` by (encoder weights, shard set, split, view, segmentation)."""
    view = o.view()
    path = None
    if cache_dir is not None:
        seg = f"{o.segment_frames}x{o.segment_stride}" if o.aggregate == "segments" else "all"
        path = Path(cache_dir) / f"long-{split}-{cache_key(model.encoder, data_dir, split, [view])}-{o.aggregate}{seg}.pt"
        if path.is_file():
            d = read_file(path)
            return LongFeatures(list(d["keys"]), list(d["captions"]), d["labels"], d["feats"], d["present"])
    model.to(device).eval()
    extract = EXTRACTORS[o.aggregate]
    keys, caps, labels, feats, present = [], [], [], [], []
    for batch, rows in unique_samples(data_dir, split, [view], batch_size):
        if not rows:
            continue
        r = torch.tensor(rows)
        clip = to_clip(batch["views"][0][r].to(device))
        valid = batch["valid"][0][r].to(device) if "valid" in batch else None
        f, m = extract(model.encode, clip, valid, o)
        feats.append(f.cpu())
        present.append(m.cpu())
        keys += [batch["key"][j] for j in rows]
        caps += [batch["caption"][j] for j in rows]
        labels += [int(batch["label"][j]) for j in rows]
    if not keys:
        raise VideosslError(f"split {split!r} of {data_dir} yielded no videos")
    out = LongFeatures(keys, caps, torch.tensor(labels), torch.cat(feats), torch.cat(present))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"keys": out.keys, "captions": out.captions, "labels": out.labels, "feats": out.feats,
                    "present": out.present}, path.with_suffix(".part"))
        path.with_suffix(".part").replace(path)
    return out


def read_long_meta(data_dir: str, split: str) -> dict[str, dict[str, Any]]:
    """key → the sample's JSON (caption, shuffled_captions, events, …) of every sample of ``split``."""
    out = {}
    for path in split_shard_paths(data_dir, split):
        for key, members in iter_tar_samples(path):
            if "json" in members:
                out[key] = json.loads(members["json"])
    if not any("shuffled_captions" in m for m in out.values()):
        raise VideosslError(f"{data_dir} [{split}] has no sample with shuffled_captions: it is not a long synthetic set "
                            "(make one with `videossl data synth --preset long --out DIR`)")
    return out


# ------------------------------------------------------------------------------------ metrics
@torch.no_grad()
def _embed_texts(embed_text, texts: list[str]) -> torch.Tensor:
    return F.normalize(torch.cat([embed_text(texts[i : i + 256]).float().cpu() for i in range(0, len(texts), 256)]), dim=-1)


def order_accuracy(scores: list[torch.Tensor], tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per video, from its candidates' scores (the true caption first): (credit, tied). The credit is 1 when the
    true caption scores highest, 1/m when it shares the highest score with m − 1 others (within ``tol``: the
    expected accuracy of a random tie-break), else 0; ``tied`` marks a shared top score."""
    credit, tied = [], []
    for s in scores:
        if s.ndim != 1 or len(s) < 2:
            raise VideosslError(f"order_accuracy needs the true caption and at least one other order, got shape {tuple(s.shape)}")
        top = s >= s.max() - tol
        n = int(top.sum())
        credit.append(float(top[0]) / n)
        tied.append(bool(top[0]) and n > 1)
    return torch.tensor(credit), torch.tensor(tied)


@torch.no_grad()
def order_zeroshot(embed_text, video_emb: torch.Tensor, candidates: list[list[str]], tol: float = 1e-6) -> dict[str, Any]:
    """Order-sensitive zero-shot: video i (``video_emb`` L2-normalised) against ``candidates[i]`` = [its caption,
    the same events in other orders, …] by cosine similarity. Videos with a single candidate are left out.
    ``order_zs_chance`` = mean of 1/len(candidates); ``order_zs_ties`` = fraction of videos whose caption shares
    the top score (e.g. a text tower blind to word order)."""
    rows = [(i, c) for i, c in enumerate(candidates) if len(c) > 1]
    if not rows:
        return {}
    texts = list(dict.fromkeys(x for _, c in rows for x in c))
    index = {x: j for j, x in enumerate(texts)}
    t = _embed_texts(embed_text, texts)
    v = F.normalize(video_emb.float(), dim=-1)
    scores = [t[[index[x] for x in c]] @ v[i] for i, c in rows]
    credit, tied = order_accuracy(scores, tol)
    return {"order_zs_top1": float(credit.mean()), "order_zs_chance": sum(1 / len(c) for _, c in rows) / len(rows),
            "order_zs_ties": float(tied.float().mean()), "order_zs_videos": len(rows),
            "order_zs_candidates": sum(len(c) for _, c in rows) / len(rows)}


def event_order_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                      num_classes: int, p: ProbeConfig) -> dict[str, Any]:
    """A linear probe (:func:`videossl.eval.linear.train_probe`) on the event-order label, trained on the train
    split's pooled features; test top-1 / top-5 next to chance (1/classes) and the majority train class's rate."""
    probe = train_probe(train_x, train_y, num_classes, p)
    res = evaluate_probe(probe, test_x, test_y, allow_unseen_classes=True)
    majority = int(torch.bincount(train_y, minlength=num_classes).argmax())
    seen = set(train_y.tolist())
    return {"top1": res.top1, "top5": res.top5, "mean_class_accuracy": res.mean_class_accuracy,
            "probe_chance": 1.0 / num_classes, "probe_majority": float((test_y == majority).float().mean()),
            "probe_unseen_test_videos": int(sum(int(y) not in seen for y in test_y.tolist())),
            "num_train_videos": int(len(train_y)), "num_test_videos": int(len(test_y))}


def events_in_view(metas: list[dict[str, Any]], frames: int, step: float) -> dict[str, float]:
    """Fraction of videos whose last event / every event ends inside the view (``frames`` frames, ``step`` source
    frames apart, from frame 0): the ceiling of what any encoder of that view can know of the label."""
    span = (frames - 1) * step + 1  # source frames 0 .. (frames - 1) * step
    last = [bool(m.get("events")) and m["events"][-1]["end"] <= span for m in metas]
    every = [bool(m.get("events")) and all(e["end"] <= span for e in m["events"]) for m in metas]
    return {"last_event_in_view": sum(last) / max(len(last), 1), "all_events_in_view": sum(every) / max(len(every), 1)}


# ------------------------------------------------------------------------------------ the evaluation
def evaluate_long(model, data_dir: str, o: LongEvalOptions, *, train_split: str = "train", test_split: str = "test",
                  batch_size: int = 8, device: str = "cpu", cache_dir: Path | None = None) -> dict[str, Any]:
    """The three metrics of one aggregation of ``model`` (a video–text method: ``encode``, ``video_proj``,
    ``embed_text``, ``temperature``) on a long synthetic set; pool and probe fitted on ``train_split``."""
    meta = read_long_meta(data_dir, test_split)  # first: a set that is not the long preset fails before any decoding
    train = extract_long(model, data_dir, train_split, o, batch_size=batch_size, device=device, cache_dir=cache_dir)
    test = extract_long(model, data_dir, test_split, o, batch_size=batch_size, device=device, cache_dir=cache_dir)
    pool, pool_info = POOLS[o.pool](train, model, o)
    with torch.no_grad():
        x_train, x_test = pool(train.feats, train.present), pool(test.feats, test.present)
        dev = next(model.video_proj.parameters()).device
        emb = F.normalize(model.video_proj(x_test.to(dev)).float().cpu(), dim=-1)
    metas = [meta[k] for k in test.keys]
    res: dict[str, Any] = {"name": o.name, "aggregate": o.aggregate, "pool": o.pool if o.aggregate == "segments" else None}
    res.update(order_zeroshot(model.embed_text, emb, [[m["caption"], *m.get("shuffled_captions", [])] for m in metas]))
    res.update(caption_retrieval(model.embed_text, emb, test.captions))
    classes = list(load_manifest(data_dir).get("classes") or [])
    if len(classes) < 2:
        raise VideosslError(f"{data_dir}/manifest.json has no class list: the event-order probe needs one")
    res.update(event_order_probe(x_train, train.labels, x_test, test.labels, len(classes), o.probe))
    fps = float(load_manifest(data_dir).get("video", {}).get("fps") or o.target_fps)
    res.update(events_in_view(metas, o.frames, frame_step(fps, 1, o.target_fps)))
    res["segments_per_video"] = float(test.present.float().sum(1).mean())
    res["pool_info"] = pool_info
    res["feature_dim"] = int(test.feats.shape[-1])
    return res


def _sees(o: LongEvalOptions) -> str:
    if o.aggregate == "long":
        return (f"long: one encoder pass over all {o.frames} frames (joint space-time attention over every token, "
                "one temporal position per tubelet step), tokens of padding frames left out of attention and pooling")
    seg = (f"segments: {o.num_segments} consecutive segments of {o.segment_frames} frames"
           + (f" (every {o.segment_stride}th frame to the encoder)" if o.segment_stride > 1 else "")
           + ", each encoded on its own (temporal positions restart per segment); the last padded and marked invalid, "
             "segments without a real frame dropped")
    if o.pool == "mean":
        return seg + "; pool: mean (equal weight per segment, no segment index, no parameters: invariant to segment order)"
    pos = "learned segment-position embeddings" if o.positions else "NO position embeddings (invariant to segment order)"
    return (seg + f"; pool: attention ({o.heads} learned queries over the segment vectors with {pos}, initialised to the "
            f"mean pool, trained on the train split's captions by the run's video-text InfoNCE, video projection, text "
            f"tower and temperature frozen; AdamW lr {o.pool_lr}, wd {o.pool_weight_decay}, batch {o.pool_batch_size}, "
            f"{o.pool_epochs} epochs, seed {o.pool_seed})")


def protocol_lines(o: LongEvalOptions, model_spec: dict[str, Any], data_dir: str, splits: tuple[str, str],
                   weights: list[str], res: dict[str, Any]) -> list[str]:
    enc = (model_spec.get("init_args") or {}).get("encoder") or {}
    text = (model_spec.get("init_args") or {}).get("text_encoder") or {}
    p = o.probe
    return [
        f"model: {model_spec.get('class_path')}; video encoder {enc.get('class_path')} "
        f"{json.dumps(enc.get('init_args', {}), sort_keys=True)}; text tower {text.get('class_path', 'default')} "
        f"{json.dumps(text.get('init_args', {}), sort_keys=True)}",
        f"frames x fps: the first {o.frames} frames at {o.target_fps:g} fps from the start (long sampler), {o.size} px; "
        "shorter videos padded, padding marked invalid",
        f"aggregation: {_sees(o)}",
        "masking: off (eval mode: every token kept)",
        f"data: {data_dir}, train split '{splits[0]}' ({res.get('num_train_videos')} videos: probe"
        + (", attention pool" if o.pool == "attention" else "") + f"), test split '{splits[1]}' "
        f"({res.get('num_test_videos')} videos: every metric)",
        f"events in view: {100 * res['last_event_in_view']:.0f} % of test videos end their last event within the "
        f"{o.frames} frames, {100 * res['all_events_in_view']:.0f} % every event",
        "order-sensitive zero-shot: each video's caption against the same events in other orders (the sample's "
        "shuffled_captions), cosine in the joint space; ties share the credit",
        "retrieval: text->video / video->text over the test split's distinct captions",
        f"probe: event-order label (first event, last event) = {res.get('probe_chance') and round(1 / res['probe_chance'])} "
        f"classes; softmax {p.optimizer}, {p.epochs} iterations, wd {p.weight_decay}, standardised features, seed {p.seed}; "
        "feature: the pooled encoder output (before the video projection)",
        f"seeds: probe {p.seed}" + (f", attention pool {o.pool_seed}" if o.pool == "attention" else ""),
        *weights,
    ]


METRIC_ROWS = (  # (key, label, chance key or a function of the results)
    ("order_zs_top1", "order-sensitive zero-shot top-1", lambda r: r.get("order_zs_chance")),
    ("t2v_r1", "text->video R@1", lambda r: min(1.0, r["chance_r1"])),
    ("t2v_r5", "text->video R@5", lambda r: min(1.0, 5 * r["chance_r1"])),
    ("t2v_r10", "text->video R@10", lambda r: min(1.0, 10 * r["chance_r1"])),
    ("v2t_r1", "video->text R@1", lambda r: min(1.0, r["chance_r1"])),
    ("top1", "event-order probe top-1", lambda r: r.get("probe_chance")),
    ("top5", "event-order probe top-5", lambda r: min(1.0, 5 * r["probe_chance"]) if r.get("probe_chance") else None),
)


def write_long_report(out_dir: Path, payload: dict[str, Any]) -> Path:
    r = payload["results"][0]
    lines = report_header(f"Long-video evaluation: {r['name']}", payload["protocol"])
    lines += ["| metric | value % | chance % |", "|---|---|---|"]
    for key, label, chance in METRIC_ROWS:
        if r.get(key) is not None:
            lines.append(f"| {label} | {fmt_num(r[key], '.1f', 100)} | {fmt_num(chance(r), '.1f', 100)} |")
    lines += ["", f"Probe majority-class rate: {fmt_num(r['probe_majority'], '.1f', 100)} %; "
              f"{r['probe_unseen_test_videos']} test videos have a label no train video has.",
              f"Order zero-shot: {r.get('order_zs_videos')} videos, {fmt_num(r.get('order_zs_candidates'), '.2f')} candidates "
              f"per video on average, true caption tied at the top for {fmt_num(r.get('order_zs_ties'), '.1f', 100)} %."]
    return write_markdown(out_dir, lines)


# ------------------------------------------------------------------------------------ side by side
COMPARE_COLUMNS = ("source", "aggregation", "frames", "order-ZS % (chance)", "t2v R@1 %", "t2v R@5 %", "t2v R@10 %",
                   "R chance R@1 %", "probe top-1 % (chance, majority)", "test videos", "weights")


def compare_rows(paths: list[str]) -> list[dict[str, str]]:
    """One row per ``videossl eval long`` result (results.json files or folders holding one)."""
    rows = []
    for arg in paths:
        for f in find_results(arg):
            d = load_results(f)
            if d.get("kind") != "long":  # a run folder's other evaluations
                continue
            for r in d["results"]:
                rows.append({
                    "source": str(f.parent), "aggregation": str(r.get("name")), "frames": str(d["options"]["frames"]),
                    "order-ZS % (chance)": f"{fmt_num(r.get('order_zs_top1'), '.1f', 100)} "
                                           f"({fmt_num(r.get('order_zs_chance'), '.1f', 100)})",
                    "t2v R@1 %": fmt_num(r.get("t2v_r1"), ".1f", 100), "t2v R@5 %": fmt_num(r.get("t2v_r5"), ".1f", 100),
                    "t2v R@10 %": fmt_num(r.get("t2v_r10"), ".1f", 100),
                    "R chance R@1 %": fmt_num(r.get("chance_r1"), ".1f", 100),
                    "probe top-1 % (chance, majority)": f"{fmt_num(r.get('top1'), '.1f', 100)} "
                                                        f"({fmt_num(r.get('probe_chance'), '.1f', 100)}, "
                                                        f"{fmt_num(r.get('probe_majority'), '.1f', 100)})",
                    "test videos": str(r.get("num_test_videos")),
                    "weights": str(d.get("checkpoint_sha256") or "-"),
                })
    if not rows:
        raise VideosslError("nothing to compare: give `videossl eval long` results.json files or their folders")
    return rows


def compare_markdown(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COMPARE_COLUMNS) + " |", "|" + "---|" * len(COMPARE_COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COMPARE_COLUMNS) + " |" for r in rows]
    return "# Long-video evaluation: side by side\n\n" + "\n".join(lines) + "\n"
