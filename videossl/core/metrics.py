"""Retrieval metrics shared by training-time validation (the long-video method) and evaluation.

Similarities are (queries, gallery), higher = closer; positives are defined by equal ids, so
repeated captions are all positives. Ties are broken by gallery order (stable sort).
"""

from __future__ import annotations

import torch

from videossl.errors import VideosslError

__all__ = ["first_positive_rank", "recall_at_k", "retrieval_metrics"]


def recall_at_k(sim: torch.Tensor, query_ids: torch.Tensor, gallery_ids: torch.Tensor, ks=(1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose top-k gallery items (by ``sim`` (Q, G), higher = closer) hold a positive.

    Positives of query q are the gallery items g with ``gallery_ids[g] == query_ids[q]``; a query
    without any positive is an error. Ties are broken by gallery order.
    """
    if sim.ndim != 2 or sim.shape != (len(query_ids), len(gallery_ids)):
        raise VideosslError(f"sim must be (Q, G) = ({len(query_ids)}, {len(gallery_ids)}), got {tuple(sim.shape)}")
    pos = query_ids[:, None].to(gallery_ids.device) == gallery_ids[None, :]
    if not bool(pos.any(dim=1).all()):
        raise VideosslError("recall_at_k: a query has no positive in the gallery")
    rank = first_positive_rank(sim, pos)
    return {k: float((rank < k).float().mean()) for k in ks}


def first_positive_rank(sim: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(Q,) 0-based rank of the best-ranked positive of each query."""
    order = sim.float().argsort(dim=1, descending=True, stable=True)
    hit = pos.gather(1, order.to(pos.device))
    return hit.float().argmax(dim=1)


def retrieval_metrics(sim_t2v: torch.Tensor, text_ids: torch.Tensor, video_ids: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Text→video and video→text R@k and median rank (1-based) from the (texts, videos) similarities.

    ``text_ids``/``video_ids`` are caption ids: a text's positives are the videos with its id.
    """
    out: dict[str, float] = {}
    for name, sim, q, g in (("t2v", sim_t2v, text_ids, video_ids), ("v2t", sim_t2v.t(), video_ids, text_ids)):
        pos = q[:, None].to(g.device) == g[None, :]
        if not bool(pos.any(dim=1).all()):
            raise VideosslError(f"retrieval_metrics: a {name[0]} query has no positive")
        rank = first_positive_rank(sim, pos)
        for k in ks:
            out[f"{name}_r{k}"] = float((rank < k).float().mean())
        out[f"{name}_medr"] = float(rank.float().median() + 1)
    return out
