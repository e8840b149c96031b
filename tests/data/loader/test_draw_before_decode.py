"""The reader draws a sample's augmentation parameters before its decode (torchcodec knows the frame size from
the metadata): every batch must equal the one drawn after the decode, bit for bit, in both placements, with
decode-side downscaling too; a sample whose decode fails draws nothing; frames of another size than the
metadata's are drawn for afresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videossl.data.decoding import TorchCodecReader, VideoReader, available_backends
from videossl.data.loader import VideoShardDataset, ViewSpec
from videossl.data.loader.skips import SkipSample
from videossl.data.loader.transforms import AugmentConfig, VideoAugment

pytestmark = pytest.mark.skipif("torchcodec" not in available_backends(), reason="torchcodec does not load here")

ALL_ON = AugmentConfig(jitter_p=0.8, grayscale_p=0.3, blur_p=0.7, solarize_p=0.3)
VIEWS = [
    ViewSpec(name="a", sampler="random", frames=4, stride=2, size=24, copies=2, augment=ALL_ON),
    ViewSpec(name="b", sampler="random", frames=3, stride=1, size=16),
    ViewSpec(name="e", sampler="random", frames=2, stride=1, size=16, train=False, crops=3),
]


def _batches(shard_set, augment_on, before, seed=0, downscale=False, decoder="auto"):
    ds = VideoShardDataset(str(shard_set), VIEWS, split="train", batch_size=4, seed=seed, rank=0, world_size=1,
                           augment_on=augment_on, decode_downscale=downscale, decoder=decoder)
    ds.draw_before_decode = before
    calls = []
    inner = ds._draw_before_decode
    ds._draw_before_decode = lambda *a: calls.append(1) or inner(*a)
    return list(ds), len(calls)


def _equal(a, b):
    """Bitwise equal batches: every tensor (values, dtype, shape, strides), every other value."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
                and torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("augment_on", ["workers", "device"])
@pytest.mark.parametrize("seed", [0, 3])
def test_draws_before_the_decode_give_the_same_batches(shard_set, augment_on, seed):
    before, n_before = _batches(shard_set, augment_on, True, seed)
    after, n_after = _batches(shard_set, augment_on, False, seed)
    assert n_before == 24 and n_after == 0  # every sample took the new path, and none the old one
    assert len(before) == len(after) == 6
    assert all(_equal(x, y) for x, y in zip(before, after, strict=True))
    # the test can tell draws apart: the two copies of view "a" differ
    assert not torch.equal(before[0]["views"][0], before[0]["views"][1])


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_with_decode_side_downscaling(tmp_path, make_shards, augment_on):
    make_shards(tmp_path, {"train": 8}, per_shard=4, size=(320, 192), frames=(12, 12))
    before, n = _batches(tmp_path, augment_on, True, downscale=True)
    after, _ = _batches(tmp_path, augment_on, False, downscale=True)
    assert n == 8 and len(before) == 2
    assert all(_equal(x, y) for x, y in zip(before, after, strict=True))


def test_a_failed_decode_draws_nothing(shard_set, monkeypatch):
    ds = VideoShardDataset(str(shard_set), VIEWS, split="train", batch_size=4, rank=0, world_size=1,
                           augment_on="device", decoder="torchcodec")
    raw = next(iter(ds._read(ds.shard_order(0), 0, 1, 0, 0)))

    gen = torch.Generator().manual_seed(5)
    start = gen.get_state()

    def broken(self, uniq):
        raise RuntimeError("corrupt packet")

    monkeypatch.setattr(TorchCodecReader, "_decode_sorted", broken)
    with pytest.raises(SkipSample, match="decode error"):
        ds.process(raw, np.random.default_rng(0), gen)
    assert torch.equal(gen.get_state(), start)  # the draws taken before the decode were put back
    monkeypatch.undo()
    ok = ds.process(raw, np.random.default_rng(0), gen)
    assert len(ok["views"]) == 6 and not torch.equal(gen.get_state(), start)


def test_frames_of_another_size_are_drawn_for_again(shard_set, monkeypatch):
    after, _ = _batches(shard_set, "device", False)
    real = VideoReader.output_hw
    monkeypatch.setattr(VideoReader, "output_hw", lambda self: (real(self)[0] + 8, real(self)[1] + 2))
    late = []
    draw = VideoAugment.draw
    monkeypatch.setattr(VideoAugment, "draw", lambda self, *a: late.append(1) or draw(self, *a))
    before, n = _batches(shard_set, "device", True)
    assert n == 24 and len(late) == 24 * 3  # drawn before for the wrong size, then again after the decode
    assert all(_equal(x, y) for x, y in zip(before, after, strict=True))
