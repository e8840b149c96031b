"""RandConv: a random convolution per clip, BraVe's augmentation of broad video views (arXiv:2103.16559 §3.3)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from videossl.errors import VideosslError
from videossl.models.encoders import check_clip

__all__ = ["RandConv"]


class RandConv(nn.Module):
    """Random convolution augmentation, one random kernel per clip (BraVe, arXiv:2103.16559, and RandConv, arXiv:2007.07591).

    For each clip of ``(B, C, T, H, W)`` draw k uniformly from ``kernel_sizes`` (default
    {1, 3, 5, 7, 9, 11}) and a C→C k×k kernel with TF's ``he_normal`` init (normal truncated at
    2σ, σ = sqrt(2 / (C·k²)) / 0.8796), then convolve every frame with it: stride 1, zero
    "same" padding, no bias, no re-normalisation. The module has no parameters; it is applied in
    train and eval mode alike (it is a data augmentation). Pass ``generator`` for reproducibility.
    """

    def __init__(self, kernel_sizes: Sequence[int] = (1, 3, 5, 7, 9, 11), channels: int = 3) -> None:
        super().__init__()
        ks = tuple(int(k) for k in kernel_sizes)
        if not ks or any(k < 1 or k % 2 == 0 for k in ks):
            raise VideosslError(
                f"RandConv kernel_sizes must be odd positive integers, got {tuple(kernel_sizes)}"
            )
        self.kernel_sizes, self.channels = ks, int(channels)

    def sample_kernels(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One ``(C, C, k, k)`` kernel per clip, on the CPU."""
        idx = torch.randint(len(self.kernel_sizes), (batch,), generator=generator).tolist()
        kernels = []
        c = self.channels
        for i in idx:
            k = self.kernel_sizes[i]
            std = math.sqrt(2.0 / (c * k * k)) / 0.87962566103423978
            w = torch.empty(c, c, k, k)
            nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)
            kernels.append(w)
        return kernels

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        kernels: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        check_clip(x, self.channels, "RandConv")
        b, c, t, h, w = x.shape
        if kernels is None:
            kernels = self.sample_kernels(b, generator)
        out = torch.empty_like(x)
        by_k: dict[int, list[int]] = {}
        for i, kern in enumerate(kernels):
            by_k.setdefault(kern.shape[-1], []).append(i)
        for k, rows in by_k.items():
            # clips sharing k: one grouped Conv3d with (1, k, k) kernels, group = clip
            weight = torch.cat([kernels[i] for i in rows]).to(x.device, x.dtype).unsqueeze(2)
            xs = x[rows].reshape(1, len(rows) * c, t, h, w)
            ys = F.conv3d(xs, weight, padding=(0, k // 2, k // 2), groups=len(rows))
            out[rows] = ys.reshape(len(rows), c, t, h, w)
        return out
