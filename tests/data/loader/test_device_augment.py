"""Device-side augmentation (``data.augment_on: device``) against the all-in-workers path.

The workers draw every parameter with the same generator calls in both placements, so the device path
must give the workers path's outputs up to float rounding, be reproducible from the seed bit for bit,
keep every frame of a clip under the same parameters, and carry the parameter distribution of the config.
"""

from __future__ import annotations

import math

import pytest
import torch

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.datamodule import VideoDataModule
from videossl.data.loader.transforms import PHOTOMETRIC_PARAMS, AugmentConfig, DevicePhotometric
from videossl.errors import VideosslError

# every photometric step switched on often, one view normalised, one left at BraVe's defaults
ALL_ON = AugmentConfig(jitter_p=0.8, grayscale_p=0.3, blur_p=0.7, solarize_p=0.3)
NORM = AugmentConfig(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225))
VIEWS = [
    ViewSpec(name="a", sampler="random", frames=4, stride=2, size=24, copies=2, augment=ALL_ON),
    ViewSpec(name="b", sampler="random", frames=3, stride=1, size=16, augment=NORM),
]


def _dataset(shard_set, augment_on, views=VIEWS, seed=0):
    return VideoShardDataset(str(shard_set), views, split="train", batch_size=4, seed=seed, rank=0, world_size=1,
                             augment_on=augment_on)


def _datamodule(shard_set, augment_on, views=VIEWS):
    dm = VideoDataModule(str(shard_set), batch_size=4, num_workers=0, val_split=None, test_split=None,
                         train_views=views, rank=0, world_size=1, augment_on=augment_on)
    dm.setup("fit")
    return dm


def _epoch(dm):
    """Batches as a training step sees them: through the loader, then the after-transfer hook."""
    return [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]


def test_device_path_equals_the_workers_path(shard_set):
    workers, device = _epoch(_datamodule(shard_set, "workers")), _epoch(_datamodule(shard_set, "device"))
    assert len(workers) == len(device) == 6
    for bw, bd in zip(workers, device, strict=True):
        assert bw["key"] == bd["key"] and bw["view_names"] == bd["view_names"] == ["a", "a", "b"]
        assert all(p is None for p in bd["augment"])  # applied exactly once
        for vw, vd in zip(bw["views"], bd["views"], strict=True):
            assert vw.dtype == vd.dtype == torch.float32 and vw.shape == vd.shape
            torch.testing.assert_close(vd, vw, atol=2e-5, rtol=0)
    # the normalised view is normalised in both placements
    b = torch.cat([x["views"][2] for x in device])
    assert b.min() < -0.5 and b.max() > 1.5


def test_workers_return_uint8_crops_and_carry_the_photometric_parameters(shard_set):
    batch = next(iter(make_loader(_dataset(shard_set, "device"))))
    assert [v.dtype for v in batch["views"]] == [torch.uint8] * 3
    for prm, spec in zip(batch["augment"], [0, 0, 1], strict=True):
        assert set(prm) == {*PHOTOMETRIC_PARAMS, "view"}
        assert prm["view"].tolist() == [spec] * 4 and prm["brightness"].shape == (4,)
    # eval datasets never defer: the flag only concerns training views
    ev = [ViewSpec(name="e", sampler="uniform", frames=4, size=16, train=False)]
    eb = next(iter(make_loader(_dataset(shard_set, "device", views=ev))))
    assert eb["augment"] == [None] and eb["views"][0].dtype == torch.float32


def test_device_path_is_bitwise_reproducible_from_the_seed(shard_set):
    one, two = _epoch(_datamodule(shard_set, "device")), _epoch(_datamodule(shard_set, "device"))
    for b1, b2 in zip(one, two, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(b1["views"], b2["views"], strict=True))
    other = next(iter(make_loader(_dataset(shard_set, "device", seed=1))))
    assert not torch.equal(other["views"][0], one[0]["views"][0])


def test_every_frame_of_a_clip_gets_the_same_parameters():
    # a static clip: after any per-clip augmentation all frames are still identical
    frame = torch.randint(0, 256, (1, 1, 3, 24, 24), dtype=torch.uint8)
    crops = frame.expand(6, 5, 3, 24, 24).contiguous()
    g = torch.Generator().manual_seed(3)
    from videossl.data.loader.transforms import draw_params
    prm = draw_params(ALL_ON, 6, 24, 24, g)
    out = DevicePhotometric(24, ALL_ON)(crops, prm)
    assert torch.equal(out, out[:, :1].expand_as(out))
    assert not torch.equal(out[0], out[1])  # but samples differ


def test_carried_parameters_follow_the_config_distribution(shard_set):
    cfg = AugmentConfig(jitter_p=0.8, grayscale_p=0.2, blur_p=0.5, solarize_p=0.3, brightness=0.2)
    views = [ViewSpec(name="a", sampler="random", frames=2, stride=1, size=8, copies=8, augment=cfg)]
    prm = [p for b in make_loader(_dataset(shard_set, "device", views=views)) for p in b["augment"]]
    n = sum(len(p["jitter"]) for p in prm)  # 24 samples x 8 copies
    for key, p in (("jitter", 0.8), ("gray", 0.2), ("blur", 0.5), ("solarize", 0.3)):
        frac = float(torch.cat([q[key] for q in prm]).float().mean())
        assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n), (key, frac)
    bright = torch.cat([q["brightness"] for q in prm])
    assert bright.abs().max() <= 0.2 and abs(float(bright.mean())) < 4 * 0.2 / math.sqrt(3 * n)


def test_auto_is_workers_on_cpu_and_bad_values_are_refused(shard_set):
    dm = _datamodule(shard_set, "auto")
    assert dm.resolved_augment_on() == "workers" and dm.datasets["fit"].augment_on == "workers"
    with pytest.raises(VideosslError, match="augment_on"):
        VideoDataModule(str(shard_set), augment_on="gpu")
    with pytest.raises(VideosslError, match="augment_on"):
        _dataset(shard_set, "gpu")
    with pytest.raises(VideosslError, match="uint8"):
        DevicePhotometric(8)(torch.zeros(1, 2, 3, 8, 8), {})
