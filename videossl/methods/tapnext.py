"""TAPNext trained on the synthetic set's point tracks (Zholus et al., arXiv:2504.05579; the network is
:class:`videossl.models.tapnext.TAPNext`).

Supervised, not self-supervised: the batch must carry the synthetic set's ``tracks.npz`` (``data.extras:
[tracks.npz]``) and the training view must show the whole frame at its own size (no crop, no resize, no flip),
so that the tracks keep their pixel coordinates; the frames of the view are looked up in the tracks with the
view's frame ``indices``. Per video and track ``queries_per_track`` queries (default 1), each at a random
visible frame of the clip, drawn independently, or with probability ``first_query_prob`` at the track's first
visible frame (TAP-Vid's ``first`` query mode; tracks never visible in the clip are not scored); loss (§3.4):
0.1·Huber(δ = 1 px) + 1.0·bin cross-entropy on visible points, + BCE of visibility, on every frame of the clip.

``module.encoder`` is the tracker itself (it is what ``videossl eval tap --run RUN`` evaluates).
"""

from __future__ import annotations

from typing import Any

import torch

from videossl.core.optim import OptimConfig
from videossl.data.loader.batch import to_clip, view, view_indices
from videossl.errors import VideosslError
from videossl.methods.base import SSLMethod
from videossl.models.tapnext import TAPNext, tapnext_loss


class TAPNextMethod(SSLMethod):
    """Train a :class:`TAPNext` on the ``clip`` view and the batch's ``tracks``."""

    encoder_view = "clip"

    def __init__(self, encoder: TAPNext | None = None, huber_weight: float = 0.1, ce_weight: float = 1.0,
                 vis_weight: float = 1.0, optim: OptimConfig | None = None, num_classes: int = 0, probe_lr: float = 1e-2,
                 seed: int = 0, queries_per_track: int = 1,
                 first_query_prob: float = 0.0) -> None:
        super().__init__(optim=optim, num_classes=0, probe_lr=probe_lr, seed=seed)
        self.encoder = encoder if encoder is not None else TAPNext(isolate_queries=True)
        self.huber_weight, self.ce_weight, self.vis_weight = float(huber_weight), float(ce_weight), float(vis_weight)
        if int(queries_per_track) < 1:
            raise VideosslError(f"queries_per_track must be >= 1, got {queries_per_track}")
        self.queries_per_track = int(queries_per_track)
        if not 0.0 <= float(first_query_prob) <= 1.0:
            raise VideosslError(f"first_query_prob must be in [0, 1], got {first_query_prob}")
        self.first_query_prob = float(first_query_prob)

    def targets(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(clip (B, 3, T, S, S), target (B, T, k·N, 2) px, visible (B, T, k·N)) of the ``clip`` view: the N tracks
        repeated ``queries_per_track`` = k times (copy j of track n at index j·N + n)."""
        if "tracks" not in batch:
            raise VideosslError("TAPNext trains on point tracks: set data.extras: [tracks.npz] (a `videossl data synth` set)")
        clip = to_clip(view(batch, "clip"))
        if clip.shape[-1] != self.encoder.img_size:
            raise VideosslError(f"the clip view is {clip.shape[-1]} px but TAPNext is built for {self.encoder.img_size} px")
        idx = batch["indices"][view_indices(batch, "clip")[0]].long()  # (B, T)
        b = torch.arange(idx.shape[0], device=idx.device)[:, None]
        pts = batch["tracks"]["points"].to(clip.device)[b, idx].float()
        vis = batch["tracks"]["visible"].to(clip.device)[b, idx].bool()
        k = self.queries_per_track  # every track k times along the query axis (each copy gets its own query frame)
        return clip, pts.repeat(1, 1, k, 1), vis.repeat(1, 1, k)

    def sample_queries(self, pts: torch.Tensor, vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One query (t, y, x) per track: with probability ``first_query_prob`` at the track's first visible frame
        of the clip (TAP-Vid's ``first`` query mode), else at a random visible frame; (queries (B, N, 3),
        has_query (B, N))."""
        g = self.step_generator()
        r = torch.rand(vis.shape, generator=g).to(vis.device)
        if self.first_query_prob > 0:
            first = (torch.rand(vis.shape[0], 1, vis.shape[2], generator=g) < self.first_query_prob).to(vis.device)
            earliest = -torch.arange(vis.shape[1], device=vis.device, dtype=r.dtype)[None, :, None]  # the max is the first
            r = torch.where(first, earliest.expand_as(r), r)
        t = torch.where(vis, r, torch.full_like(r, -1e9)).argmax(1)  # (B, N)
        has = vis.any(1)
        xy = torch.gather(pts, 1, t[:, None, :, None].expand(-1, 1, -1, 2))[:, 0]
        return torch.stack([t.float(), xy[..., 1], xy[..., 0]], -1), has

    def ssl_step(self, batch: dict[str, Any]):
        clip, pts, vis = self.targets(batch)
        queries, has = self.sample_queries(pts, vis)
        out = self.encoder(clip, queries)
        scored = has[:, None, :].expand_as(vis)
        terms = tapnext_loss(out, pts, vis, scored, self.huber_weight, self.ce_weight, self.vis_weight)
        with torch.no_grad():
            err = (out.tracks - pts).norm(dim=-1)
            sel = vis & scored
            logs = {k: v.detach() for k, v in terms.items() if k != "loss"}
            logs["px_error"] = err[sel].mean() if sel.any() else err.new_zeros(())
        return terms["loss"], out.visible_logit.new_zeros(clip.shape[0], self.encoder.feature_dim), logs

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        clip, pts, vis = self.targets(batch)
        queries, has = self.sample_queries(pts, vis)
        out = self.encoder(clip, queries)
        scored = has[:, None, :].expand_as(vis)
        terms = tapnext_loss(out, pts, vis, scored, self.huber_weight, self.ce_weight, self.vis_weight)
        self.log("val/loss", terms["loss"], on_epoch=True, batch_size=clip.shape[0], sync_dist=True)


__all__ = ["TAPNextMethod"]
