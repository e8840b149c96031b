"""Zero-shot evaluation of a video–text model: text↔video retrieval R@1/5/10 and zero-shot
classification by class-name prompts.

Pure metric functions (tested against hand computations):

* :func:`recall_at_k` — for each query row of a similarity matrix, is any gallery item with the
  query's id among its top k? (several videos may share one caption: all of them count);
* :func:`retrieval_metrics` — text→video and video→text R@1/5/10 and median rank;
* :func:`zeroshot_accuracy` — top-1/top-5 and mean per-class accuracy of ``argmax video · classᵀ``;
* :func:`class_embeddings` — mean of the normalised embeddings of every prompt of a class;
* :func:`caption_zeroshot` (synthetic set) — classification among the video's own caption with its
  motion phrase set to each class in turn: appearance held fixed, only motion decides.

:func:`load_run_model` + :func:`evaluate` (``videossl eval zeroshot --run RUN``,
:mod:`videossl.eval.commands.zeroshot`) rebuild the model of a ``videossl fit`` run (its
``config.yaml``), load ``checkpoints/last.ckpt``, embed every test video (eval views of the run,
unmasked, embeddings averaged over clips × crops) and every caption, and report the numbers next
to chance (1/N for retrieval R@1, 1/classes for classification). Duplicate samples (the padding of
the last eval batch) are dropped; identical captions are one retrieval target shared by their videos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from videossl.core.metrics import recall_at_k, retrieval_metrics
from videossl.data.loader import VideoShardDataset, make_loader, resolve_shards
from videossl.data.loader.batch import to_clip
from videossl.data.prompts import caption_ids, class_prompts, dataset_kind, with_motion
from videossl.errors import VideosslError
from videossl.eval.runs import build_method, load_method_weights, run_config

__all__ = ["caption_retrieval", "caption_zeroshot", "class_embeddings", "recall_at_k", "retrieval_metrics",
           "zeroshot_accuracy", "embed_split", "evaluate", "load_run_model", "unique_samples"]

def zeroshot_accuracy(video_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top-1, top-5 and mean per-class accuracy of ``argmax(video_emb @ class_embᵀ)``."""
    if video_emb.shape[1] != class_emb.shape[1] or len(video_emb) != len(labels):
        shapes = f"{tuple(video_emb.shape)}, {tuple(class_emb.shape)}, {tuple(labels.shape)}"
        raise VideosslError(f"zeroshot_accuracy: shapes {shapes}")
    logits = video_emb.float() @ class_emb.float().t()
    k = min(5, class_emb.shape[0])
    top = logits.topk(k, dim=1).indices
    correct1 = top[:, 0] == labels
    per_class = [float(correct1[labels == c].float().mean()) for c in labels.unique().tolist()]
    return {"top1": float(correct1.float().mean()), "top5": float((top == labels[:, None]).any(1).float().mean()),
            "mean_class": float(sum(per_class) / max(len(per_class), 1))}


@torch.no_grad()
def class_embeddings(embed_text, classes: list[str], kind: str = "generic") -> torch.Tensor:
    """(C, D): per class, the renormalised mean of its prompts' normalised text embeddings."""

    rows = []
    for name in classes:
        e = F.normalize(embed_text(class_prompts(name, kind)).float(), dim=-1)
        rows.append(F.normalize(e.mean(0), dim=-1))
    return torch.stack(rows)


# ------------------------------------------------------------------------------------ model + data
def load_run_model(run: Path, ckpt: Path | None = None):
    """The LightningModule of a ``videossl fit`` run, weights from ``ckpt`` or ``checkpoints/last.ckpt``."""
    cfg, cfg_path = run_config(run)
    model = build_method(cfg, str(cfg_path))
    if not hasattr(model, "embed_text"):
        raise VideosslError(f"{cfg['model']['class_path']} has no text tower: zero-shot evaluation needs a video–text model")
    load_method_weights(model, ckpt or run / "checkpoints" / "last.ckpt")
    data = cfg.get("data") or {}
    data = data.get("init_args", data)
    return model.eval(), data


def unique_samples(data_dir: str, split: str, views, batch_size: int = 32):
    """Yield ``(batch, rows)`` over ``split`` in evaluation order: ``rows`` are the batch positions of videos
    seen for the first time (the pipeline's padding duplicates and repeats dropped), so every video comes once."""

    ds = VideoShardDataset(data_dir, views, split=split, batch_size=batch_size, train=False, rank=0, world_size=1)
    seen: set[str] = set()
    for batch in make_loader(ds, num_workers=0):
        rows = []
        for j, dup in enumerate(batch["duplicate"].tolist()):
            key = batch["key"][j]
            if not dup and key not in seen:
                seen.add(key)
                rows.append(j)
        yield batch, rows


@torch.no_grad()
def embed_split(model, data_dir: str, split: str, views, batch_size: int = 32, device: str = "cpu") -> dict[str, Any]:
    """Per video: joint-space embedding (mean over views, renormalised), caption, label."""

    model.to(device)
    embs, caps, labels = [], [], []
    for batch, rows in unique_samples(data_dir, split, views, batch_size):
        per_view = []
        for i, v in enumerate(batch["views"]):
            valid = batch["valid"][i].to(device) if "valid" in batch else None
            per_view.append(model.embed_video(to_clip(v.to(device)), valid).float().cpu())
        e = F.normalize(torch.stack(per_view, 1).mean(1), dim=-1)
        for j in rows:
            embs.append(e[j])
            caps.append(batch["caption"][j])
            labels.append(int(batch["label"][j]))
    classes = resolve_shards(data_dir, split).classes
    return {"emb": torch.stack(embs), "captions": caps, "labels": torch.tensor(labels), "classes": classes}


@torch.no_grad()
def caption_retrieval(embed_text, video_emb: torch.Tensor, captions: list[str]) -> dict[str, Any]:
    """Text→video and video→text R@1/5/10 and median rank between the videos and their captions (identical
    captions are one text shared by their videos), with ``captions`` (distinct) and ``chance_r1`` = 1/captions."""

    uniq = list(dict.fromkeys(captions))
    t = torch.cat([embed_text(uniq[i : i + 256]).float().cpu() for i in range(0, len(uniq), 256)])
    out: dict[str, Any] = retrieval_metrics(t @ video_emb.float().t(), caption_ids(uniq), caption_ids(captions))
    out["captions"] = len(uniq)
    out["chance_r1"] = 1.0 / len(uniq)
    return out


def evaluate(model, data_dir: str, split: str, views, device: str = "cpu", batch_size: int = 32) -> dict[str, Any]:
    d = embed_split(model, data_dir, split, views, batch_size, device)
    out: dict[str, Any] = {"split": split, "videos": len(d["captions"])}
    if all(c.strip() for c in d["captions"]):
        out.update(caption_retrieval(model.embed_text, d["emb"], d["captions"]))
    classes = d["classes"]
    if classes:
        kind = dataset_kind(classes)
        ce = class_embeddings(lambda txt: model.embed_text(txt).cpu(), classes, kind)
        out.update({f"zs_{k}": v for k, v in zeroshot_accuracy(d["emb"], ce, d["labels"]).items()})
        out["classes"] = len(classes)
        out["chance_top1"] = 1.0 / len(classes)
        if kind == "synthetic":
            out.update(caption_zeroshot(model.embed_text, d["emb"], d["captions"], d["labels"], classes))
    return out


@torch.no_grad()
def caption_zeroshot(embed_text, video_emb: torch.Tensor, captions: list[str], labels: torch.Tensor,
                     classes: list[str]) -> dict[str, float]:
    """Zero-shot classification with each video's *own* caption, its motion phrase set to every class
    in turn (mean of that class's phrases): the appearance words are the same in every candidate,
    so only motion can decide. ``zs_caption_top1`` over the videos whose caption names a motion."""

    rows = [(i, [with_motion(cap, c) for c in classes]) for i, cap in enumerate(captions)]
    rows = [(i, cands) for i, cands in rows if all(c is not None for c in cands)]
    if not rows:
        return {}
    texts = [x for _, cands in rows for c in cands for x in c]  # every video: classes x phrases, one batch
    t = torch.cat([embed_text(texts[j:j + 256]).float().cpu() for j in range(0, len(texts), 256)])
    t = F.normalize(t, dim=-1).view(len(rows), len(classes), -1, t.shape[-1]).mean(2)  # class = mean of phrases
    idx = torch.tensor([i for i, _ in rows])
    pred = torch.einsum("ncd,nd->nc", F.normalize(t, dim=-1), video_emb[idx].float()).argmax(1)
    hits, n = int((pred == labels[idx]).sum()), len(rows)
    return {"zs_caption_top1": hits / n, "zs_caption_videos": n}
