"""PipelinedEncoder: the streaming structure (arXiv 1806.03863 §3; skips as in arXiv 2106.08318 §3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.pipelined import FrameCNN, PipelinedEncoder


def _cnn_pipe(skips=(), clocks=None, depth=4, width=8, seed=0):
    torch.manual_seed(seed)
    return PipelinedEncoder.from_sequential(FrameCNN(width=width, depth=depth), clocks=clocks, skips=skips).eval()


def _constant(frame: torch.Tensor, n: int) -> torch.Tensor:
    return frame.unsqueeze(2).expand(-1, -1, n, -1, -1).contiguous()


@pytest.mark.parametrize("backbone", ["cnn", "resnet18", "vit"])
def test_constant_video_equals_sequential_after_L_ticks(backbone):
    torch.manual_seed(0)
    if backbone == "cnn":
        net, stages, frame = FrameCNN(width=8, depth=4), None, torch.rand(2, 3, 16, 16)
    elif backbone == "resnet18":
        tv = pytest.importorskip("torchvision")
        net, stages, frame = tv.models.resnet18(num_classes=5), [4, 1, 1, 1, 3], torch.rand(2, 3, 32, 32)
    else:
        timm = pytest.importorskip("timm")
        net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=4)
        stages, frame = [1, 4, 4, 4, 1], torch.rand(2, 3, 32, 32)
    pipe = PipelinedEncoder.from_sequential(net.eval(), stages=stages).eval()
    L = pipe.num_stages
    state = pipe.init_state()
    with torch.no_grad():
        ref = net(frame)
        outs = [pipe.step(frame, state) for _ in range(L + 2)]
    assert all(o is None for o, _ in outs[: L - 1])  # pipe not yet full
    for o, d in outs[L - 1:]:
        assert d == L - 1
        torch.testing.assert_close(o, ref, atol=1e-6, rtol=0)


def test_moving_video_is_not_the_sequential_model():
    pipe = _cnn_pipe()
    clip = torch.rand(1, 3, 6, 16, 16)
    with torch.no_grad():
        outs, _ = pipe.stream(clip)
        ref = pipe.sequential(clip[:, :, 5])
        lagged = pipe.sequential(clip[:, :, 5 - 3])
    assert not torch.allclose(outs[-1], ref, atol=1e-3)
    torch.testing.assert_close(outs[-1], lagged, atol=1e-6, rtol=0)  # top output belongs to frame t-(L-1)


def _first_change(pipe, t0=6, n=14):
    torch.manual_seed(1)
    base = torch.rand(1, 3, 16, 16)
    clip = _constant(base, n)
    imp = clip.clone()
    imp[:, :, t0] = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a, delays = pipe.stream(clip)
        b, _ = pipe.stream(imp)
    changed = [t for t in range(n) if a[t] is not None and not torch.allclose(a[t], b[t], atol=0, rtol=0)]
    return changed[0] - t0, delays[-1]


def test_impulse_appears_after_delay_without_and_with_skips():
    plain = _cnn_pipe()
    lag, delay = _first_change(plain)
    assert lag == delay == plain.structural_delay() == 3  # L - 1 ticks after it: on the L-th tick
    skip = _cnn_pipe(skips=[(0, 2), (1, 3)])
    lag_s, delay_s = _first_change(skip)
    assert lag_s == delay_s == skip.structural_delay() == 2
    assert lag_s < lag


@pytest.mark.parametrize("clocks", [[1, 1, 1, 1], [1, 1, 2, 4], [1, 2, 2, 3]])
def test_flops_per_frame_are_sum_cost_over_rate(clocks):
    from torch.utils.flop_counter import FlopCounterMode

    pipe = _cnn_pipe(clocks=clocks)
    frame = torch.rand(1, 3, 16, 16)
    costs = pipe.stage_costs(frame)
    expected = sum(c / r for c, r in zip(costs, clocks, strict=True))
    ticks = 48  # a multiple of every clock's period, pipe full after 4
    state = pipe.init_state()
    with torch.no_grad():
        for _ in range(ticks):  # fill the pipe, then count a whole number of clock periods
            pipe.step(frame, state)
        with FlopCounterMode(display=False) as fc:
            for _ in range(ticks):
                pipe.step(frame, state)
    measured = fc.get_total_flops() / ticks
    assert abs(measured - expected) / expected < 0.01
    if clocks != [1, 1, 1, 1]:
        assert measured < sum(costs) * 0.99


def test_slow_clock_holds_its_output():
    pipe = _cnn_pipe(clocks=[1, 1, 1, 4])
    clip = torch.rand(1, 3, 12, 16, 16)
    with torch.no_grad():
        outs, delays = pipe.stream(clip)
    assert torch.equal(outs[4], outs[7]) and not torch.equal(outs[4], outs[8])
    assert delays[4] == 3 and delays[7] == 6 and delays[8] == 3


def _stage_outputs(pipe, clip):
    state = pipe.init_state()
    per_tick = []
    with torch.no_grad():
        for t in range(clip.shape[2]):
            pipe.step(clip[:, :, t], state)
            per_tick.append(list(state.buffers))
    return per_tick


@pytest.mark.parametrize("skips", [[], [(0, 2), (1, 3)]])
def test_skip_brings_frame_t_minus_l_plus_2(skips):
    """Unit l (1-indexed) at tick t depends on frame t-l+2 with skips (arXiv 2106.08318 Fig. 1), not without."""
    pipe = _cnn_pipe(skips=skips)
    torch.manual_seed(2)
    clip = torch.rand(1, 3, 10, 16, 16)
    t = 8
    for unit in (3, 4):  # 1-indexed units with an incoming skip
        f = t - unit + 2
        other = clip.clone()
        other[:, :, f] = torch.rand(1, 3, 16, 16)
        a, b = _stage_outputs(pipe, clip)[t][unit - 1], _stage_outputs(pipe, other)[t][unit - 1]
        assert (not torch.equal(a, b)) == bool(skips)


def test_from_sequential_validates():
    with pytest.raises(VideosslError, match="add up"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), stages=[2, 1])
    with pytest.raises(VideosslError, match="skip"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), skips=[(1, 2)])
    with pytest.raises(VideosslError, match="clocks"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), clocks=[1, 0, 1, 1])


def test_resnet_skips_get_adapters_and_forward_pools():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = tv.models.resnet18(num_classes=5)
    net.fc = nn.Identity()
    net.eval()
    pipe = PipelinedEncoder.from_sequential(net, stages=[5, 1, 1, 1, 2], skips=[(0, 2)],
                                            example_frame=torch.rand(1, 3, 32, 32)).eval()
    assert "0_2" in pipe.adapters and pipe.feature_dim == 512
    with torch.no_grad():
        y = pipe(torch.rand(2, 3, 6, 32, 32))
    assert y.shape == (2, 512) and pipe.structural_delay() == 3


def _lagged_pipe(lag=4, seed=0):
    torch.manual_seed(seed)
    return PipelinedEncoder.from_sequential(FrameCNN(width=8, depth=4, concat_skips=[0, 0, 0, 1]),
                                            skips=[(2, 3, lag)], skip_op="concat").eval()


def test_lagged_skip_brings_an_older_frame_to_the_top():
    """Top stage (index 3) at tick t reads stage 2 from tick t-1 (frame t-3) and, through the lag-4 delay
    line, from tick t-5 (frame t-7): its output depends on exactly those two frames."""
    pipe = _lagged_pipe(lag=4)
    torch.manual_seed(2)
    clip = torch.rand(1, 3, 14, 16, 16)
    t, base = 12, _stage_outputs(pipe, clip)[12][3]
    depends = []
    for f in range(t + 1):
        other = clip.clone()
        other[:, :, f] = torch.rand(1, 3, 16, 16)
        depends.append(not torch.equal(base, _stage_outputs(pipe, other)[t][3]))
    assert [f for f, d in enumerate(depends) if d] == [t - 7, t - 3]
    assert pipe.structural_delay() == 3 and pipe.fill_ticks() == 7  # the top waits for its delay line
    outs, delays = pipe.stream(clip)
    assert delays[:7] == [None] * 7 and delays[7:] == [3] * 7 and outs[6] is None and outs[7] is not None


def test_lagged_skip_on_a_constant_video_equals_the_sequential_model():
    pipe = _lagged_pipe(lag=2)
    frame = torch.rand(2, 3, 16, 16)
    outs, _ = pipe.stream(_constant(frame, 10))
    torch.testing.assert_close(outs[-1], pipe.sequential(frame), rtol=1e-5, atol=1e-6)
    assert outs[4] is None and outs[5] is not None  # tick 4: the delay line is still empty


def test_lagged_skips_validate():
    with pytest.raises(VideosslError, match="lag must be >= 0"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), skips=[(2, 3, -1)])
    with pytest.raises(VideosslError, match=r"need 0 <= src <= dst - 1"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), skips=[(3, 3, 1)])
    with pytest.raises(VideosslError, match="jumps over"):  # lag 0 is a plain skip: (2, 3) is the main path
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), skips=[(2, 3, 0)])
    with pytest.raises(VideosslError, match=r"\[src, dst\] or \[src, dst, lag\]"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), skips=[(1,)])
    with pytest.raises(VideosslError, match="concat_skips"):
        FrameCNN(depth=4, concat_skips=[1, 0, 0, 0])
    with pytest.raises(VideosslError, match="every clock at 1"):
        PipelinedEncoder.from_sequential(FrameCNN(depth=4), skips=[(2, 3, 2)], clocks=[1, 1, 1, 2])
