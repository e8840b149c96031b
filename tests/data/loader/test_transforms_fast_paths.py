"""The CPU-cost shortcuts of the augmentation (issue #16 item 7) against the paths they replace.

``draw_params`` takes every draw of a clip in one ``torch.rand`` call: the parameters must be those of the
former one-call-per-group code (kept here as the reference) for any seed, count, frame size and config.
``resized_crop`` calls torch's uint8 kernel without torchvision's dispatch: bitwise equal to
``F.resized_crop`` with the same output layout.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from videossl.data.loader.transforms import AugmentConfig, VideoAugment, draw_params, resized_crop


def _rand(shape, g):
    return torch.rand(shape, generator=g, dtype=torch.float64).numpy()


def _reference_boxes(n, height, width, scale, ratio, g):  # the per-group draws of commit 2d5d7dd
    area, tries = height * width, 10
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * _rand((n * tries,), g).reshape(n, tries))
    logr = lo + (hi - lo) * torch.rand(n * tries, generator=g, dtype=torch.float64)
    ar = torch.exp(logr).numpy().reshape(n, tries)
    w, h = np.round(np.sqrt(target * ar)), np.round(np.sqrt(target / ar))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    first = np.where(ok.any(1), ok.argmax(1), -1)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    rows, found = np.arange(n), first >= 0
    hh = np.where(found, h[rows, np.maximum(first, 0)], float(fh))
    ww = np.where(found, w[rows, np.maximum(first, 0)], float(fw))
    u = _rand((n, 2), g)
    top = np.where(found, np.floor(u[:, 0] * (height - hh + 1)), np.floor((height - hh) / 2 + 0.5))
    left = np.where(found, np.floor(u[:, 1] * (width - ww + 1)), np.floor((width - ww) / 2 + 0.5))
    return torch.from_numpy(np.stack([top, left, hh, ww], 1).astype(np.int64))


def _reference_params(cfg, n, height, width, g):
    def uniform(lo, hi):
        return torch.from_numpy(lo + (hi - lo) * _rand((n,), g))

    p = _rand((n, 5), g)
    return {
        "box": _reference_boxes(n, height, width, cfg.scale, cfg.ratio, g),
        "flip": torch.from_numpy(p[:, 0] < cfg.flip_p), "jitter": torch.from_numpy(p[:, 1] < cfg.jitter_p),
        "brightness": uniform(-cfg.brightness, cfg.brightness), "saturation": uniform(1 - cfg.saturation, 1 + cfg.saturation),
        "contrast": uniform(1 - cfg.contrast, 1 + cfg.contrast), "hue": uniform(-cfg.hue, cfg.hue),
        "gray": torch.from_numpy(p[:, 2] < cfg.grayscale_p), "blur": torch.from_numpy(p[:, 3] < cfg.blur_p),
        "sigma": uniform(cfg.blur_sigma[0], cfg.blur_sigma[1]), "solarize": torch.from_numpy(p[:, 4] < cfg.solarize_p),
    }


CONFIGS = [AugmentConfig(), AugmentConfig(scale=(0.08, 1.0), ratio=(0.75, 1.333), hue=0.5, solarize_p=0.3),
           AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0))]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_one_call_draws_equal_the_per_group_draws(cfg):
    sizes = [(256, 602), (272, 640), (64, 64), (48, 200), (300, 40), (1, 1)]
    for seed in range(300):
        n = (1, 2, 7)[seed % 3]
        h, w = sizes[seed % len(sizes)]
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ref, got = _reference_params(cfg, n, h, w, g1), draw_params(cfg, n, h, w, g2)
        assert ref.keys() == got.keys()
        for k in ref:
            assert got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k]), (seed, k)
        assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))  # the generators moved alike


def test_global_rng_draws_equal_too():
    torch.manual_seed(5)
    ref = _reference_params(CONFIGS[0], 3, 256, 602, None)
    torch.manual_seed(5)
    got = draw_params(CONFIGS[0], 3, 256, 602)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_resized_crop_equals_torchvision_bitwise_with_the_same_layout():
    g = torch.Generator().manual_seed(0)
    for i in range(120):
        t, (h, w) = (1, 2, 16)[i % 3], [(256, 602), (48, 64), (37, 91), (120, 120)][i % 4]
        clip = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
        if i % 5 == 0:
            clip = clip.contiguous()  # NCHW input: torchvision's path
        size = (112, 48, 32, 16)[i % 4]
        box = tuple(int(v) for v in draw_params(AugmentConfig(), 1, h, w, g)["box"][0])
        if i % 7 == 0:
            box = (0, 0, min(h, size), min(w, size))  # no resize when the crop is already the size
        ref = F.resized_crop(clip, *box, [size, size], antialias=True)
        got = resized_crop(clip, box, size)
        assert torch.equal(got, ref) and got.stride() == ref.stride(), (i, box, size)
    x = torch.rand(4, 3, 40, 50)
    assert torch.equal(resized_crop(x, (3, 4, 20, 30), 16), F.resized_crop(x, 3, 4, 20, 30, [16, 16], antialias=True))


def test_crop_flip_and_apply_use_it():
    clip = torch.randint(0, 256, (8, 64, 96, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    aug = VideoAugment(32, AugmentConfig(output="uint8"))
    prm = aug.draw(clip, torch.Generator().manual_seed(1))
    top, left, h, w = (int(v) for v in prm["box"])
    ref = F.resized_crop(clip, top, left, h, w, [32, 32], antialias=True)
    ref = F.horizontal_flip(ref) if prm["flip"] else ref
    assert torch.equal(aug.crop_flip(clip, prm), ref)


def test_crop_flip_equals_torchvision_bitwise_with_the_same_layout_flipped_or_not():
    g = torch.Generator().manual_seed(2)
    aug = VideoAugment(112, AugmentConfig(output="uint8"))
    flips = set()
    for i in range(40):
        clip = torch.randint(0, 256, ((1, 16)[i % 2], 256, 602, 3), dtype=torch.uint8, generator=g).permute(0, 3, 1, 2)
        prm = aug.draw(clip, g)
        top, left, h, w = (int(v) for v in prm["box"])
        ref = F.resized_crop(clip, top, left, h, w, [112, 112], antialias=True)
        ref = F.horizontal_flip(ref) if prm["flip"] else ref
        got = aug.crop_flip(clip, prm)
        assert torch.equal(got, ref) and got.stride() == ref.stride(), i
        flips.add(bool(prm["flip"]))
    assert flips == {True, False}
