"""Photometric and smoothness terms for unsupervised flow / next-frame prediction (pure functions).

Images are (B, C, H, W) floats in [0, 1]; flows are (B, 2, H, W). Every loss returns a scalar mean
unless a function says otherwise; ``mask`` (B, 1, H, W) in [0, 1] weights pixels and normalises by
its sum (``eps`` guards an empty mask). See Pătrăucean et al., arXiv:1511.06309

* :func:`huber` / :func:`huber_smooth` — the paper's smoothness: Huber H_δ on the local flow
  gradient magnitude a = √(g_x² + g_y² + eps) per flow channel, central differences [−½, 0, ½]
  (interior pixels), H_δ(a) = ½a² if |a| ≤ δ else δ(|a| − δ/2).
* :func:`gradient_mse` — the released code's reconstruction: MSE between [−1, 0, 1] image gradients.
* :func:`charbonnier` — generalised Charbonnier (x² + ε²)^α (UnFlow: α 0.45, ε 1e-3).
* :func:`ssim_map` / :func:`ssim` — SSIM (Gaussian 11×11, σ 1.5, K1 0.01, K2 0.03 by default, valid
  window positions only, mean over channels); :func:`l1_ssim` — 0.15·L1 + 0.85·(1 − SSIM)/2 (ARFlow).
* :func:`edge_aware_smoothness` — 1st/2nd-order flow differences weighted by exp(−α·mean_c|∇I|).
* :func:`psnr` — per-image PSNR in dB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-8) -> torch.Tensor:
    if mask is None:
        return x.mean()
    m = mask.expand_as(x)
    return (x * m).sum() / (m.sum() + eps)


# ----------------------------------------------------------------------------------- smoothness
def huber(a: torch.Tensor, delta: float) -> torch.Tensor:
    """Elementwise Huber: ½a² for |a| ≤ δ, δ(|a| − δ/2) beyond."""
    absa = a.abs()
    return torch.where(absa <= delta, 0.5 * a * a, delta * (absa - 0.5 * delta))


def central_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[−½, 0, ½] differences on interior pixels: (gx, gy), each (B, C, H−2, W−2)."""
    gx = 0.5 * (x[..., 1:-1, 2:] - x[..., 1:-1, :-2])
    gy = 0.5 * (x[..., 2:, 1:-1] - x[..., :-2, 1:-1])
    return gx, gy


def huber_smooth(flow: torch.Tensor, delta: float = 1e-3, eps: float = 1e-12) -> torch.Tensor:
    """Mean over channels and interior pixels of H_δ(√(g_x² + g_y² + eps)) (paper's smoothness)."""
    gx, gy = central_gradients(flow)
    a = torch.sqrt(gx * gx + gy * gy + eps)
    return huber(a, delta).mean()


def edge_aware_smoothness(flow: torch.Tensor, image: torch.Tensor, alpha: float = 10.0, order: int = 1) -> torch.Tensor:
    """Σ over x and y of mean(exp(−α·mean_c|∂I|) · mean_c|∂ⁿflow|) / 2, n = ``order`` (1 or 2), forward differences."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(1, keepdim=True)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(1, keepdim=True)
    fx = flow[..., :, 1:] - flow[..., :, :-1]
    fy = flow[..., 1:, :] - flow[..., :-1, :]
    if order == 2:
        fx = fx[..., :, 1:] - fx[..., :, :-1]
        fy = fy[..., 1:, :] - fy[..., :-1, :]
        ix, iy = ix[..., :, 1:], iy[..., 1:, :]
    wx, wy = torch.exp(-alpha * ix), torch.exp(-alpha * iy)
    return 0.5 * ((wx * fx.abs().mean(1, keepdim=True)).mean() + (wy * fy.abs().mean(1, keepdim=True)).mean())


# ----------------------------------------------------------------------------------- data terms
def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _masked_mean((pred - target) ** 2, mask)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[−1, 0, 1] differences (zero padding, as a 'same' convolution): (gx, gy) of x's shape."""
    p = F.pad(x, (1, 1, 1, 1))
    gx = p[..., 1:-1, 2:] - p[..., 1:-1, :-2]
    gy = p[..., 2:, 1:-1] - p[..., :-2, 1:-1]
    return gx, gy


def gradient_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of the squared differences of [−1, 0, 1] gradients in x and y (released code's loss)."""
    px, py = image_gradients(pred)
    tx, ty = image_gradients(target)
    return 0.5 * (((px - tx) ** 2).mean() + ((py - ty) ** 2).mean())


def charbonnier(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.45, eps: float = 1e-3,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    d = pred - target
    return _masked_mean((d * d + eps * eps) ** alpha, mask)


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, gaussian: bool = True,
             k1: float = 0.01, k2: float = 0.03, data_range: float = 1.0, padding: str = "valid") -> torch.Tensor:
    """Per-pixel SSIM (B, C, H', W'); ``padding='valid'`` keeps full windows only (H' = H − window + 1),
    ``'reflect'`` keeps the size (for a per-pixel loss)."""
    c = x.shape[1]
    if gaussian:
        w = gaussian_window(window, sigma, x.device, x.dtype)
    else:
        w = torch.full((window, window), 1.0 / (window * window), device=x.device, dtype=x.dtype)
    w = w.expand(c, 1, window, window)
    if padding == "reflect":
        pad = window // 2
        x, y = F.pad(x, (pad,) * 4, mode="reflect"), F.pad(y, (pad,) * 4, mode="reflect")
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'reflect', got {padding!r}")

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, w, groups=c)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean", **kw) -> torch.Tensor:
    """SSIM averaged over channels and valid windows: a scalar (``mean``) or one value per image (``none``)."""
    m = ssim_map(x, y, **kw)
    per = m.flatten(1).mean(1)
    return per.mean() if reduction == "mean" else per


def l1_ssim(pred: torch.Tensor, target: torch.Tensor, w_l1: float = 0.15, w_ssim: float = 0.85,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """ARFlow's photometric term: w_l1·|d| + w_ssim·clamp((1 − SSIM₃ₓ₃)/2, 0, 1), per pixel, masked mean."""
    l1 = (pred - target).abs().mean(1, keepdim=True)
    s = ssim_map(pred, target, window=3, gaussian=False, padding="reflect").mean(1, keepdim=True)
    per = w_l1 * l1 + w_ssim * ((1 - s) / 2).clamp(0, 1)
    return _masked_mean(per, mask)


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image (B,), from the mean squared error over C, H, W (capped at 100 dB)."""
    err = ((pred.float() - target.float()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / err.clamp_min(1e-10))).clamp(max=100.0)


# ------------------------------------------------------------------------------------ occlusion
def forward_backward_occlusion(flow: torch.Tensor, other_warped: torch.Tensor, alpha1: float = 0.01,
                               alpha2: float = 0.5) -> torch.Tensor:
    """UnFlow's check: occluded (1) where ‖F + B_w‖² > α1(‖F‖² + ‖B_w‖²) + α2; returns the *visible* mask (B,1,H,W)."""
    s = (flow + other_warped).pow(2).sum(1, keepdim=True)
    bound = alpha1 * (flow.pow(2).sum(1, keepdim=True) + other_warped.pow(2).sum(1, keepdim=True)) + alpha2
    return (s <= bound).float()


__all__ = [
    "central_gradients",
    "charbonnier",
    "edge_aware_smoothness",
    "forward_backward_occlusion",
    "gaussian_window",
    "gradient_mse",
    "huber",
    "huber_smooth",
    "image_gradients",
    "l1_ssim",
    "mse",
    "psnr",
    "ssim",
    "ssim_map",
]
