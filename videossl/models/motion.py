"""Causal temporal differences: the explicit motion input of the flow autoencoder's encoder and the ViViT."""

from __future__ import annotations

import torch


def causal_differences(x: torch.Tensor, dim: int, previous: torch.Tensor | None = None) -> torch.Tensor:
    """``x_t − x_{t−1}`` along ``dim`` (same shape as ``x``); x_{−1} is ``previous`` (``x`` without ``dim``,
    for streaming) or x_0 itself (a zero first difference). Unlike BraVe's ``frame_differences``
    (x_{t+1} − x_t), step t never depends on a later frame."""
    first = x.narrow(dim, 0, 1) if previous is None else previous.unsqueeze(dim)
    return x - torch.cat([first, x.narrow(dim, 0, x.shape[dim] - 1)], dim)


__all__ = ["causal_differences"]
