"""Sideways / Skip-Sideways gradients (arXiv 2001.06232 §3, arXiv 2106.08318 §3) against exact backprop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videossl.errors import VideosslError
from videossl.models.pipelined import FrameCNN, PipelinedEncoder
from videossl.models.sideways import (
    bp_clip_grads,
    grad_cosines,
    init_sideways,
    per_frame_bp_grads,
    sideways_clip_grads,
    sideways_tick,
)


def _setup(skips=(), seed=0, width=8, depth=4, classes=3, batch=2):
    torch.manual_seed(seed)
    pipe = PipelinedEncoder.from_sequential(FrameCNN(width=width, depth=depth), skips=skips)
    head = nn.Linear(width, classes)
    y = torch.arange(batch) % classes

    def loss_fn(z, t):
        return F.cross_entropy(head(PipelinedEncoder.pool(z)), y)
    return pipe, head, loss_fn


@pytest.mark.parametrize("skips", [[], [(0, 2), (1, 3)]])
def test_constant_video_sideways_equals_per_frame_bp(skips):
    pipe, head, loss_fn = _setup(skips)
    L = pipe.num_stages
    frame = torch.rand(2, 3, 16, 16)
    extra = list(head.parameters())
    ref = per_frame_bp_grads(pipe, frame, loss_fn, extra)
    state = init_sideways(pipe)
    for t in range(2 * L + 3):
        r = sideways_tick(pipe, frame, state, loss_fn, extra)
        if t < 2 * L - 2:  # stage 0's delta has not arrived yet
            continue
        assert set(r.grads) == set(ref)
        for n, g in ref.items():
            torch.testing.assert_close(r.grads[n], g, rtol=1e-5, atol=1e-8, msg=f"tick {t} {n}")


def test_moving_video_sideways_differs_from_per_frame_bp():
    pipe, head, loss_fn = _setup()
    clip = torch.rand(2, 3, 12, 16, 16)
    approx, _ = sideways_clip_grads(pipe, clip, loss_fn, list(head.parameters()))
    exact, _ = bp_clip_grads(pipe, clip, loss_fn, list(head.parameters()))
    cos = grad_cosines(approx, exact)
    assert cos["extra"] == pytest.approx(1.0, abs=1e-6)  # the head sees the current output: exact
    assert cos["stages.3"] == pytest.approx(1.0, abs=1e-5)  # the top stage uses the current tick's delta
    assert min(cos["stages.0"], cos["stages.1"]) < 0.99


def _smooth_canvas(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, max(h // 32, 2), w // 32, generator=g)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)


def _translating(speed: int, n: int = 16, frames: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """n clips of a smooth random texture moving left at ``speed`` px/frame (no wrap-around)."""
    canvas = _smooth_canvas(n, size, size + 8 * frames, seed)
    return torch.stack([canvas[..., speed * t: speed * t + size] for t in range(frames)], dim=2)


@pytest.mark.slow
def test_cosine_to_bp_is_one_at_speed_zero_and_does_not_rise_with_speed():
    """Mean over 3 random networks x 8 clips of 12 frames; the stages below the top (whose delta is current)."""
    speeds, cos = [0, 1, 2, 4, 8], []
    for s in speeds:
        vals = []
        for seed in range(3):
            pipe, head, loss_fn = _setup(seed=seed, batch=8)
            clip = _translating(s, n=8, frames=12, seed=seed)
            approx, _ = sideways_clip_grads(pipe, clip, loss_fn, list(head.parameters()))
            exact, _ = bp_clip_grads(pipe, clip, loss_fn, list(head.parameters()))
            c = grad_cosines(approx, exact)
            vals.append(sum(c[f"stages.{k}"] for k in range(3)) / 3)  # the stages below the top
        cos.append(sum(vals) / len(vals))
    assert cos[0] == pytest.approx(1.0, abs=1e-5)
    for a, b in zip(cos, cos[1:], strict=False):
        assert b <= a + 1e-6, cos
    assert cos[-1] < 0.97, cos


def test_sideways_refuses_slow_clocks():
    pipe = PipelinedEncoder.from_sequential(FrameCNN(width=4, depth=3), clocks=[1, 2, 1])
    with pytest.raises(VideosslError, match="clock"):
        sideways_tick(pipe, torch.rand(1, 3, 8, 8), init_sideways(pipe), lambda z, t: z.sum())


def _lagged_setup(seed=0, lag=3):
    torch.manual_seed(seed)
    pipe = PipelinedEncoder.from_sequential(FrameCNN(width=8, depth=4, concat_skips=[0, 0, 0, 1]),
                                            skips=[(2, 3, lag)], skip_op="concat")
    head = nn.Linear(8, 3)
    y = torch.tensor([0, 2])

    def loss_fn(z, t):
        return F.cross_entropy(head(PipelinedEncoder.pool(z)), y)
    return pipe, head, loss_fn


def test_constant_video_with_a_lagged_skip_sideways_equals_per_frame_bp():
    """Once the delay line is full (tick L - 1 + lag) and the deltas have reached stage 0, Sideways with a
    lagged skip is exact on a constant video for the network whose delay line passes no gradient (Sideways
    drops that delta); with it, the stages below the skip get more."""
    lag = 3
    pipe, head, loss_fn = _lagged_setup(lag=lag)
    L, frame, extra = pipe.num_stages, torch.rand(2, 3, 16, 16), list(head.parameters())
    ref = per_frame_bp_grads(pipe, frame, loss_fn, extra, lagged_grad=False)
    full = per_frame_bp_grads(pipe, frame, loss_fn, extra)
    assert not torch.allclose(full["stages.2.0.0.weight"], ref["stages.2.0.0.weight"])
    torch.testing.assert_close(full["stages.3.0.0.weight"], ref["stages.3.0.0.weight"])
    state = init_sideways(pipe)
    for t in range(2 * L + lag + 3):
        r = sideways_tick(pipe, frame, state, loss_fn, extra)
        if t < 2 * L - 2 + lag:
            continue
        assert set(r.grads) == set(ref)
        for n, g in ref.items():
            torch.testing.assert_close(r.grads[n], g, rtol=1e-5, atol=1e-8, msg=f"tick {t} {n}")


def test_lagged_skip_top_stage_gradient_is_exact_on_moving_video():
    """The top stage's delta is the current loss's: with the lagged skip into it, its weight gradient (and the
    head's) equals BP through the unrolled pipeline on any clip; the stages below are approximate."""
    pipe, head, loss_fn = _lagged_setup(lag=3)
    clip = _translating(2, n=2, frames=12, size=16)
    approx, _ = sideways_clip_grads(pipe, clip, loss_fn, list(head.parameters()))
    exact, _ = bp_clip_grads(pipe, clip, loss_fn, list(head.parameters()))
    cos = grad_cosines(approx, exact)
    assert cos["stages.3"] == pytest.approx(1.0, abs=1e-6) and cos["extra"] == pytest.approx(1.0, abs=1e-6)
    assert cos["stages.0"] < 0.999
