from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as F

from videossl.data.loader.transforms import (
    AugmentConfig,
    BatchVideoAugment,
    EvalTransform,
    VideoAugment,
    apply_hue,
    blur_clips,
    blur_kernel_size,
    draw_params,
)
from videossl.errors import VideosslError


def still_clip(t=6, h=48, w=64, seed=0):
    """A clip whose frames are all the same random image."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, h, w), generator=g, dtype=torch.uint8).repeat(t, 1, 1, 1)


ALL_ON = AugmentConfig(flip_p=0.5, jitter_p=1.0, grayscale_p=0.5, blur_p=1.0, solarize_p=0.5)


def test_same_params_on_every_frame():
    x = still_clip()
    aug = VideoAugment(32, ALL_ON)
    for seed in range(8):
        y = aug(x, torch.Generator().manual_seed(seed))
        assert y.shape == (6, 3, 32, 32) and y.dtype == torch.float32
        assert 0.0 <= y.min() and y.max() <= 1.0
        assert torch.equal(y, y[:1].expand_as(y))  # identical frames stay identical


def test_two_views_differ_and_seed_reproduces():
    x = still_clip()
    aug = VideoAugment(32)
    g = torch.Generator().manual_seed(0)
    a, b = aug(x, g), aug(x, g)
    assert (a - b).abs().mean() > 0.01
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), aug(x, torch.Generator().manual_seed(5)))


def test_uint8_output_and_normalise():
    x = still_clip()
    y = VideoAugment(16, AugmentConfig(output="uint8"))(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.uint8 and y.shape == (6, 3, 16, 16)
    # a crop covering the whole frame with every other step off reproduces the resize exactly
    ident = AugmentConfig(scale=(1, 1), ratio=(64 / 48, 64 / 48), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    z = VideoAugment(48, ident)(x[:, :, :, :], torch.Generator().manual_seed(0))
    ref = F.resize(x, [48, 48], antialias=True).float() / 255
    assert torch.allclose(z, (ref - 0.5) / 0.25, atol=1e-5)


def test_flip_is_a_mirror():
    x = still_clip()
    cfg = AugmentConfig(scale=(1, 1), ratio=(1, 1), flip_p=1.0, jitter_p=0, grayscale_p=0, blur_p=0, output="uint8")
    y = VideoAugment(48, cfg)(x[..., :48, :48].contiguous(), torch.Generator().manual_seed(0))
    assert torch.equal(y, x[..., :48, :48].flip(-1))


def test_blur_kernel_rule():
    assert blur_kernel_size(224) == 23 and blur_kernel_size(112) == 11 and blur_kernel_size(32) == 3


def test_grayscale_always_gives_equal_channels():
    cfg = AugmentConfig(grayscale_p=1.0, jitter_p=0, blur_p=0)
    y = VideoAugment(16, cfg)(still_clip(), torch.Generator().manual_seed(0))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])


def test_config_validation():
    with pytest.raises(VideosslError, match="scale"):
        AugmentConfig(scale=(0.0, 1.0))
    with pytest.raises(VideosslError, match="probability"):
        AugmentConfig(flip_p=1.5)
    with pytest.raises(VideosslError, match="mean and std"):
        AugmentConfig(mean=(0.5, 0.5, 0.5))
    with pytest.raises(VideosslError, match=r"\(T, 3, H, W\)"):
        VideoAugment(16)(torch.zeros(2, 4, 8, 8, dtype=torch.uint8))


def test_eval_three_crops_positions():
    # frame 48x96 -> resize short side to 32 -> 32x64; crops of 32: left at 0, 16, 32
    t = EvalTransform(32, crops=3, cfg=AugmentConfig(output="uint8"))
    assert t.resized_shape(48, 96) == (32, 64)
    assert t.offsets(32, 64) == [(0, 0), (0, 16), (0, 32)]
    assert t.offsets(40, 40) == [(0, 0), (4, 4), (8, 8)]  # top-left, centre, bottom-right
    x = torch.arange(64, dtype=torch.uint8).view(1, 1, 1, 64).expand(2, 3, 32, 64).contiguous()
    crops = t(x)  # no resize needed: columns are readable
    assert [int(c[0, 0, 0, 0]) for c in crops] == [0, 16, 32]
    assert all(c.shape == (2, 3, 32, 32) and c.dtype == torch.uint8 for c in crops)


def test_eval_centre_crop_after_resize():
    t = EvalTransform(16, resize=20)
    x = still_clip(2, 40, 80)
    (c,) = t(x)
    assert c.shape == (2, 3, 16, 16) and c.dtype == torch.float32
    assert t.resized_shape(40, 80) == (20, 40) and t.offsets(20, 40) == [(2, 12)]
    ref = F.resize(x, [20, 40], antialias=True)[..., 2:18, 12:28].float() / 255
    assert torch.allclose(c, ref)


def test_batched_consistent_within_sample_different_across():
    x = torch.stack([still_clip(4, seed=i) for i in range(3)] + [still_clip(4, seed=0)])  # samples 0 and 3 equal
    aug = BatchVideoAugment(24, ALL_ON)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == (4, 4, 3, 24, 24) and y.dtype == torch.float32
    assert torch.allclose(y, y[:, :1].expand_as(y), atol=1e-6)  # same params for all frames of a sample
    assert (y[0] - y[3]).abs().mean() > 0.01  # same input, different random params


def test_batched_identity_config_matches_input():
    # full-frame crop at the same size, all else off: the batched path is the identity
    cfg = AugmentConfig(scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0)
    x = torch.stack([still_clip(3, 32, 32, seed=i) for i in range(2)])
    y = BatchVideoAugment(32, cfg)(x)
    assert torch.allclose(y, x.float() / 255, atol=1e-5)


def test_batched_path_matches_single_clip_path_with_the_same_params():
    # full-frame crops (so the two resize kernels agree); flip/jitter/gray/blur/solarize all random
    cfg = AugmentConfig(scale=(1, 1), ratio=(1, 1), flip_p=0.5, jitter_p=1.0, grayscale_p=0.3, blur_p=0.7, solarize_p=0.5)
    x = torch.stack([still_clip(3, 32, 32, seed=i) for i in range(6)])
    prm = draw_params(cfg, 6, 32, 32, torch.Generator().manual_seed(3))
    assert prm["flip"].any() and not prm["flip"].all()
    y = BatchVideoAugment(32, cfg)(x, params=prm)
    single = VideoAugment(32, cfg)
    ref = torch.stack([single.apply(x[b], {k: v[b] for k, v in prm.items()}) for b in range(6)])
    assert torch.allclose(y, ref, atol=1e-4)


def test_separable_blur_equals_torchvision_blur():
    x = torch.rand(1, 2, 3, 20, 24)
    ours = blur_clips(x, 7, torch.tensor([1.3]))
    ref = F.gaussian_blur(x[0], [7, 7], [1.3, 1.3])
    assert torch.allclose(ours[0], ref, atol=1e-5)


def test_hue_rotation_keeps_grey_and_full_turn_is_identity():
    x = torch.rand(2, 1, 3, 4, 4) * 0.5 + 0.25
    grey = x[:, :, :1].expand(-1, -1, 3, -1, -1).contiguous()
    assert torch.allclose(apply_hue(grey.clone(), torch.tensor([0.3, -0.2])), grey, atol=1e-5)
    assert torch.allclose(apply_hue(x.clone(), torch.tensor([1.0, 0.0])), x, atol=1e-5)
    shifted = apply_hue(x.clone(), torch.tensor([0.25, 0.25]))
    assert (shifted - x).abs().mean() > 0.01
