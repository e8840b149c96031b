"""Differentiable bilinear backward warping with explicit pixel conventions.

Conventions (Pătrăucean et al., arXiv:1511.06309, §8.5):

* A flow field is ``(B, 2, H, W)`` in **pixels**, channel 0 = dx (x grows right), channel 1 = dy
  (y grows down). (The Lua code of the paper orders (y, x); we do not.)
* **Backward warping**: ``out(p) = img(p + flow(p))``. A constant flow of (+3, 0) therefore moves the
  picture 3 px to the *left* (``out[..., j] = img[..., j + 3]``). With ``flow`` = the backward flow
  B_{t+1→t} (at the pixels of frame t+1), ``warp(frame_t, flow)`` ≈ frame t+1.
* Pixel ``(row i, column j)`` has its centre at ``(x, y) = (j, i)``. Pixels → ``grid_sample``'s
  normalised coordinates: ``2x/(W−1) − 1`` with ``align_corners=True`` (the stnbhwd convention the
  paper uses) and ``(2x+1)/W − 1`` with ``align_corners=False``; both give the same sampled
  positions, so the result does not depend on the flag (tested). ``align_corners`` is always passed
  explicitly to ``grid_sample``.
* The grid is built in fp32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1, 2, H, W) pixel coordinates (x, y) of every pixel centre."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                            indexing="ij")
    return torch.stack([xs, ys])[None]


def pixels_to_normalised(coords: torch.Tensor, h: int, w: int, align_corners: bool) -> torch.Tensor:
    """Absolute pixel coords (B, 2, H, W) (x, y) → grid_sample grid (B, H, W, 2) in [−1, 1]."""
    x, y = coords[:, 0], coords[:, 1]
    if align_corners:
        gx = 2.0 * x / max(w - 1, 1) - 1.0
        gy = 2.0 * y / max(h - 1, 1) - 1.0
    else:
        gx = (2.0 * x + 1.0) / w - 1.0
        gy = (2.0 * y + 1.0) / h - 1.0
    return torch.stack([gx, gy], dim=-1)


def flow_px_to_norm(flow: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Displacement in pixels (B, 2, H, W) → displacement in normalised units (same layout)."""
    h, w = flow.shape[-2:]
    if align_corners:
        sx, sy = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    else:
        sx, sy = 2.0 / w, 2.0 / h
    return torch.stack([flow[:, 0] * sx, flow[:, 1] * sy], dim=1)


def flow_norm_to_px(flow: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Inverse of :func:`flow_px_to_norm`."""
    h, w = flow.shape[-2:]
    if align_corners:
        sx, sy = max(w - 1, 1) / 2.0, max(h - 1, 1) / 2.0
    else:
        sx, sy = w / 2.0, h / 2.0
    return torch.stack([flow[:, 0] * sx, flow[:, 1] * sy], dim=1)


def backward_warp(img: torch.Tensor, flow: torch.Tensor, align_corners: bool = True, padding_mode: str = "zeros",
                  mode: str = "bilinear") -> torch.Tensor:
    """``out(p) = img(p + flow(p))``; img (B, C, H, W), flow (B, 2, H, W) in pixels (dx, dy)."""
    h, w = flow.shape[-2:]
    coords = pixel_grid(h, w, flow.device) + flow.float()
    grid = pixels_to_normalised(coords, h, w, align_corners)
    out = F.grid_sample(img.float(), grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return out.to(img.dtype) if img.dtype.is_floating_point else out


def backward_warp_norm(img: torch.Tensor, flow_norm: torch.Tensor, align_corners: bool = True,
                       padding_mode: str = "zeros") -> torch.Tensor:
    """The paper's sampler: grid = base grid (in [−1, 1]) + normalised displacement ``flow_norm`` (B, 2, H, W)."""
    h, w = flow_norm.shape[-2:]
    base = pixels_to_normalised(pixel_grid(h, w, flow_norm.device), h, w, align_corners)
    grid = base + flow_norm.float().permute(0, 2, 3, 1)
    return F.grid_sample(img.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)


def outside_mask(flow: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 1 where ``p + flow(p)`` lies inside the image (UnFlow's "outgoing" mask), else 0."""
    h, w = flow.shape[-2:]
    c = pixel_grid(h, w, flow.device) + flow.float()
    inside = (c[:, 0] >= 0) & (c[:, 0] <= w - 1) & (c[:, 1] >= 0) & (c[:, 1] <= h - 1)
    return inside[:, None].float()


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a pixel flow field to ``size`` with the displacements rescaled to the new pixels.

    Uses ``align_corners=False`` geometry (pixel centres of a stride-s feature map sit at
    ``s·i + (s−1)/2``), which is what max-pooling by s produces.
    """
    h, w = flow.shape[-2:]
    out = F.interpolate(flow.float(), size=size, mode="bilinear", align_corners=False)
    return torch.stack([out[:, 0] * (size[1] / w), out[:, 1] * (size[0] / h)], dim=1)


__all__ = [
    "backward_warp",
    "backward_warp_norm",
    "flow_norm_to_px",
    "flow_px_to_norm",
    "outside_mask",
    "pixel_grid",
    "pixels_to_normalised",
    "upsample_flow",
]
