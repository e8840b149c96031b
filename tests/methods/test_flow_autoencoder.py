"""Flow autoencoder: sampler conventions, GT warping, presets, streaming, errors, a short training."""

import numpy as np
import pytest
import torch

from videossl.data.shards.synthetic import make_config, render, sample_params
from videossl.errors import VideosslError
from videossl.methods.flow_autoencoder import FlowAutoencoder
from videossl.models.convlstm import FlowEncoder
from videossl.models.warp import backward_warp, backward_warp_norm, flow_px_to_norm


@pytest.mark.parametrize("align_corners", [True, False])
def test_constant_flow_shifts_left(align_corners):
    # backward warp: out(x, y) = img(x + 3, y): a flow of (+3, 0) px moves the picture 3 px LEFT
    img = torch.arange(10 * 12, dtype=torch.float32).view(1, 1, 10, 12)
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0] = 3.0
    out = backward_warp(img, flow, align_corners=align_corners, padding_mode="zeros")
    assert torch.allclose(out[..., :9], img[..., 3:], atol=1e-4)
    assert torch.all(out[..., 9:] == 0)  # sources beyond the right edge: zero padding
    # (0, +2): the picture moves 2 px up
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 1] = 2.0
    out = backward_warp(img, flow, align_corners=align_corners)
    assert torch.allclose(out[..., :8, :], img[..., 2:, :], atol=1e-4)
    # the paper's sampler (normalised displacement added to the base grid) agrees
    flow[:, 1] = 0.0
    flow[:, 0] = 3.0
    out_n = backward_warp_norm(img, flow_px_to_norm(flow, align_corners), align_corners=align_corners)
    assert torch.allclose(out_n[..., :9], img[..., 3:], atol=1e-3)


def test_gt_backward_flow_reproduces_next_frame():
    cfg = make_config(num_frames=3, size=64, noise_std=(0.0, 0.0), distractor_prob=0.0, drift_prob=0.0)
    for idx in (0, 1, 3):  # translate left / right / down
        p = sample_params(cfg, idx, idx % 8, seed=0)
        r = render(p)
        f = torch.from_numpy(r.clean).permute(0, 3, 1, 2).float() / 255
        bwd = torch.from_numpy(r.backward).permute(0, 3, 1, 2)
        warped = backward_warp(f[0:1], bwd[0:1])[0]
        fg = torch.from_numpy((r.mask[1] == 1) & (r.mask[0] == 1))
        err = (warped - f[1]).abs().mean(0)[fg]
        copy = (f[0] - f[1]).abs().mean(0)[fg]
        wrong = (backward_warp(f[0:1], -bwd[0:1])[0] - f[1]).abs().mean(0)[fg]
        assert err.median() < 0.01
        assert err.mean() < copy.mean() and err.mean() < 0.5 * wrong.mean()
        assert (err < 0.02).float().mean() > 0.8  # exact up to bilinear blur of texture edges


def test_paper_parameter_count():
    m = FlowAutoencoder(preset="paper", in_channels=1)
    # spec §3: ≈ 1,035,067 (recalled); our count 1,035,071 — within the ±0.1 % tolerance
    assert abs(m.count_parameters() - 1_035_067) <= 0.001 * 1_035_067
    assert m.count_parameters() == 1_035_071
    assert m.encoder.feature_dim == 64 and m.encoder.stride == 2


def test_identity_at_init_and_shapes():
    torch.manual_seed(0)
    clip = torch.rand(2, 3, 5, 16, 16)
    m = FlowAutoencoder(preset="modern", in_channels=3)
    res = m.forecast(clip)
    assert res["pred"].shape == (2, 3, 3, 16, 16) and res["flow"].shape == (2, 3, 2, 16, 16)
    assert res["steps"] == [1, 2, 3]
    assert torch.all(res["flow"] == 0) and torch.allclose(res["pred"], res["source"], atol=1e-5)  # zero flow = copy frame t
    p = FlowAutoencoder(preset="paper")
    r = p.forecast(clip)
    assert r["pred"].shape == (2, 3, 1, 16, 16) and torch.all(r["flow"] == 0)
    assert FlowAutoencoder(preset="code").forecast(clip)["pred"].shape == (2, 3, 1, 16, 16)


def test_motion_input_is_the_scaled_temporal_difference():
    enc = FlowEncoder(preset="modern", in_channels=3, motion_input=True, motion_gain=4.0)
    assert enc.stages[0][0].in_channels == 6
    frames = torch.rand(2, 4, 3, 8, 8)
    x = enc.frame_inputs(frames)
    assert x.shape == (2, 4, 6, 8, 8)
    assert torch.equal(x[:, :, :3], frames)
    assert torch.all(x[:, 0, 3:] == 0)  # no frame before the first: zero difference
    assert torch.allclose(x[:, 2, 3:], 4.0 * (frames[:, 2] - frames[:, 1]))
    prev = torch.rand(2, 3, 8, 8)  # streaming: the previous frame comes from the state
    assert torch.allclose(enc.frame_inputs(frames[:, :1], prev)[:, 0, 3:], 4.0 * (frames[:, 0] - prev))
    assert torch.equal(FlowEncoder(preset="modern", in_channels=3).frame_inputs(frames), frames)


@pytest.mark.parametrize("motion_input", [False, True])
def test_streaming_matches_batch(motion_input):
    torch.manual_seed(0)
    for preset, ch in (("paper", 1), ("modern", 3)):
        enc = FlowEncoder(preset=preset, in_channels=ch, motion_input=motion_input)
        m = FlowAutoencoder(encoder=enc).eval()
        with torch.no_grad():  # non-zero flows so the comparison means something
            for p in m.flow_head.parameters():
                p.add_(0.05 * torch.randn_like(p))
        clip = torch.rand(1, 3, 5, 16, 16)
        with torch.no_grad():
            res = m.forecast(clip)
            state = m.init_state(clip)
            for t in range(4):
                out, state = m.step(clip[:, :, t], state)
                assert out["valid"] == (t >= 1)
                if t >= 1:
                    assert torch.allclose(out["pred"], res["pred"][:, t - 1], atol=1e-5)
                    assert torch.allclose(out["flow"], res["flow"][:, t - 1], atol=1e-5)
            assert out["features"].shape == (1, m.encoder.feature_dim)


def test_errors():
    m = FlowAutoencoder(preset="paper", in_channels=1)
    with pytest.raises(VideosslError, match="too short"):
        m.forecast(torch.rand(1, 1, 2, 16, 16))  # burn-in 1 needs >= 3 frames
    with pytest.raises(VideosslError, match="not divisible by the encoder stride 2"):
        m.forecast(torch.rand(1, 1, 4, 15, 16))
    with pytest.raises(VideosslError, match="channel mismatch"):
        FlowAutoencoder(preset="modern", in_channels=3).forecast(torch.rand(1, 1, 4, 16, 16))
    with pytest.raises(VideosslError, match="in_channels=3 but the encoder takes 1"):
        FlowAutoencoder(encoder=FlowEncoder(in_channels=1), in_channels=3)
    with pytest.raises(VideosslError, match="occlusion masks need the modern"):
        FlowAutoencoder(preset="paper", occlusion="outside")


def _translating_batch(n=2, size=32, frames=5):
    cfg = make_config(num_frames=frames, size=size, noise_std=(0.0, 0.0), distractor_prob=0.0, drift_prob=0.0,
                      speed=(3.0, 3.5), radius=(12.0, 14.0))
    clips, flows, masks = [], [], []
    for i in range(n):
        r = render(sample_params(cfg, i, i % 4, seed=1))  # translations only
        clips.append(torch.from_numpy(r.clean).permute(3, 0, 1, 2).float() / 255)
        flows.append(torch.from_numpy(r.backward).permute(0, 3, 1, 2))
        masks.append(torch.from_numpy(r.mask.astype(np.int64)))
    return torch.stack(clips), torch.stack(flows), torch.stack(masks)


def test_short_training_beats_zero_flow():
    # a deliberately small modern model (CPU seconds); the full-size run is in BENCHMARKS.md
    torch.manual_seed(0)
    clip, gt, masks = _translating_batch()
    enc = FlowEncoder(preset="modern", in_channels=3, channels=[8, 8], hidden_channels=8)
    m = FlowAutoencoder(encoder=enc, smooth_weight=0.02)
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    for _ in range(25):
        res = m.forecast(clip)
        loss = m.total_loss(m.loss_terms(res))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        res = m.forecast(clip)
    g = gt[:, 1:]
    fg = masks[:, 2:] == 1
    epe = (res["flow"] - g).norm(dim=2)[fg].mean()
    zero = g.norm(dim=2)[fg].mean()
    assert epe < 0.8 * zero, (float(epe), float(zero))


def test_pair_mode_flow_depends_on_frame_t_plus_1_forecast_mode_does_not():
    torch.manual_seed(0)
    clip, _, _ = _translating_batch(n=1, frames=4)
    enc = FlowEncoder(preset="modern", in_channels=3, channels=[8, 8], hidden_channels=8)
    changed = clip.clone()
    changed[:, :, 2] = torch.rand_like(changed[:, :, 2])  # replace frame 2: the target of the forecast from t = 1
    flows = {}
    m = FlowAutoencoder(encoder=enc, smooth_weight=0.02, mode="pair").eval()
    with torch.no_grad():
        for prm in m.flow_head.parameters():  # the flow head starts at zero flow: give it weights
            prm.normal_(0, 0.1)
    for mode in ("forecast", "pair"):
        m.mode = mode
        with torch.no_grad():
            a, b = m.forecast(clip)["flow"][:, 0], m.forecast(changed)["flow"][:, 0]  # flow for t = 1 -> 2
        flows[mode] = (a - b).abs().max().item()
    assert flows["forecast"] == 0.0  # a forecast never sees frame t+1
    assert flows["pair"] > 0.0  # the estimator does
    with pytest.raises(VideosslError, match="mode"):
        FlowAutoencoder(encoder=enc, mode="estimate")
    with pytest.raises(VideosslError, match="pair"):
        FlowAutoencoder(encoder=enc, mode="pair").step(clip[:, :, 0], {})
