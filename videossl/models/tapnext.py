"""A small TAPNext: tracking any point as causal, online masked-token decoding (Zholus et al., "TAPNext: Tracking
Any Point (TAP) as Next Token Prediction", arXiv:2504.05579, §3).

Tokens (§3.1): every frame is cut into ``patch``×``patch`` patches (a linear projection plus a learned spatial
position embedding); every query adds one token per frame: on its query frame a learned point-query token plus a
2-D sin-cos embedding of its (x, y), on later frames a learned *mask* token, on earlier frames a learned
*unknown* token. No temporal position embedding.

Blocks (§3.2): each block is a temporal block, per token over time, then a ViT block over the h·w + Q tokens of
each frame. Temporal block: RMSNorm → GELU(linear u) ⊙ RG-LRU(causal depthwise conv1d, width 4, over linear u)
→ linear, plus a residual; then RMSNorm → gated-GELU MLP, plus a residual. RG-LRU (Griffin, arXiv:2402.19427
§2.4): a_t = exp(−8·σ(W_a u_t)·softplus(Λ)), h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (σ(W_x u_t) ⊙ u_t), the first
step unscaled, gates block-diagonal per head. Everything is causal in time, so :meth:`TAPNext.init_state` /
:meth:`TAPNext.step` run frame by frame with the carried state (step count, each layer's LRU state and conv
cache) and give the whole-clip outputs.

Heads (§3.3): an MLP gives one ``num_bins``-way classifier per axis (here one bin per pixel of the input
frame; the paper's 256 bins over a 256-px frame); read-out = softmax(0.5·logits) kept within ±20 bins of the
argmax, renormalised, expectation (+0.5 in the frame-edge convention; here pixel centres are at integers, so
the expectation itself). Visibility is one logit; certainty the probability mass within 8 px of the
prediction (product of the two marginals).

``relative=True`` (a deviation for short CPU training, off by default): the coordinate bins are offsets from the
query point, ``-max_offset … +max_offset`` px per axis (``max_offset`` = half the frame by default), instead of
absolute positions; the read-out, the loss and the certainty are the same functions on those bins, and the track
is the query point plus the read-out offset. The absolute head first has to learn to read its own query position
out of the sin-cos embedding to the pixel, which a few thousand CPU steps do not teach (BENCHMARKS.md, "Session 8:
TAPNext trained on the synthetic tracks"); with offsets, "stay at the query point" is one bin and only the motion
is left to learn.

Three more deviations for short CPU training, all off by default (BENCHMARKS.md, "Session 14"):
``motion_input=True`` gives each patch the frame and its difference to the previous frame (6 channels; zero on
frame 0; the streaming state keeps the previous frame). ``integrate=True`` (with ``relative``) reads the bins as
the point's displacement since the previous frame, ``-max_offset … +max_offset`` px, and the track as the query
point plus the running sum of the displacements after the query frame (carried in the streaming state); the
bin loss then targets each frame's displacement wherever the point is visible in both frames. ``soft_bins=True``
splits a bin target between the two bins around it (so that a 0.6-px displacement is not taught as 0 or 1), and
``readout_temperature`` replaces the paper's 0.5.

``corr_radius=r`` (with ``integrate``; off by default, our addition — the local correlation that RAFT-style
trackers build, arXiv:2003.12039 §3.2, given to TAPNext as an input): a small 3×3 conv maps each frame to
``corr_dim`` features at full resolution; on its query frame a query keeps its feature (bilinear at the query
point) as its template, and on every later frame its token also gets a linear map of the template's dot products
with the frame's features on the (2r+1)² pixel grid around where the track was on the previous frame (the query
point on the frame after the query frame). The bins then read the displacement off a local match instead of
the 8-px patches, which cannot resolve sub-patch motion. The window's centre is the model's own previous output
(detached), so the clip runs frame by frame (``forward`` loops over :meth:`TAPNext.step`), causal as before.

Deviations: the RG-LRU runs as a sequential scan in training too (the paper uses a parallel scan; the same
function), the model is small (width 192, depth 4, patch 8 by default; the paper's S/B are 56M/194M
parameters) and no auxiliary per-layer loss. ``isolate_queries=True`` adds an attention mask so that a query
token attends to the patch tokens and itself only, and patch tokens to patch tokens only: a query's output then
does not depend on the other queries (TAP-Vid asks for it; the paper's model lets point tokens attend to each
other).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from videossl.errors import VideosslError
from videossl.models.warp import pixels_to_normalised

__all__ = ["TAPNext", "TAPNextOutput", "readout", "sincos_2d", "tapnext_loss"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class BlockDiagonal(nn.Module):
    """A linear map that is block-diagonal over ``heads`` groups of channels (weight (heads, d, d), bias (heads, d))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise VideosslError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.d = heads, dim // heads
        self.weight = nn.Parameter(torch.randn(heads, self.d, self.d) / math.sqrt(self.d))
        self.bias = nn.Parameter(torch.zeros(heads, self.d))

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same map as one (dim, dim) matrix (x @ W + b): the blocks on the diagonal, zeros elsewhere."""
        return torch.block_diag(*self.weight.unbind(0)), self.bias.flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one matmul with the block-diagonal matrix: no per-head permute of x (the zeros add nothing)
        w, b = self.dense()
        return torch.addmm(b, x.flatten(0, -2), w).view_as(x) if x.ndim > 1 else x @ w + b


class RGLRU(nn.Module):
    """Real-gated linear recurrent unit over (N, T, ..., D), time on dim 1; ``state`` (N, ..., D) or None (the first
    step is unscaled)."""

    def __init__(self, dim: int, heads: int, c: float = 8.0) -> None:
        super().__init__()
        self.c = c
        self.gate_a, self.gate_x = BlockDiagonal(dim, heads), BlockDiagonal(dim, heads)
        # Griffin initialises the recurrence weight a in [0.9, 0.999] (at a fully open gate): softplus(Λ) = −ln(a)/c
        a = torch.empty(dim).uniform_(0.9, 0.999)
        self.log_lambda = nn.Parameter(torch.log(torch.expm1(-torch.log(a) / c)))

    def forward(self, u: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # both gates in one matmul over the tokens (each gate block-diagonal per head)
        (wa, ba), (wx, bx) = self.gate_a.dense(), self.gate_x.dense()
        gates = torch.addmm(torch.cat([ba, bx]), u.flatten(0, -2), torch.cat([wa, wx], 1)).view(*u.shape[:-1], -1)
        ga, gx = gates.chunk(2, -1)
        log_a = -self.c * torch.sigmoid(ga) * F.softplus(self.log_lambda)  # (N, T, ..., D)
        a = log_a.exp()
        x = torch.sigmoid(gx) * u
        bx_all = torch.sqrt((1 - a * a).clamp_min(1e-12)) * x  # the input term of every step, all at once
        h = state
        out = []
        for t in range(u.shape[1]):
            h = x[:, t] if h is None else a[:, t] * h + bx_all[:, t]
            out.append(h)
        return torch.stack(out, 1), h


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, conv_width: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.lin_y, self.lin_x, self.lin_out = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.conv_width = conv_width
        self.conv = nn.Conv1d(dim, dim, conv_width, groups=dim)  # depthwise, causal (left padding / cache)
        self.lru = RGLRU(dim, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp_in, self.mlp_gate, self.mlp_out = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, state: dict | None) -> tuple[torch.Tensor, dict]:
        """x (N, T, ..., D) tokens, time on dim 1 (e.g. (B, T, L, D): every token of every frame, no transpose);
        ``state``: {"conv": (N, width−1, ..., D), "lru": (N, ..., D)} or None."""
        z = self.norm1(x)
        y = F.gelu(self.lin_y(z))
        u = self.lin_x(z)
        K, T = self.conv_width, x.shape[1]
        prev = u.new_zeros(u.shape[0], K - 1, *u.shape[2:]) if state is None else state["conv"]
        seq = torch.cat([prev, u], 1)  # (N, K−1 + T, ..., D)
        # the causal depthwise conv1d (weight (D, 1, K)) as K shifted products along time: no channels-first copy
        w = self.conv.weight[:, 0]  # (D, K)
        c = self.conv.bias + seq[:, :T] * w[:, 0]
        for k in range(1, K):
            c = c + seq[:, k:k + T] * w[:, k]
        h, last = self.lru(c, None if state is None else state["lru"])
        x = x + self.lin_out(y * h)
        z = self.norm2(x)
        x = x + self.mlp_out(F.gelu(self.mlp_gate(z)) * self.mlp_in(z))
        return x, {"conv": seq[:, -(K - 1):], "lru": last}


class SpatialBlock(nn.Module):
    """Pre-norm ViT block over the tokens of one frame, with an optional boolean attention mask (True = may attend)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        N, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(N, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(N, L, D))
        return x + self.mlp(self.norm2(x))


def sincos_2d(xy: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """2-D sin-cos embedding of points ``xy`` (..., 2) in px (frames of ``scale`` px): half the channels per axis."""
    if dim % 4:
        raise VideosslError(f"width {dim} must be divisible by 4 for the 2-D sin-cos embedding")
    n = dim // 4
    # from 1 cycle per frame up to one cycle per 2 px, geometrically spaced
    cycles = (scale / 2) ** (torch.arange(n, device=xy.device, dtype=torch.float32) / max(n - 1, 1))
    omega = 2 * math.pi * cycles / scale
    parts = []
    for i in range(2):
        ang = xy[..., i : i + 1].float() * omega
        parts += [ang.sin(), ang.cos()]
    return torch.cat(parts, -1)


@dataclass
class TAPNextOutput:
    """``tracks`` (B, T, Q, 2) (x, y) px, pixel centres at integers; ``visible_logit`` (B, T, Q); ``certainty``
    (B, T, Q); ``logits_x`` / ``logits_y`` (B, T, Q, bins); ``bin_origin`` (B, 1, Q, 2) or a scalar: the (x, y)
    in px of bin 0 (0 for absolute bins, the query point − ``max_offset`` for query-relative ones), so that bin
    i of an axis sits at ``bin_origin + i``; with ``integrate``, ``increments`` (B, T, Q, 2) is each frame's read-out
    displacement since the previous frame (bin i = ``bin_origin + i`` px, ``bin_origin`` = −``max_offset``) and
    ``tracks`` their sum after the query frame."""

    tracks: torch.Tensor
    visible_logit: torch.Tensor
    certainty: torch.Tensor
    logits_x: torch.Tensor
    logits_y: torch.Tensor
    bin_origin: torch.Tensor | float = 0.0
    increments: torch.Tensor | None = None
    soft_bins: bool = False


def readout(logits: torch.Tensor, window: int = 20, temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(temperature·logits) within ±``window`` bins of the argmax, renormalised: (expectation, probs)."""
    p = (logits * temperature).softmax(-1)
    idx = torch.arange(logits.shape[-1], device=logits.device, dtype=p.dtype)
    arg = logits.argmax(-1, keepdim=True).to(p.dtype)
    keep = (idx - arg).abs() <= window
    p = p * keep
    p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
    return (p * idx).sum(-1), p


class TAPNext(nn.Module):
    """The tracker. ``forward(video (B, 3, T, H, W) in [0, 1], queries (B, Q, 3) (t, y, x) px)`` → :class:`TAPNextOutput`.

    Streaming: ``state = init_state(queries, batch)`` then ``out, state = step(frame (B, 3, H, W), state)``
    per frame; the outputs equal the whole-clip ones (everything is causal in time)."""

    def __init__(self, img_size: int = 64, patch: int = 8, width: int = 192, depth: int = 4, heads: int = 3,
                 mlp_ratio: float = 4.0, isolate_queries: bool = False, window: int = 20, certainty_px: float = 8.0,
                 relative: bool = False, max_offset: int | None = None, motion_input: bool = False,
                 integrate: bool = False, readout_temperature: float = 0.5, soft_bins: bool = False,
                 corr_radius: int = 0, corr_dim: int = 16):
        super().__init__()
        if img_size % patch:
            raise VideosslError(f"img_size {img_size} is not divisible by the patch size {patch}")
        self.img_size, self.patch, self.width, self.depth = int(img_size), int(patch), int(width), int(depth)
        self.isolate_queries, self.window, self.certainty_px = bool(isolate_queries), int(window), float(certainty_px)
        self.grid = self.img_size // self.patch
        self.relative = bool(relative)
        if max_offset is not None and not self.relative:
            raise VideosslError("max_offset is the range of query-relative bins: set relative: true, or drop max_offset")
        self.max_offset = (self.img_size // 2 if max_offset is None else int(max_offset)) if self.relative else 0
        if self.relative and self.max_offset < 1:
            raise VideosslError(f"max_offset must be >= 1 px, got {max_offset}")
        # the read-out's softmax temperature (the paper's 0.5); soft_bins: the loss's bin targets split between the
        # two bins around the target (so the expectation is unbiased for sub-bin targets) instead of the nearest bin
        self.readout_temperature, self.soft_bins = float(readout_temperature), bool(soft_bins)
        # integrate: the relative bins are the point's displacement since the previous frame, summed after the query
        self.integrate = bool(integrate)
        if self.integrate and not self.relative:
            raise VideosslError("integrate reads per-frame displacements out of query-relative bins: set relative: true")
        # one bin per pixel: of the frame (absolute), or of the offsets -max_offset … +max_offset (relative)
        self.num_bins = 2 * self.max_offset + 1 if self.relative else self.img_size
        # motion_input: each patch also sees the frame minus the previous one (zero on frame 0)
        self.motion_input = bool(motion_input)
        self.patch_embed = nn.Conv2d(6 if self.motion_input else 3, width, patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(self.grid * self.grid, width) * 0.02)
        self.query_token = nn.Parameter(torch.randn(width) * 0.02)
        self.mask_token = nn.Parameter(torch.randn(width) * 0.02)
        self.unknown_token = nn.Parameter(torch.randn(width) * 0.02)
        self.temporal = nn.ModuleList([TemporalBlock(width, heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.spatial = nn.ModuleList([SpatialBlock(width, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.coord_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 2 * self.num_bins))
        self.vis_head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))
        # corr_radius: a local correlation of the query's template around its previous position, per frame
        self.corr_radius, self.corr_dim = int(corr_radius), int(corr_dim)
        if self.corr_radius < 0 or self.corr_dim < 1:
            raise VideosslError(f"corr_radius {corr_radius} must be >= 0 (0 = off) and corr_dim {corr_dim} >= 1")
        if self.corr_radius and not self.integrate:
            raise VideosslError("corr_radius centres the window on the previous frame's track, which the integrating "
                                "head reads a displacement from: set integrate: true (and relative: true)")
        if self.corr_radius:
            self.corr_feat = nn.Conv2d(3, self.corr_dim, 3, padding=1)
            k = 2 * self.corr_radius + 1
            self.corr_proj = nn.Linear(k * k, width)
            r = torch.arange(-self.corr_radius, self.corr_radius + 1, dtype=torch.float32)
            dy, dx = torch.meshgrid(r, r, indexing="ij")
            self.register_buffer("corr_offsets", torch.stack([dx.flatten(), dy.flatten()], -1), persistent=False)
        self.feature_dim = width

    # -- local correlation (corr_radius) ----------------------------------------------------------
    def _sample(self, feats: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Bilinear samples of feats (B, C, H, W) at points xy (B, N, 2) px (pixel centres at integers; zeros
        outside the frame) → (B, N, C)."""
        H, W = feats.shape[-2:]
        g = pixels_to_normalised(xy.transpose(1, 2)[..., None], H, W, align_corners=True)  # (B, N, 1, 2)
        out = F.grid_sample(feats, g.to(feats.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        return out[..., 0].transpose(1, 2)  # (B, C, N, 1) → (B, N, C)

    def local_correlation(self, feats: torch.Tensor, template: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Dot products / sqrt(C) of each query's template (B, Q, C) with feats (B, C, H, W) on the (2r+1)² grid
        around ``centre`` (B, Q, 2) px, x fastest: (B, Q, (2r+1)²); entry k is offset ``corr_offsets[k]``."""
        B, Q = centre.shape[:2]
        off = self.corr_offsets.to(feats.dtype)
        win = self._sample(feats, (centre[:, :, None] + off).reshape(B, Q * off.shape[0], 2))
        win = win.view(B, Q, off.shape[0], self.corr_dim)
        return (win * template[:, :, None]).sum(-1) / math.sqrt(self.corr_dim)

    def _corr_tokens(self, frame: torch.Tensor, queries: torch.Tensor, t: int, state: dict) -> torch.Tensor:
        """The correlation tokens (B, 1, Q, D) of frame ``t`` (B, 3, H, W); updates ``state``'s template (at the
        query frame). Zero up to and including the query frame."""
        feats = self.corr_feat(frame)  # (B, C, H, W)
        tq = queries[..., 0].round()  # (B, Q)
        qxy = queries[..., [2, 1]].to(feats.dtype)
        at = (tq == t)[..., None]
        template = state.get("template")
        template = torch.zeros(*qxy.shape[:2], self.corr_dim, dtype=feats.dtype, device=feats.device) \
            if template is None else template
        if bool(at.any()):  # some query's frame: take its template
            template = torch.where(at, self._sample(feats, qxy), template)
        state["template"] = template
        # the previous frame's track; up to the query frame that is the query point (integrate), and frame 0 has none
        centre = qxy if state.get("centre") is None else state["centre"]
        corr = self.local_correlation(feats, template, centre)
        after = (tq < t)[..., None].to(corr.dtype)
        return (self.corr_proj(corr) * after)[:, None]

    # -- tokens ---------------------------------------------------------------------------------
    def _check(self, video_hw: tuple[int, int]) -> None:
        if tuple(video_hw) != (self.img_size, self.img_size):
            raise VideosslError(f"TAPNext is built for {self.img_size}x{self.img_size} frames, got {video_hw[1]}x{video_hw[0]}")

    def _query_tokens(self, queries: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, Q, 3) queries, frame indices t (T,) → (B, T, Q, D) query-side input tokens."""
        tq = queries[..., 0].round()[:, None, :]  # (B, 1, Q)
        tt = t.to(queries.dtype)[None, :, None]
        emb = self.query_token + sincos_2d(queries[..., [2, 1]], self.width, float(self.img_size))  # (B, Q, D)
        at = (tt == tq)[..., None]
        later = (tt > tq)[..., None]
        out = torch.where(at, emb[:, None], torch.where(later, self.mask_token, self.unknown_token))
        return out.to(self.pos_embed.dtype)

    def _mask(self, num_q: int, device) -> torch.Tensor | None:
        if not self.isolate_queries:
            return None
        P = self.grid * self.grid
        L = P + num_q
        m = torch.zeros(L, L, dtype=torch.bool, device=device)
        m[:, :P] = True  # everyone sees the patches
        m[:P, P:] = False  # patches do not see queries
        idx = torch.arange(P, L, device=device)
        m[idx, idx] = True  # a query sees itself
        return m

    # -- the network ----------------------------------------------------------------------------
    def _embed_input(self, frames: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """frames (B, T, 3, H, W) → the patch embedding's input: the frames, and with ``motion_input`` each frame's
        difference to the one before (``prev`` (B, 3, H, W), the frame before this chunk, or None: zero difference)."""
        if not self.motion_input:
            return frames
        before = torch.cat([(frames[:, :1] if prev is None else prev[:, None]), frames[:, :-1]], 1)
        return torch.cat([frames, frames - before], 2)

    def _run(self, frames: torch.Tensor, queries: torch.Tensor, t0: int, states: list | None,
             prev: torch.Tensor | None = None, cum: torch.Tensor | None = None, extra: torch.Tensor | None = None):
        """frames (B, T, 3, H, W), frame indices t0 … t0+T−1, ``prev`` the frame before them (or None), ``cum`` the
        displacement summed up to frame t0 − 1 (``integrate``; None = zero) → (output, new states, new ``cum``)."""
        B, T = frames.shape[:2]
        Q = queries.shape[1]
        P = self.grid * self.grid
        x = self.patch_embed(self._embed_input(frames, prev).flatten(0, 1))
        x = x.flatten(2).transpose(1, 2) + self.pos_embed  # (B·T, P, D)
        x = x.view(B, T, P, self.width)
        qt = self._query_tokens(queries, torch.arange(t0, t0 + T, device=frames.device))
        if extra is not None:  # the correlation tokens (corr_radius)
            qt = qt + extra
        x = torch.cat([x, qt], 2)  # (B, T, P+Q, D)
        mask = self._mask(Q, frames.device)
        new_states = []
        for i, (tb, sb) in enumerate(zip(self.temporal, self.spatial, strict=True)):
            # (B, T, P+Q, D) throughout: the temporal block runs over dim 1, the spatial block over each frame
            x, st = tb(x, None if states is None else states[i])
            new_states.append(st)
            x = sb(x.reshape(B * T, P + Q, self.width), mask).view(B, T, P + Q, self.width)
        z = self.norm(x[:, :, P:])  # (B, T, Q, D)
        logits = self.coord_head(z)
        lx, ly = logits[..., : self.num_bins], logits[..., self.num_bins:]
        ex, px = readout(lx, self.window, self.readout_temperature)
        ey, py = readout(ly, self.window, self.readout_temperature)
        idx = torch.arange(self.num_bins, device=z.device, dtype=px.dtype)
        near_x = ((idx - ex[..., None]).abs() <= self.certainty_px).to(px.dtype)
        near_y = ((idx - ey[..., None]).abs() <= self.certainty_px).to(py.dtype)
        cert = (px * near_x).sum(-1) * (py * near_y).sum(-1)
        tracks = torch.stack([ex, ey], -1)
        origin: torch.Tensor | float = 0.0
        increments = None
        if self.integrate:  # bin i is the displacement i − max_offset since the previous frame, summed after the query
            increments = tracks - self.max_offset
            origin = -float(self.max_offset)
            tt = torch.arange(t0, t0 + T, device=z.device, dtype=queries.dtype)[None, :, None]
            after = (tt > queries[..., 0].round()[:, None, :])[..., None].to(tracks.dtype)  # (B, T, Q, 1)
            steps = (increments * after).cumsum(1)
            if cum is not None:
                steps = steps + cum[:, None]
            cum = steps[:, -1]
            tracks = queries[:, None, :, [2, 1]].to(tracks.dtype) + steps
        elif self.relative:  # bin i of an axis is the offset i − max_offset from the query point
            origin = (queries[:, None, :, [2, 1]] - self.max_offset).to(tracks.dtype)  # (B, 1, Q, 2)
            tracks = tracks + origin
        out = TAPNextOutput(tracks, self.vis_head(z)[..., 0], cert, lx, ly, origin, increments, self.soft_bins)
        return out, new_states, cum

    def forward(self, video: torch.Tensor, queries: torch.Tensor) -> TAPNextOutput:
        if video.ndim != 5 or video.shape[1] != 3:
            raise VideosslError(f"TAPNext expects a video (B, 3, T, H, W), got {tuple(video.shape)}")
        self._check(video.shape[-2:])
        if self.corr_radius:  # the window follows the previous frame's output: frame by frame
            state, outs = self.init_state(queries.to(video.dtype)), []
            for t in range(video.shape[2]):
                o, state = self.step(video[:, :, t], state)
                outs.append(o)
            return _cat_outputs(outs)
        out, _, _ = self._run(video.transpose(1, 2), queries.to(video.dtype), 0, None)
        return out

    def init_state(self, queries: torch.Tensor) -> dict:
        """The streaming state before frame 0: the queries, the step count and no layer state yet."""
        return {"queries": queries, "t": 0, "layers": None, "prev": None, "cum": None, "template": None,
                "centre": None}

    def step(self, frame: torch.Tensor, state: dict) -> tuple[TAPNextOutput, dict]:
        """One frame (B, 3, H, W) → outputs for that frame (T = 1) and the next state."""
        self._check(frame.shape[-2:])
        queries, t = state["queries"].to(frame.dtype), int(state["t"])
        new = {"queries": state["queries"], "t": t + 1, "template": state.get("template"),
               "centre": state.get("centre")}
        extra = self._corr_tokens(frame, queries, t, new) if self.corr_radius else None
        out, layers, cum = self._run(frame[:, None], queries, t, state["layers"], state.get("prev"), state.get("cum"),
                                     extra)
        new.update(layers=layers, prev=frame if self.motion_input else None, cum=cum)
        if self.corr_radius:
            new["centre"] = out.tracks[:, 0].detach()
        return out, new


def _cat_outputs(outs: list[TAPNextOutput]) -> TAPNextOutput:
    """Per-frame outputs (T = 1 each) joined along time."""
    def cat(name):
        return torch.cat([getattr(o, name) for o in outs], 1)
    first = outs[0]
    return TAPNextOutput(cat("tracks"), cat("visible_logit"), cat("certainty"), cat("logits_x"), cat("logits_y"),
                         first.bin_origin, None if first.increments is None else cat("increments"), first.soft_bins)


def _bin_ce(logits: torch.Tensor, pos: torch.Tensor, nb: int, soft: bool) -> torch.Tensor:
    """Cross-entropy of (..., nb) bin logits against positions ``pos`` (...) in bins, clamped to the range: the nearest
    bin, or with ``soft`` the two bins around ``pos`` weighted by proximity (their mean is ``pos``)."""
    pos = pos.clamp(0, nb - 1)
    if not soft:
        return F.cross_entropy(logits.flatten(0, -2), pos.round().long().flatten(), reduction="none").view_as(pos)
    lo = pos.floor().clamp(max=nb - 2)
    w = (pos - lo)[..., None]
    logp = logits.log_softmax(-1)
    lo_i = lo.long()[..., None]
    return -((1 - w) * logp.gather(-1, lo_i) + w * logp.gather(-1, lo_i + 1))[..., 0]


def tapnext_loss(out: TAPNextOutput, target: torch.Tensor, visible: torch.Tensor, scored: torch.Tensor | None = None,
                 huber_weight: float = 0.1, ce_weight: float = 1.0, vis_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """arXiv:2504.05579 §3.4: 0.1·Huber(δ = 1 px) + 1.0·bin cross-entropy on visible points, + BCE of visibility.
    ``target`` (B, T, Q, 2) px, ``visible`` (B, T, Q) bool; ``scored`` (B, T, Q) bool limits every term. The bin
    targets are the target's bins in the output's own bins (``target − out.bin_origin``: the pixel for absolute
    bins, the offset from the query for relative ones), clamped to the range."""
    scored = torch.ones_like(visible) if scored is None else scored
    vis = visible & scored
    nb = out.logits_x.shape[-1]
    n_vis = vis.sum().clamp_min(1)
    hub = F.huber_loss(out.tracks, target, delta=1.0, reduction="none").sum(-1)
    ce_on = vis
    if out.increments is not None:  # the bins are displacements since the previous frame: targets where both are visible
        step = torch.cat([torch.zeros_like(target[:, :1]), target[:, 1:] - target[:, :-1]], 1)
        pos = step - out.bin_origin
        ce_on = vis & torch.cat([torch.zeros_like(vis[:, :1]), vis[:, :-1]], 1)
    else:
        pos = target - out.bin_origin
    ce = _bin_ce(out.logits_x, pos[..., 0], nb, out.soft_bins) + _bin_ce(out.logits_y, pos[..., 1], nb, out.soft_bins)
    bce = F.binary_cross_entropy_with_logits(out.visible_logit, visible.float(), reduction="none")
    terms = {"huber": (hub * vis).sum() / n_vis, "ce": (ce * ce_on).sum() / ce_on.sum().clamp_min(1),
             "visibility": (bce * scored).sum() / scored.sum().clamp_min(1)}
    terms["loss"] = huber_weight * terms["huber"] + ce_weight * terms["ce"] + vis_weight * terms["visibility"]
    return terms
