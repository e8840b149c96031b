"""Encoders, heads, RandConv and temporal shift; torchvision-format weights load into ours."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision.models.video as tvv
from torch import nn

from videossl.core.checkpoint import load_state
from videossl.errors import VideosslError
from videossl.models import (
    MLP,
    RandConv,
    Small3D,
    TemporalShift,
    TSMResNet,
    VideoResNetEncoder,
    build_encoder,
    list_encoders,
    predictor,
    projector,
)

torch.set_num_threads(1)

TINY = {
    "r3d_18": dict(width=0.25),
    "r2plus1d_18": dict(width=0.25),
    "mc3_18": dict(width=0.25),
    "tsm_resnet": dict(layers=(1, 1, 1, 1), width=0.25),
    "small3d": dict(width=4),
}


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", sorted(TINY))
def test_encoder_returns_batch_by_feature_dim_and_backprops(name):
    torch.manual_seed(0)
    enc = build_encoder(name, **TINY[name])
    x = torch.randn(2, 3, 4, 32, 32)
    y = enc(x)
    assert y.shape == (2, enc.feature_dim)
    assert torch.isfinite(y).all()
    y.pow(2).sum().backward()
    first_conv = next(m for m in enc.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_registry_names_and_errors():
    tv = ["tv-mc3_18", "tv-mvit_v1_b", "tv-mvit_v2_s", "tv-r2plus1d_18", "tv-r3d_18", "tv-s3d", "tv-swin3d_b",
          "tv-swin3d_s", "tv-swin3d_t"]
    assert list_encoders() == ["audio-resnet50", "audio-small", "mc3_18", "r2plus1d_18", "r3d_18", "small3d", "tsm_resnet",
                               *tv, "vivit"]
    with pytest.raises(VideosslError, match="valid names: audio-resnet50, audio-small, mc3_18, r2plus1d_18, r3d_18, small3d"):
        build_encoder("resnet9000")
    with pytest.raises(VideosslError, match="bad arguments for encoder 'small3d'"):
        build_encoder("small3d", widht=3)
    with pytest.raises(VideosslError, match="depth"):
        build_encoder("tsm_resnet", depth=34)
    with pytest.raises(VideosslError, match="width"):
        build_encoder("r3d_18", width=0)


def test_wrong_input_layout_is_a_user_error():
    enc = Small3D(width=2)
    with pytest.raises(VideosslError, match=r"\(B, C=3, T, H, W\)"):
        enc(torch.randn(2, 4, 3, 16, 16))  # (B, T, C, H, W) by mistake


@pytest.mark.parametrize("arch", ["r3d_18", "r2plus1d_18", "mc3_18"])
def test_video_resnet_at_width_1_has_torchvision_layout(arch):
    with torch.device("meta"):
        ours = VideoResNetEncoder(arch)
        ref = getattr(tvv, arch)(weights=None)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert ours_shapes == ref_shapes
    assert ours.feature_dim == 512


def test_width_and_in_channels_scale_as_expected():
    with torch.device("meta"):
        full, half = VideoResNetEncoder("r3d_18"), VideoResNetEncoder("r3d_18", width=0.5)
        flow = VideoResNetEncoder("r3d_18", in_channels=2)
        tsm1, tsm2 = TSMResNet(), TSMResNet(width=2)
    assert (full.feature_dim, half.feature_dim) == (512, 256)
    # conv weights scale with width², BN params with width: the ratio sits just above 1/4
    assert 0.25 <= _nparams(half) / _nparams(full) < 0.26
    # flow stem: 2 input channels instead of 3 → one 64×3×7×7 input slice fewer
    assert _nparams(full) - _nparams(flow) == 64 * 3 * 7 * 7
    assert (tsm1.feature_dim, tsm2.feature_dim) == (2048, 4096)
    assert 3.9 < _nparams(tsm2) / _nparams(tsm1) <= 4.0
    assert Small3D(width=8).feature_dim == 32
    y = build_encoder("mc3_18", width=0.25, in_channels=1)(torch.randn(1, 1, 2, 32, 32))
    assert y.shape == (1, 128)


def test_tsm50_matches_resnet_v2_50_and_runs_on_one_tiny_sample():
    with torch.device("meta"):
        tsm = TSMResNet()
        ref = timm.create_model("resnetv2_50", num_classes=0)
    assert _nparams(tsm) == _nparams(ref) == 23_500_352  # ResNet-50 without fc
    assert [len(s.blocks) for s in tsm.stages] == [3, 4, 6, 3]
    assert sum(isinstance(m, TemporalShift) for m in tsm.modules()) == 16
    torch.manual_seed(0)
    tsm = TSMResNet().eval()
    with torch.no_grad():
        y = tsm(torch.randn(1, 3, 2, 32, 32))
    assert y.shape == (1, 2048) and torch.isfinite(y).all()


def test_temporal_shift_moves_one_eighth_each_way_with_zero_padding():
    n, t, c = 2, 3, 16  # fold = 16 // 8 = 2 channels each way
    x = torch.zeros(n * t, c, 1, 1)
    for b in range(n):
        for tt in range(t):
            for cc in range(c):
                x[b * t + tt, cc] = 1000 * b + 100 * tt + cc + 1
    shift = TemporalShift()
    shift.num_frames = t
    out = shift(x)
    for b in range(n):
        for tt in range(t):
            for cc in range(c):
                got = out[b * t + tt, cc, 0, 0].item()
                if cc < 2:  # forward in time: frame t shows frame t-1
                    want = 0.0 if tt == 0 else 1000 * b + 100 * (tt - 1) + cc + 1
                elif cc < 4:  # backward in time: frame t shows frame t+1
                    want = 0.0 if tt == t - 1 else 1000 * b + 100 * (tt + 1) + cc + 1
                else:
                    want = 1000 * b + 100 * tt + cc + 1
                assert got == want, (b, tt, cc, got, want)


def test_tsm_block_is_pre_activation_with_shift_after_the_shortcut():
    torch.manual_seed(0)
    enc = TSMResNet(layers=(1, 1, 1, 1), width=0.25).eval()
    assert [n for n, _ in enc.stem.named_children()] == ["conv", "pool"]  # no BN/ReLU in the stem
    block = enc.stages[1].blocks[0]
    seen = {}
    block.norm1.register_forward_hook(lambda m, i, o: seen.__setitem__("preact", o.clone()))
    block.downsample.register_forward_hook(lambda m, i, o: seen.__setitem__("short_in", i[0].clone()))
    block.conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("conv1_in", i[0].clone()))
    with torch.no_grad():
        enc(torch.randn(2, 3, 4, 32, 32))
    assert (seen["preact"] >= 0).all()  # BN → ReLU first
    torch.testing.assert_close(seen["short_in"], seen["preact"])  # projection on the pre-activation
    ref = TemporalShift()
    ref.num_frames = 4
    torch.testing.assert_close(seen["conv1_in"], ref(seen["preact"]))  # shift only on the residual path
    assert not torch.equal(seen["conv1_in"], seen["preact"])


def test_tsm_is_time_order_sensitive_only_through_the_shift():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 32, 32)
    rev = x.flip(2)
    shifted = TSMResNet(layers=(1, 1, 1, 1), width=0.25).eval()
    no_shift = TSMResNet(layers=(1, 1, 1, 1), width=0.25, shift_fraction=0.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(no_shift(x), no_shift(rev))
        assert not torch.allclose(shifted(x), shifted(rev), atol=1e-4)
        # any T at eval: T=1 works
        assert shifted(x[:, :, :1]).shape == (2, 512)


def test_sync_batchnorm_conversion_keeps_the_relus():
    torch.manual_seed(0)
    enc = TSMResNet(layers=(1, 1, 1, 1), width=0.25).eval()
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        before = enc(x)
        conv = nn.SyncBatchNorm.convert_sync_batchnorm(enc).eval()
        after = conv(x)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in conv.modules())
    torch.testing.assert_close(before, after)


def test_projector_and_predictor_follow_brave():
    proj, pred = projector(32, hidden_dim=16, out_dim=8), predictor(8, hidden_dim=16, out_dim=8)
    assert [type(m) for m in proj] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert [type(m) for m in pred] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (proj[0].in_features, proj[0].out_features, proj[3].out_features) == (32, 16, 8)
    torch.manual_seed(0)
    z = proj(torch.randn(64, 32) * 5 + 3)
    # final BN (train mode): each output dimension is standardised over the batch
    torch.testing.assert_close(z.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    assert pred(z).shape == (64, 8)
    assert isinstance(MLP(4, 4, 4), nn.Sequential)


# --------------------------------------------------------------------------- RandConv


def test_randconv_keeps_shape_and_one_kernel_per_clip():
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(3, 1, 16, 16)
    clip = frame.expand(3, 5, 16, 16)  # 5 identical frames
    x = torch.stack([clip, clip])  # two identical clips
    y = RandConv()(x, generator=g)
    assert y.shape == x.shape
    for b in range(2):
        for t in range(1, 5):
            torch.testing.assert_close(y[b, :, t], y[b, :, 0])  # same kernel for every frame
    assert not torch.allclose(y[0], y[1])  # each clip draws its own kernel


def test_randconv_matches_per_frame_conv2d_with_given_kernels():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 3, 9, 9)
    kernels = [torch.randn(3, 3, 1, 1), torch.randn(3, 3, 5, 5)]
    y = RandConv()(x, kernels=kernels)
    # clip 0, k = 1: a per-pixel 3×3 channel mix
    torch.testing.assert_close(y[0], torch.einsum("oc,cthw->othw", kernels[0][:, :, 0, 0], x[0]))
    # clip 1, k = 5: every frame convolved with zero "same" padding
    for t in range(3):
        torch.testing.assert_close(y[1, :, t], F.conv2d(x[1, :, t][None], kernels[1], padding=2)[0])


def test_randconv_kernel_sizes_and_he_normal_scale():
    rc = RandConv()
    g = torch.Generator().manual_seed(0)
    ks = rc.sample_kernels(600, generator=g)
    sizes = {w.shape[-1] for w in ks}
    assert sizes == {1, 3, 5, 7, 9, 11}
    assert all(w.shape == (3, 3, w.shape[-1], w.shape[-1]) for w in ks)
    big = torch.cat([w.flatten() for w in ks if w.shape[-1] == 11])
    want = math.sqrt(2.0 / (3 * 11 * 11))
    assert abs(big.std().item() / want - 1) < 0.05  # truncated normal rescaled to He std
    assert big.abs().max().item() <= 2 * want / 0.87962566103423978 + 1e-6  # truncated at 2σ
    with pytest.raises(VideosslError, match="odd"):
        RandConv(kernel_sizes=(2, 3))


def test_torchvision_format_weights_load_with_empty_prefix():
    torch.manual_seed(0)
    ref = tvv.mc3_18(weights=None)
    ours = VideoResNetEncoder("mc3_18")
    missing, unexpected = load_state(
        ours, ref.state_dict(), key_map=lambda k: None if k.startswith("fc.") else k
    )
    assert (missing, unexpected) == ([], [])
    ref.fc = nn.Identity()
    ref.eval(), ours.eval()
    x = torch.randn(1, 3, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
