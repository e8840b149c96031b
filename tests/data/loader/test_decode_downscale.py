"""Decode-side downscaling (``data.decode_downscale``): frames decoded smaller when every view is much
smaller than the source, with the crops of the full-size path (same draws, boxes scaled)."""

from __future__ import annotations

import math

import pytest
import torch

from videossl.data.decoding import available_backends, open_video, resize_frames
from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.transforms import AugmentConfig, scale_box
from videossl.data.loader.views import decode_scale, needed_scale
from videossl.errors import VideosslError

CROPS = AugmentConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, output="uint8")


def test_needed_scale_hand_computed():
    v = ViewSpec(name="a", size=112, augment=AugmentConfig(scale=(0.3, 1.0), ratio=(0.5, 2.0)))
    # smallest crop side of a 360x640 frame: sqrt(360 * 640 * 0.3 / 2) = 185.9 px -> 112 / 185.9
    assert needed_scale(v, 360, 640) == pytest.approx(112 / math.sqrt(360 * 640 * 0.15))
    assert needed_scale(v, 640, 360) == needed_scale(v, 360, 640)  # rotation-invariant
    e = ViewSpec(name="e", size=112, resize=128, train=False)
    assert needed_scale(e, 360, 640) == pytest.approx(128 / 360)
    assert decode_scale([v, e], 360, 640) == pytest.approx(0.6025, abs=1e-3)
    big = ViewSpec(name="n", size=224)
    assert decode_scale([v, big], 360, 640) is None  # the 224-px view needs the full frames


@pytest.mark.parametrize("backend", available_backends())
def test_every_backend_returns_scaled_frames(backend, make_mp4):
    data = make_mp4(12, 160, 96, gop=4)
    with open_video(data, backend) as r:
        full = r.get_frames([0, 5, 9])
    with open_video(data, backend, scale=0.5) as r:
        half = r.get_frames([9, 0, 5])
        assert r.output_hw() == (48, 80)
    assert half.shape == (3, 48, 80, 3)
    ref = resize_frames(full, (48, 80))[[2, 0, 1]]
    assert (half.float() - ref.float()).abs().mean() < 3.0  # swscale (PyAV) vs torchvision: interpolation only
    with pytest.raises(VideosslError, match="scale"):
        open_video(data, backend, scale=1.5)


def test_scale_box_keeps_the_crop_inside_the_frame():
    box = torch.tensor([10, 300, 100, 340])
    assert scale_box(box, (360, 640), (180, 320)).tolist() == [5, 150, 50, 170]
    assert scale_box(torch.tensor([359, 639, 1, 1]), (360, 640), (90, 160)).tolist() == [89, 159, 1, 1]


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_downscaled_decode_gives_the_full_size_crops(tmp_path, make_shards, augment_on):
    make_shards(tmp_path, {"train": 8}, per_shard=4, size=(320, 192), frames=(12, 12))
    views = [ViewSpec(name="a", sampler="random", frames=4, stride=2, size=32, copies=2, augment=CROPS)]
    assert decode_scale(views, 192, 320) == pytest.approx(32 / math.sqrt(192 * 320 * 0.3 / 2))

    def epoch(downscale):
        ds = VideoShardDataset(str(tmp_path), views, split="train", batch_size=4, rank=0, world_size=1,
                               augment_on=augment_on, decode_downscale=downscale, decoder="pyav")
        return list(make_loader(ds))

    full, small = epoch(False), epoch(True)
    for bf, bs in zip(full, small, strict=True):
        assert bf["key"] == bs["key"]
        for vf, vs in zip(bf["views"], bs["views"], strict=True):
            assert vf.shape == vs.shape
            diff = (vf.float() - vs.float()).abs()
            assert diff.mean() < 4.0, diff.mean()  # same crops: only interpolation differs (uint8 levels)
    # a different draw is far away: the test can tell crops apart
    assert (full[0]["views"][0].float() - full[0]["views"][1].float()).abs().mean() > 8.0
