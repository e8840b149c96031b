"""Temporal differences: the explicit motion input of the flow autoencoder's encoder and the ViViT
(causal), BraVe's frame-difference broad views and the long-video method's motion view."""

from __future__ import annotations

import torch

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights (ITU-R BT.601 luma)


def causal_differences(x: torch.Tensor, dim: int, previous: torch.Tensor | None = None) -> torch.Tensor:
    """``x_t − x_{t−1}`` along ``dim`` (same shape as ``x``); x_{−1} is ``previous`` (``x`` without ``dim``,
    for streaming) or x_0 itself (a zero first difference). Unlike BraVe's ``frame_differences``
    (x_{t+1} − x_t), step t never depends on a later frame."""
    first = x.narrow(dim, 0, 1) if previous is None else previous.unsqueeze(dim)
    return x - torch.cat([first, x.narrow(dim, 0, x.shape[dim] - 1)], dim)


def frame_differences(clip: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) → (B, C, T, H, W): x[t+1] − x[t], the last difference repeated to keep T."""
    d = clip[:, :, 1:] - clip[:, :, :-1]
    return torch.cat([d, d[:, :, -1:]], dim=2)


def gray_differences(clip: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) → (B, 1, T, H, W): frame differences of the luma (colour-free motion)."""
    w = clip.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1, 1)
    return frame_differences((clip * w).sum(1, keepdim=True))


def motion_view(clip: torch.Tensor, gain: float = 4.0, centre: float = 0.45) -> torch.Tensor:
    """(B, 3, T, H, W) in [0, 1] → a 3-channel, motion-only clip for an RGB encoder:
    ``centre + gain · Δluma`` clamped to [0, 1] (static pixels sit at ``centre``, the mean that the
    encoders' input normalisation subtracts; colour and static texture are gone)."""
    return (centre + gain * gray_differences(clip)).clamp(0.0, 1.0).expand(-1, 3, -1, -1, -1).contiguous()


__all__ = ["GRAY_WEIGHTS", "causal_differences", "frame_differences", "gray_differences", "motion_view"]
