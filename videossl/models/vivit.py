"""Joint space-time ViT (ViViT) with 3D tubelets and random token *dropping* (long-video recipe).

``(B, C, T, H, W) → (B, feature_dim)``. A clip is cut into tubelets of ``tubelet = (t, p, p)``
(default 2 × 16 × 16) by a 3D convolution; every token gets a *spatial* position embedding (one per
grid cell) plus a *temporal* one (one per tubelet step); all tokens go through the same timm
``Block`` stack (joint attention over space and time, fused SDPA); the video vector is the mean of
the output tokens after the final norm. See Papalampidi et al., arXiv:2312.07395

Masking (training only; evaluation always sees every token)
-----------------------------------------------------------
* ``mask_mode="random"``: every sample draws its own random subset of the N tokens and keeps
  exactly ``round((1 - r) * N)`` of them (the same count for the whole batch, so the tensor stays
  rectangular). Dropped tokens are *removed* from the sequence: the transformer's cost falls with
  the kept count (no mask tokens, no zero-filling). Position embeddings are added before the drop,
  so kept tokens carry their own positions.
* ``mask_mode="tube"`` (ablation): one random spatial mask per sample, repeated over time; keeps
  ``round((1 - r) * S)`` of the S grid cells in every time step.
* ``valid`` (B, T) bool (from the long-video sampler): tubelets made only of padding frames are
  dropped first when masking, never pooled, and hidden from attention by a key-padding mask.

Position tables and longer clips
--------------------------------
The tables are sized for ``num_frames`` and ``img_size``. A shorter clip uses the first entries of
the temporal table (positions are time steps at the sampler's fps); a longer one linearly
interpolates the temporal table to the clip's length when ``interpolate_pos=True`` (the default;
a model trained at 16 frames runs at 128), and is refused with a :class:`VideosslError` otherwise.
A different frame size bicubically interpolates the spatial table. :meth:`ViViT.load_pretrained`
also resizes tables stored at another size (stage 1 → stage 2 with a longer table).

Layout options (for converted encoders)
---------------------------------------
The defaults are the model above (today's weights and state-dict keys, unchanged). The options
cover the layouts of published ViTs so that their weights load *exactly* (``videossl convert``):

* ``cls_token``: a learned class token in front of the patch tokens (ViT, arXiv:2010.11929 §3.1;
  ViViT model 1, arXiv:2103.15691 §3.3). It is never dropped by masking and, with a learned table,
  has its own position entry ``pos_cls``.
* ``pos_embed``: ``separate`` (default: spatial + temporal tables), ``joint`` (one learned table
  over all T'·H'·W' tokens, ViViT §3.3), ``sincos`` (fixed 1-D sinusoids of the time-major token
  index, not stored; VideoMAE, arXiv:2203.12602 §3.3 / Vaswani et al. §3.5) or ``rope3d`` (no
  additive table: rotary embeddings of the (t, h, w) token coordinates inside attention, the head
  dimension split into three equal parts; V-JEPA 2, arXiv:2506.09985 §2.1). RoPE positions are
  those of the kept tokens.
* ``ln_pre``: a LayerNorm on the embedded tokens before the blocks (CLIP, arXiv:2103.00020).
* ``qkv_bias``, ``norm_eps``, ``act`` (``gelu`` | ``gelu_tanh`` | ``quick_gelu``), ``init_values``
  (LayerScale, arXiv:2103.17239): the block options of the references.
* ``pool``: ``mean`` (over patch tokens) or ``cls``; ``final_norm``: ``tokens`` (before pooling,
  default), ``pooled`` (after pooling, an ``fc_norm``) or ``none``; ``proj_dim``: a bias-free linear
  projection of the pooled vector (CLIP's image projection), which is then ``feature_dim``.

Memory options: ``grad_checkpointing`` (activation checkpointing per block) and
``trainable_blocks=k`` (only the last k blocks and the final norm get gradients; the frozen
prefix then runs without autograd, which is where the memory saving comes from).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from videossl.core.checkpoint import LoadReport, load_state, read_state_dict
from videossl.errors import VideosslError
from videossl.models.motion import causal_differences

# name -> (embed_dim, depth, num_heads), as timm's ViT-Ti/S/B/L
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "s": (384, 12, 6),
    "b": (768, 12, 12),
    "l": (1024, 24, 16),
}
MASK_MODES = ("random", "tube")
POS_EMBEDS = ("separate", "joint", "sincos", "rope3d")
POOLS = ("mean", "cls")
FINAL_NORMS = ("tokens", "pooled", "none")

__all__ = [
    "ACTIVATIONS",
    "FINAL_NORMS",
    "MASK_MODES",
    "POOLS",
    "POS_EMBEDS",
    "SIZES",
    "ViViT",
    "inflate_patch_weight",
    "mirror_keep_indices",
    "permute_keep_indices",
    "num_kept",
    "random_keep_indices",
    "rope3d_rotate",
    "sincos_table",
    "resize_temporal_table",
    "resize_spatial_table",
    "tube_keep_indices",
    "vivit",
]


# ----------------------------------------------------------------------------- pure helpers
class Kept(NamedTuple):
    """What one forward pass kept: ``indices`` (B, K) of the kept tokens (None: all kept), the token
    ``grid`` (T', H', W') and ``num_tokens``, the sequence length the transformer saw."""

    indices: torch.Tensor | None
    grid: tuple[int, int, int]
    num_tokens: int


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """Tokens kept by random masking: ``round((1 - r) · N)``, at least 1."""
    if not 0.0 <= mask_ratio < 1.0:
        raise VideosslError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return max(1, int(round((1.0 - mask_ratio) * num_tokens)))


def random_keep_indices(batch: int, num_tokens: int, mask_ratio: float, *, device=None,
                        generator: torch.Generator | None = None, token_valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) sorted indices of the tokens each sample keeps; independent per sample.

    ``token_valid`` (B, N) bool: invalid tokens are dropped before any valid one.
    """
    keep = num_kept(num_tokens, mask_ratio)
    noise = torch.rand(batch, num_tokens, device=device, generator=generator)
    if token_valid is not None:
        noise = noise + (~token_valid.to(noise.device)).float() * 2.0
    idx = noise.argsort(dim=1)[:, :keep]
    return idx.sort(dim=1).values


def tube_keep_indices(batch: int, grid_t: int, grid_s: int, mask_ratio: float, *, device=None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, K·grid_t) indices for tube masking: the same ``K = round((1-r)·S)`` cells at every step."""
    keep = num_kept(grid_s, mask_ratio)
    cells = torch.rand(batch, grid_s, device=device, generator=generator).argsort(dim=1)[:, :keep].sort(dim=1).values
    steps = torch.arange(grid_t, device=cells.device) * grid_s
    return (steps[None, :, None] + cells[:, None, :]).reshape(batch, grid_t * keep)


def mirror_keep_indices(keep: torch.Tensor, grid_t: int, grid_s: int) -> torch.Tensor:
    """Keep indices of the *time-reversed* clip that keep the same tubelets: token ``t·S + s`` →
    ``(T'−1−t)·S + s`` (sorted). The reversed clip's tubelet ``T'−1−t`` holds the frames of tubelet
    ``t`` in reverse order, so both clips then keep exactly the same pixels."""
    reverse = torch.arange(grid_t - 1, -1, -1, device=keep.device).expand(keep.shape[0], grid_t)
    return permute_keep_indices(keep, reverse, grid_s)


def permute_keep_indices(keep: torch.Tensor, src: torch.Tensor, grid_s: int) -> torch.Tensor:
    """Keep indices of a clip whose tubelet step ``j`` is the original clip's step ``src[:, j]`` (``src`` (B, T')
    a permutation per sample) that keep the same tubelets: token ``t·S + s`` → ``inv[t]·S + s`` (sorted), with
    ``inv`` the inverse permutation; both clips then keep exactly the same pixels."""
    t, s = keep // grid_s, keep % grid_s
    if int(t.max()) >= src.shape[1]:
        raise VideosslError(f"keep indices beyond a {src.shape[1]} x {grid_s} token grid")
    inv = src.argsort(dim=1)
    return (inv.gather(1, t) * grid_s + s).sort(dim=1).values


def resize_temporal_table(table: torch.Tensor, steps: int) -> torch.Tensor:
    """(1, T0, D) → (1, steps, D) by linear interpolation; unchanged when ``steps == T0``."""
    if table.shape[1] == steps:
        return table
    out = F.interpolate(table.transpose(1, 2), size=steps, mode="linear", align_corners=False)
    return out.transpose(1, 2)


def resize_spatial_table(table: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """(1, h·w, D) → (1, h'·w', D) by bicubic interpolation; unchanged when the grid is the same."""
    if tuple(grid) == tuple(new_grid):
        return table
    d = table.shape[-1]
    t = table.reshape(1, grid[0], grid[1], d).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=new_grid, mode="bicubic", align_corners=False)
    return t.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d)


INFLATIONS = ("mean", "center")


def inflate_patch_weight(weight2d: torch.Tensor, frames: int, mode: str = "mean") -> torch.Tensor:
    """2D patch kernel (D, C, p, p) → 3D tubelet kernel (D, C, t, p, p).

    ``mean``: repeated over time and divided by t (I3D inflation, arXiv:1705.07750 §2.3);
    ``center``: the 2D kernel on the central frame ``t // 2``, zeros elsewhere (ViViT's "central frame
    initialisation", arXiv:2103.15691 §3.4). Either way a static clip gives exactly the 2D patch embedding.
    """
    if mode == "mean":
        return weight2d.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    if mode == "center":
        out = weight2d.new_zeros(*weight2d.shape[:2], frames, *weight2d.shape[2:])
        out[:, :, frames // 2] = weight2d
        return out
    raise VideosslError(f"unknown inflation {mode!r}: choose one of {', '.join(INFLATIONS)}")


def sincos_table(num_tokens: int, dim: int, device=None) -> torch.Tensor:
    """(1, N, D) fixed sinusoids of the token index (Vaswani et al., arXiv:1706.03762 §3.5): entry
    (i, j) is ``sin(i / 10000^(2⌊j/2⌋/D))`` for even j and ``cos(...)`` for odd j (interleaved)."""
    pos = torch.arange(num_tokens, dtype=torch.float64, device=device)[:, None]
    j = torch.arange(dim, device=device)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def _rope_rotate(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of one coordinate on the last dim (size d, even) of x (B, H, N, d); pos (B, N).

    Frequencies ``ω_k = 10000^(−k/(d/2))``, k < d/2, laid out twice (``[ω, ω]``); the rotation partner
    of the pair (x_2i, x_2i+1) is (−x_2i+1, x_2i). This is the layout of the V-JEPA 2 encoder
    (arXiv:2506.09985), kept as is so that its weights give its outputs."""
    d = x.shape[-1]
    omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=x.dtype, device=x.device) / (d / 2.0))
    freq = pos.to(x.dtype)[:, None, :, None] * omega  # (B, 1, N, d/2)
    sin, cos = freq.sin().repeat(1, 1, 1, 2), freq.cos().repeat(1, 1, 1, 2)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    rot = torch.stack((-x2, x1), dim=-1).flatten(-2)
    return x * cos + rot * sin


def rope3d_rotate(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """3D RoPE of queries / keys x (B, H, N, d): the first three equal even chunks of d (each
    ``2⌊d/6⌋``) rotate by the token's t, h and w coordinates (``coords`` (B, N, 3)); the rest is left as is."""
    c = 2 * ((x.shape[-1] // 3) // 2)
    parts = [_rope_rotate(x[..., i * c:(i + 1) * c], coords[..., i]) for i in range(3)]
    if 3 * c < x.shape[-1]:
        parts.append(x[..., 3 * c:])
    return torch.cat(parts, dim=-1)


def _quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class QuickGELU(nn.Module):
    """``x · σ(1.702 x)`` (the activation of the original CLIP models, arXiv:2103.00020)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _quick_gelu(x)


ACTIVATIONS: dict[str, Any] = {
    "gelu": nn.GELU,
    "gelu_tanh": partial(nn.GELU, approximate="tanh"),
    "quick_gelu": QuickGELU,
}


class RopeBlock(Block):
    """timm's ``Block`` (same weights, same keys) whose attention can also rotate queries and keys
    by 3D RoPE (``coords`` (B, N, 3) token coordinates, see :func:`rope3d_rotate`)."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                coords: torch.Tensor | None = None) -> torch.Tensor:
        if coords is None:
            return super().forward(x, attn_mask=attn_mask)
        x = x + self.drop_path1(self.ls1(self._rope_attention(self.norm1(x), attn_mask, coords)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def _rope_attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None, coords: torch.Tensor) -> torch.Tensor:
        a = self.attn
        b, n, _ = x.shape
        q, k, v = a.qkv(x).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        q, k = rope3d_rotate(q, coords), rope3d_rotate(k, coords)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                             dropout_p=a.attn_drop.p if self.training else 0.0)
        return a.proj_drop(a.proj(a.norm(out.transpose(1, 2).reshape(b, n, -1))))


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ----------------------------------------------------------------------------------- model
class ViViT(nn.Module):
    """Joint space-time ViT over 3D tubelets.

    Args:
        size: ``tiny`` | ``s`` | ``b`` | ``l`` (timm ViT-Ti/S/B/L widths); ``embed_dim``, ``depth``,
            ``num_heads`` override it (e.g. a 2-block model for tests).
        img_size: frame size the spatial table is built for.
        num_frames: clip length the temporal table is built for (``num_frames / tubelet[0]`` steps).
        tubelet: ``(t, p, p)``; frame sizes must be divisible by p and clip lengths by t.
        mask_ratio: fraction of tokens dropped at training time (``forward(..., mask_ratio=)`` overrides).
        mask_mode: ``random`` (default) or ``tube`` (ablation).
        interpolate_pos: allow clips longer than ``num_frames`` (interpolated temporal table).
        grad_checkpointing: activation checkpointing of every trainable block while training.
        trainable_blocks: ``None`` = all; ``k`` = only the last k blocks + final norm train
            (plus the temporal table when ``train_temporal_pos``, which makes backprop run through
            the whole stack again).
        normalize_input: subtract 0.45 and divide by 0.225 per channel first (inputs in [0, 1]):
            removes the large, sample-independent DC part of the tubelet embeddings (helps from-scratch training).
        motion_input: the tubelet embedding also sees ``motion_gain·(x_t − x_{t−1})`` (zero for the first
            frame), concatenated on the channel axis (our addition, as the flow autoencoder's
            ``motion_input``; not in the paper).
        image_input: also accept still images, (B, C, H, W) or one-frame clips (B, C, 1, H, W), through
            their own 2D patch convolution ``image_embed`` (the paper keeps the image ViT's 2D patch conv
            for images and a separate 3D conv for video, no weight sharing): spatial positions plus the
            first temporal entry, the same blocks and pooling.
        init_from: path of weights to start from (a run's ``encoder.pt`` or a checkpoint), tables resized.
    """

    def __init__(
        self,
        size: str = "s",
        img_size: int = 224,
        num_frames: int = 16,
        tubelet: tuple[int, int, int] | list[int] = (2, 16, 16),
        in_chans: int = 3,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        mask_ratio: float = 0.0,
        mask_mode: str = "random",
        interpolate_pos: bool = True,
        grad_checkpointing: bool = False,
        trainable_blocks: int | None = None,
        train_temporal_pos: bool = False,
        normalize_input: bool = False,
        motion_input: bool = False,
        motion_gain: float = 8.0,
        image_input: bool = False,
        cls_token: bool = False,
        pos_embed: str = "separate",
        ln_pre: bool = False,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        act: str = "gelu",
        init_values: float | None = None,
        pool: str = "mean",
        final_norm: str = "tokens",
        proj_dim: int | None = None,
        init_from: str | None = None,
    ) -> None:
        super().__init__()

        if size not in SIZES:
            raise VideosslError(f"unknown ViViT size {size!r}: choose one of {', '.join(SIZES)}")
        d0, l0, h0 = SIZES[size]
        self.embed_dim = int(embed_dim or d0)
        self.depth = int(depth or l0)
        heads = int(num_heads or h0)
        if self.embed_dim % heads:
            raise VideosslError(f"embed_dim {self.embed_dim} is not divisible by num_heads {heads}")
        tubelet = tuple(int(v) for v in tubelet)
        if len(tubelet) != 3 or min(tubelet) < 1:
            raise VideosslError(f"tubelet must be (t, p, p) with positive ints, got {tubelet}")
        self.tubelet = tubelet
        self.img_size = _pair(img_size)
        if self.img_size[0] % tubelet[1] or self.img_size[1] % tubelet[2]:
            raise VideosslError(f"img_size {self.img_size} is not divisible by the patch size {tubelet[1:]}")
        if num_frames % tubelet[0]:
            raise VideosslError(f"num_frames {num_frames} is not divisible by the tubelet length {tubelet[0]}")
        if mask_mode not in MASK_MODES:
            raise VideosslError(f"unknown mask_mode {mask_mode!r}: choose one of {', '.join(MASK_MODES)}")
        num_kept(2, mask_ratio)  # validates the ratio
        for name, value, allowed in (("pos_embed", pos_embed, POS_EMBEDS), ("pool", pool, POOLS),
                                     ("final_norm", final_norm, FINAL_NORMS), ("act", act, tuple(ACTIVATIONS))):
            if value not in allowed:
                raise VideosslError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
        if pool == "cls" and not cls_token:
            raise VideosslError("pool='cls' needs cls_token=True")
        if pos_embed == "rope3d" and cls_token:
            raise VideosslError("pos_embed='rope3d' has no position for a class token: use cls_token=False")
        if pos_embed == "rope3d" and (self.embed_dim // heads) < 6:
            raise VideosslError(f"pos_embed='rope3d' needs a head dimension of at least 6, got {self.embed_dim // heads}")
        self.pos_embed, self.pool, self.final_norm = pos_embed, pool, final_norm
        self.has_cls = bool(cls_token)
        self.num_frames = int(num_frames)
        self.mask_ratio = float(mask_ratio)
        self.mask_mode = mask_mode
        self.interpolate_pos = bool(interpolate_pos)
        self.grad_checkpointing = bool(grad_checkpointing)
        self.grid = (self.img_size[0] // tubelet[1], self.img_size[1] // tubelet[2])
        self.grid_t = self.num_frames // tubelet[0]
        self.feature_dim = int(proj_dim) if proj_dim else self.embed_dim
        self.normalize_input = bool(normalize_input)

        self.in_chans = int(in_chans)
        self.motion_input, self.motion_gain = bool(motion_input), float(motion_gain)
        in_chans = self.in_chans * (2 if self.motion_input else 1)
        self.patch_embed = nn.Conv3d(in_chans, self.embed_dim, kernel_size=tubelet, stride=tubelet)
        self.image_input = bool(image_input)
        self.image_embed = (nn.Conv2d(self.in_chans, self.embed_dim, kernel_size=tubelet[1:], stride=tubelet[1:])
                            if self.image_input else None)
        d, cells = self.embed_dim, self.grid[0] * self.grid[1]
        if self.has_cls:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            if pos_embed in ("separate", "joint"):
                self.pos_cls = nn.Parameter(torch.zeros(1, 1, d))
        if pos_embed == "separate":
            self.pos_spatial = nn.Parameter(torch.zeros(1, cells, d))
            self.pos_temporal = nn.Parameter(torch.zeros(1, self.grid_t, d))
        elif pos_embed == "joint":
            self.pos_joint = nn.Parameter(torch.zeros(1, self.grid_t * cells, d))
        self.ln_pre = nn.LayerNorm(d, eps=norm_eps) if ln_pre else None
        dpr = [float(x) for x in torch.linspace(0, drop_path, self.depth, device="cpu")]
        self.blocks = nn.ModuleList(
            RopeBlock(d, heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i], init_values=init_values,
                  act_layer=ACTIVATIONS[act], norm_layer=partial(nn.LayerNorm, eps=norm_eps))
            for i in range(self.depth)
        )
        self.norm = nn.LayerNorm(d, eps=norm_eps) if final_norm != "none" else None
        self.proj = nn.Linear(d, int(proj_dim), bias=False) if proj_dim else None
        self._init_weights()
        if init_from:
            self.load_pretrained(init_from)
        self.trainable_blocks = trainable_blocks
        self.train_temporal_pos = bool(train_temporal_pos)
        if trainable_blocks is not None:
            self.set_trainable_blocks(int(trainable_blocks), train_temporal_pos)

    # -- init / freezing ---------------------------------------------------------------------
    def _position_params(self) -> list[nn.Parameter]:
        names = ("pos_cls", "pos_spatial", "pos_temporal", "pos_joint")
        return [getattr(self, n) for n in names if isinstance(getattr(self, n, None), nn.Parameter)]

    def _init_weights(self) -> None:
        for p in self._position_params():
            nn.init.trunc_normal_(p, std=0.02)
        if self.has_cls:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.image_embed is not None:
            nn.init.xavier_uniform_(self.image_embed.weight.view(self.embed_dim, -1))
            nn.init.zeros_(self.image_embed.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_trainable_blocks(self, k: int, train_temporal_pos: bool = False) -> None:
        """Freeze everything but the last ``k`` blocks and the final norm (and the temporal table)."""
        if not 0 <= k <= self.depth:
            raise VideosslError(f"trainable_blocks must be in 0..{self.depth}, got {k}")
        for p in self.parameters():
            p.requires_grad_(False)
        for blk in self.blocks[self.depth - k:]:
            for p in blk.parameters():
                p.requires_grad_(True)
        for mod in (self.norm, self.proj):
            for p in mod.parameters() if mod is not None else ():
                p.requires_grad_(True)
        if train_temporal_pos:
            for p in (getattr(self, "pos_temporal", None), getattr(self, "pos_joint", None)):
                if p is not None:
                    p.requires_grad_(True)

    def inflate_from_2d(self, weight2d: torch.Tensor, bias: torch.Tensor | None = None, mode: str = "mean") -> None:
        """Initialise the tubelet conv from a 2D patch conv (see :func:`inflate_patch_weight`)."""
        with torch.no_grad():
            self.patch_embed.weight.copy_(inflate_patch_weight(weight2d, self.tubelet[0], mode))
            if bias is not None:
                self.patch_embed.bias.copy_(bias)

    # -- position tables -----------------------------------------------------------------------
    def temporal_table(self, steps: int) -> torch.Tensor:
        if steps <= self.grid_t:
            return self.pos_temporal[:, :steps]
        if not self.interpolate_pos:
            raise VideosslError(
                f"a clip of {steps * self.tubelet[0]} frames is longer than the temporal position table "
                f"({self.num_frames} frames) and interpolate_pos is off: build the model with num_frames >= "
                f"{steps * self.tubelet[0]} or interpolate_pos=True"
            )
        return resize_temporal_table(self.pos_temporal, steps)

    def spatial_table(self, grid: tuple[int, int]) -> torch.Tensor:
        return resize_spatial_table(self.pos_spatial, self.grid, grid)

    def _check_steps(self, steps: int) -> None:
        if steps > self.grid_t and not self.interpolate_pos:
            raise VideosslError(
                f"a clip of {steps * self.tubelet[0]} frames is longer than the position table "
                f"({self.num_frames} frames) and interpolate_pos is off: build the model with num_frames >= "
                f"{steps * self.tubelet[0]} or interpolate_pos=True"
            )

    def joint_table(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The joint table for a (T', H', W') grid: spatially resized per step, first T' steps (or interpolated)."""
        gt, gh, gw = grid
        self._check_steps(gt)
        d = self.embed_dim
        table = self.pos_joint.reshape(self.grid_t, self.grid[0] * self.grid[1], d)
        table = torch.cat([resize_spatial_table(step[None], self.grid, (gh, gw)) for step in table], 0)  # (T0, S, D)
        if gt <= self.grid_t:
            table = table[:gt]
        else:
            table = resize_temporal_table(table.permute(1, 0, 2), gt).permute(1, 0, 2)
        return table.reshape(1, gt * gh * gw, d)

    def position_table(self, grid: tuple[int, int, int], device=None) -> torch.Tensor | None:
        """(1, N, D) additive position embedding of the patch tokens of a grid (None for ``rope3d``)."""
        gt, gh, gw = grid
        if self.pos_embed == "separate":
            pos = self.temporal_table(gt)[:, :, None, :] + self.spatial_table((gh, gw))[:, None, :, :]
            return pos.flatten(1, 2)
        if self.pos_embed == "joint":
            return self.joint_table(grid)
        if self.pos_embed == "sincos":
            return sincos_table(gt * gh * gw, self.embed_dim, device=device)
        return None

    @staticmethod
    def token_coords(indices: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """(B, N) time-major token indices → (B, N, 3) (t, h, w) grid coordinates (for RoPE)."""
        _, gh, gw = grid
        cells = gh * gw
        return torch.stack((indices // cells, (indices % cells) // gw, indices % gw), dim=-1)

    # -- forward ---------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> tuple[int, int, int]:
        if x.ndim != 5:
            raise VideosslError("ViViT expects (B, C, T, H, W) (or (B, C, H, W) images with image_input), "
                                f"got shape {tuple(x.shape)}")
        _, c, t, h, w = x.shape
        tt, ph, pw = self.tubelet
        if c != self.in_chans:
            raise VideosslError(f"ViViT built for {self.in_chans} channels, got {c} (shape (B, C, T, H, W))")
        if h % ph or w % pw:
            raise VideosslError(f"frame size {h}x{w} is not divisible by the patch size {ph}x{pw}")
        if t == 1 and self.image_input:
            return 1, h // ph, w // pw
        if t % tt:
            hint = " (a still image needs image_input=True)" if t == 1 else ""
            raise VideosslError(f"clip length {t} is not divisible by the tubelet length {tt}{hint}")
        return t // tt, h // ph, w // pw

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tubelet tokens with position embeddings: (B, N, D), N = T' · H' · W' (time-major)."""
        gt, gh, gw = self._check_input(x)
        if self.normalize_input:
            x = (x - 0.45) / 0.225
        if self.image_embed is not None and x.shape[2] == 1:  # a still image: the 2D patch conv
            tokens = self.image_embed(x[:, :, 0]).flatten(2).transpose(1, 2)  # (B, H"W", D)
        else:
            if self.motion_input:
                x = torch.cat([x, self.motion_gain * causal_differences(x, 2)], 1)
            tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T"H"W", D), time-major
        pos = self.position_table((gt, gh, gw), device=tokens.device)
        return tokens if pos is None else tokens + pos.to(tokens.dtype)

    def keep_indices(self, batch: int, grid: tuple[int, int, int], ratio: float, token_valid=None,
                     generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        gt, gh, gw = grid
        if self.mask_mode == "tube":
            return tube_keep_indices(batch, gt, gh * gw, ratio, device=device, generator=generator)
        return random_keep_indices(batch, gt * gh * gw, ratio, device=device, generator=generator, token_valid=token_valid)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, mask_ratio: float | None = None,
                generator: torch.Generator | None = None, return_tokens: bool = False,
                keep: torch.Tensor | None = None, return_kept: bool = False):
        """(B, C, T, H, W) → (B, D) mean-pooled video vector (or the (B, N', D) tokens).

        Masks only in training mode (``mask_ratio`` defaults to the configured one); ``valid``
        (B, T) bool marks real frames (False on padding from the long-video sampler). ``keep``
        (B, K) gives the kept token indices explicitly instead of drawing them (training mode;
        e.g. :func:`mirror_keep_indices` of a previous call's kept indices to mask a reversed clip alike).
        ``return_kept=True`` returns ``(output, Kept)``: which tokens this call kept and on which grid.
        """
        if x.ndim == 4 and self.image_input:
            x = x.unsqueeze(2)
        grid = self._check_input(x)
        b = x.shape[0]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not (self._stem_frozen() and self._first_trainable() > 0)):
            tokens = self.embed(x)
        token_valid = None
        if valid is not None:
            v = valid.to(device=x.device, dtype=torch.bool)
            if v.shape != (b, x.shape[2]):
                raise VideosslError(f"valid must be (B, T) = {(b, x.shape[2])}, got {tuple(v.shape)}")
            tv = v.view(b, grid[0], -1).any(dim=2)  # a tubelet with any real frame is real
            token_valid = tv[:, :, None].expand(b, grid[0], grid[1] * grid[2]).reshape(b, -1)
            if bool(token_valid.all()):
                token_valid = None
        ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        if keep is not None and self.training:
            n = grid[0] * grid[1] * grid[2]
            if keep.ndim != 2 or keep.shape[0] != b or keep.numel() == 0 or int(keep.min()) < 0 or int(keep.max()) >= n:
                raise VideosslError(f"keep must be (B={b}, K) token indices in [0, {n}), got {tuple(keep.shape)}")
            keep = keep.to(x.device)
        elif self.training and ratio > 0:
            keep = self.keep_indices(b, grid, ratio, token_valid, generator, x.device)
        else:
            keep = None
        if keep is not None:
            tokens = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[-1]))
            if token_valid is not None:
                token_valid = token_valid.gather(1, keep)
        coords = None
        if self.pos_embed == "rope3d":  # positions of the kept tokens
            idx = keep if keep is not None else torch.arange(tokens.shape[1], device=x.device).expand(b, -1)
            coords = self.token_coords(idx, grid)
        if self.has_cls:  # never dropped, never padding
            cls = self.cls_token + self.pos_cls if hasattr(self, "pos_cls") else self.cls_token
            tokens = torch.cat([cls.to(tokens.dtype).expand(b, -1, -1), tokens], dim=1)
        kept = Kept(keep, grid, tokens.shape[1])
        if self.ln_pre is not None:
            tokens = self.ln_pre(tokens)
        attn_mask = None
        if token_valid is not None:
            token_valid = token_valid | ~token_valid.any(dim=1, keepdim=True)  # never an all-masked row
            attn_valid = token_valid
            if self.has_cls:
                attn_valid = torch.cat([token_valid.new_ones(b, 1), token_valid], dim=1)
            attn_mask = attn_valid[:, None, None, :]
        tokens = self._run_blocks(tokens, attn_mask, coords)
        if self.final_norm == "tokens":
            tokens = self.norm(tokens)
        if return_tokens:
            out = tokens
        else:
            out = self._pool_tokens(tokens, token_valid)
        return (out, kept) if return_kept else out

    @property
    def feature_stride(self) -> tuple[int, int]:
        """(time, space) stride of :meth:`forward_features`: one cell per tubelet."""
        return (self.tubelet[0], self.tubelet[1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Dense features for correspondence probes: the patch tokens after the last block (and the final norm
        when ``final_norm`` is ``tokens``), without the class token and with no token dropped, on the tubelet grid:
        (B, D, T/t, H/p, W/p)."""
        if x.ndim == 4 and self.image_input:
            x = x.unsqueeze(2)
        grid = self._check_input(x)
        tokens = self.forward(x, mask_ratio=0.0, return_tokens=True)
        if self.has_cls:
            tokens = tokens[:, 1:]
        return tokens.reshape(x.shape[0], *grid, tokens.shape[-1]).permute(0, 4, 1, 2, 3)

    def _pool_tokens(self, tokens: torch.Tensor, token_valid: torch.Tensor | None) -> torch.Tensor:
        if self.pool == "cls":
            out = tokens[:, 0]
        else:
            patches = tokens[:, 1:] if self.has_cls else tokens
            if token_valid is None:
                out = patches.mean(dim=1)
            else:
                w = token_valid.to(patches.dtype)[:, :, None]
                out = (patches * w).sum(1) / w.sum(1).clamp(min=1.0)
        if self.final_norm == "pooled":
            out = self.norm(out)
        return self.proj(out) if self.proj is not None else out

    def _stem_frozen(self) -> bool:
        stem = [self.patch_embed.weight, *self._position_params()]
        if self.has_cls:
            stem.append(self.cls_token)
        if self.ln_pre is not None:
            stem.extend(self.ln_pre.parameters())
        return not any(p.requires_grad for p in stem)

    def _first_trainable(self) -> int:
        for i, blk in enumerate(self.blocks):
            if any(p.requires_grad for p in blk.parameters()):
                return i
        return self.depth

    def _run_blocks(self, x: torch.Tensor, attn_mask: torch.Tensor | None, coords: torch.Tensor | None = None) -> torch.Tensor:
        first = self._first_trainable() if self._stem_frozen() else 0
        grad = torch.is_grad_enabled()
        for i, blk in enumerate(self.blocks):
            if i < first:
                with torch.no_grad():  # frozen prefix: no activations kept for backward
                    x = blk(x, attn_mask, coords)
                continue
            if self.grad_checkpointing and self.training and grad:
                x = checkpoint(blk, x, attn_mask, coords, use_reentrant=False)
            else:
                x = blk(x, attn_mask, coords)
        return x

    # -- weights -----------------------------------------------------------------------------------
    def load_pretrained(self, source: str | Mapping[str, torch.Tensor], prefix: str = "encoder.") -> LoadReport:
        """Load weights (a run's ``encoder.pt``, a Lightning checkpoint or a state dict), resizing
        the temporal / spatial position tables to this model's sizes."""
        sd = read_state_dict(source)
        if not any(k.startswith(prefix) for k in sd):
            prefix = ""
        t_key, s_key = prefix + "pos_temporal", prefix + "pos_spatial"
        if t_key in sd and sd[t_key].shape[1] != self.grid_t:
            sd[t_key] = resize_temporal_table(sd[t_key].float(), self.grid_t)
        if s_key in sd and sd[s_key].shape[1] != self.grid[0] * self.grid[1]:
            n = sd[s_key].shape[1]
            g = int(round(math.sqrt(n)))
            if g * g != n:
                raise VideosslError(f"cannot resize a non-square spatial position table of {n} entries")
            sd[s_key] = resize_spatial_table(sd[s_key].float(), (g, g), self.grid)
        j_key, cells = prefix + "pos_joint", self.grid[0] * self.grid[1]
        if j_key in sd and sd[j_key].shape[1] != self.grid_t * cells and sd[j_key].shape[1] % cells == 0:
            table = sd[j_key].float().reshape(-1, cells, self.embed_dim).permute(1, 0, 2)  # (S, T0, D)
            sd[j_key] = resize_temporal_table(table, self.grid_t).permute(1, 0, 2).reshape(1, -1, self.embed_dim)
        return load_state(self, sd, prefix=prefix)


def vivit(name: str = "vivit-s", **kw: Any) -> ViViT:
    """``vivit-tiny`` | ``vivit-s`` | ``vivit-b`` | ``vivit-l`` → :class:`ViViT` (extra kwargs pass through)."""
    size = name.lower().removeprefix("vivit-").removeprefix("vivit_")
    if size not in SIZES:
        raise VideosslError(f"unknown model {name!r}: choose one of {', '.join('vivit-' + s for s in SIZES)}")
    return ViViT(size=size, **kw)
