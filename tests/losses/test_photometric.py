"""Photometric and smoothness terms against hand computations."""

import math

import pytest
import torch
from torchmetrics.image import StructuralSimilarityIndexMeasure

from videossl.losses import photometric as P


def test_huber_values():
    d = 1e-3
    a = torch.tensor([0.0, 0.5e-3, 1e-3, 3e-3, -3e-3], dtype=torch.float64)
    want = torch.tensor([0.0, 0.5 * 0.25e-6, 0.5e-6, d * (3e-3 - 0.5e-3), d * (3e-3 - 0.5e-3)], dtype=torch.float64)
    assert torch.allclose(P.huber(a, d), want, rtol=1e-9, atol=0)


def test_huber_smooth_hand():
    # channel x = 0.002·x: central difference 0.002 -> a = 0.002 > delta -> delta·(a - delta/2) = 1.5e-6;
    # channel y = 0.0004·y: a = 0.0004 <= delta -> a²/2 = 8e-8; mean over the two channels.
    H, W = 6, 7
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    flow = torch.stack([0.002 * x, 0.0004 * y])[None]
    got = P.huber_smooth(flow, delta=1e-3, eps=0.0)
    assert got.item() == pytest.approx((1.5e-6 + 8e-8) / 2, rel=1e-9)


def test_huber_smooth_gradient_finite_at_zero():
    flow = torch.zeros(1, 2, 5, 5, requires_grad=True)
    P.huber_smooth(flow).backward()
    assert torch.isfinite(flow.grad).all()


def test_ssim_identity_and_torchmetrics():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    assert P.ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    ref = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=11, sigma=1.5, k1=0.01, k2=0.03)(y, x)
    assert P.ssim(y, x).item() == pytest.approx(ref.item(), abs=2e-4)


def test_psnr_charbonnier_gradient_mse():
    x = torch.zeros(1, 1, 4, 4)
    assert P.psnr(x + 0.1, x).item() == pytest.approx(20.0, abs=1e-4)  # mse 0.01 -> 20 dB
    assert P.charbonnier(x, x, alpha=0.45, eps=1e-3).item() == pytest.approx((1e-6) ** 0.45, rel=1e-4)
    assert P.charbonnier(x + 0.5, x, alpha=0.5, eps=0.0).item() == pytest.approx(0.5, rel=1e-6)
    # gradient MSE of a ramp against zeros: [-1,0,1] on x -> 2 inside; zero-padded borders
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    gx, gy = P.image_gradients(ramp)
    assert torch.equal(gx[0, 0, 0], torch.tensor([1.0, 2.0, 2.0, -2.0]))
    want = 0.5 * ((gx ** 2).mean() + (gy ** 2).mean())
    assert P.gradient_mse(ramp, torch.zeros_like(ramp)).item() == pytest.approx(want.item())


def test_mask_weighting():
    pred, tgt = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
    assert P.mse(pred, tgt, mask).item() == pytest.approx(0.0, abs=1e-7)
    assert P.mse(pred, tgt).item() == pytest.approx(0.25)


def test_edge_aware_smoothness():
    flow = torch.zeros(1, 2, 4, 4)
    flow[:, 0, :, 2:] = 1.0  # a step in x between columns 1 and 2
    flat = torch.zeros(1, 3, 4, 4)
    # |dx flow| mean over channels = 0.5 on the step column (1 of 3 columns), y-differences 0
    assert P.edge_aware_smoothness(flow, flat, alpha=10).item() == pytest.approx(0.5 * (0.5 / 3), rel=1e-6)
    edge = flat.clone()
    edge[:, :, :, 2:] = 1.0  # an image edge at the flow edge: the penalty is weighted by exp(-10)
    assert P.edge_aware_smoothness(flow, edge, alpha=10).item() == pytest.approx(0.5 * (0.5 / 3) * math.exp(-10), rel=1e-5)
    # 2nd order: a linear flow costs nothing
    lin = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 2, 5, 5)
    assert P.edge_aware_smoothness(lin, torch.zeros(1, 1, 5, 5), order=2).item() == pytest.approx(0.0, abs=1e-7)


def test_l1_ssim_and_fb_check():
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert P.l1_ssim(x, x).item() == pytest.approx(0.0, abs=1e-5)
    f = torch.full((1, 2, 3, 3), 2.0)
    assert P.forward_backward_occlusion(f, -f).min().item() == 1.0  # consistent -> visible
    assert P.forward_backward_occlusion(f, f).max().item() == 0.0  # |F + B|² = 32 > 0.01·16 + 0.5 -> occluded
