from __future__ import annotations

import shutil
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch

from videossl.data.loader import (
    SkipLog,
    VideoShardDataset,
    ViewSpec,
    check_ram,
    make_loader,
    ram_estimate,
    resolve_shards,
)
from videossl.data.loader.datamodule import VideoDataModule
from videossl.data.loader.partition import WorkerPlan, plan_worker
from videossl.data.loader.transforms import AugmentConfig
from videossl.data.shards.format import json_bytes, load_manifest, write_manifest
from videossl.errors import VideosslError

SMALL = [ViewSpec(name="a", sampler="random", frames=4, stride=2, size=16, copies=2, augment=AugmentConfig(output="uint8"))]
EVAL = [ViewSpec(name="e", sampler="uniform", frames=4, stride=2, size=16, train=False, augment=AugmentConfig(output="uint8"))]


def run_epoch(ds, num_workers=2, epoch=None):
    loader = make_loader(ds, num_workers=num_workers)
    if epoch is not None:
        loader._iters = epoch
    return list(loader)


def keys_of(batches, duplicates=False):
    return [k for b in batches for k, d in zip(b["key"], b["duplicate"].tolist(), strict=True) if duplicates or not d]


def test_train_two_ranks_two_workers_every_sample_once(shard_set):
    # 24 samples, 2 ranks x 2 workers, batch 3: 4 full batches per rank, disjoint, covering all
    per_rank = []
    for rank in (0, 1):
        ds = VideoShardDataset(shard_set, SMALL, split="train", batch_size=3, rank=rank, world_size=2, seed=7)
        batches = run_epoch(ds)
        assert len(batches) == len(ds) == 4
        assert all(len(b["key"]) == 3 and not b["duplicate"].any() for b in batches)
        v = batches[0]["views"]
        assert len(v) == 2 and v[0].shape == (3, 4, 3, 16, 16) and v[0].dtype == torch.uint8
        per_rank.append(keys_of(batches))
    allk = per_rank[0] + per_rank[1]
    assert sorted(allk) == [f"train{i:04d}" for i in range(24)]
    # another epoch: same set, different order (shards and buffer reshuffled)
    ds = VideoShardDataset(shard_set, SMALL, split="train", batch_size=3, rank=0, world_size=2, seed=7)
    e1 = keys_of(run_epoch(ds, epoch=1))
    assert e1 != per_rank[0]


def test_train_uneven_counts_equal_batches(tmp_path, make_shards):
    make_shards(tmp_path, {"train": 11}, per_shard=3)  # shards 3, 3, 3, 2
    counts = []
    seen = []
    for rank in (0, 1):
        ds = VideoShardDataset(tmp_path, SMALL, split="train", batch_size=2, rank=rank, world_size=2)
        batches = run_epoch(ds)
        counts.append(len(batches))
        assert all(len(b["key"]) == 2 for b in batches)
        seen += keys_of(batches)
    assert counts == [2, 2]  # floor(11 / 2) = 5 per rank -> 2 full batches of 2
    assert len(seen) == len(set(seen)) == 8


def test_eval_each_sample_once_across_ranks_deterministic(shard_set):
    # 10 val samples, 2 ranks x 2 workers, batch 2: 3 batches per rank, 2 duplicates pad the last slots
    results = []
    for rank in (0, 1):
        ds = VideoShardDataset(shard_set, EVAL, split="val", batch_size=2, train=False, rank=rank, world_size=2)
        batches = run_epoch(ds)
        assert len(batches) == len(ds) == 3
        results.append(batches)
    real = keys_of(results[0]) + keys_of(results[1])
    assert sorted(real) == [f"val{i:04d}" for i in range(10)]
    assert sum(int(b["duplicate"].sum()) for r in results for b in r) == 2
    again = run_epoch(VideoShardDataset(shard_set, EVAL, split="val", batch_size=2, train=False, rank=1, world_size=2))
    assert keys_of(again, True) == keys_of(results[1], True)
    assert all(torch.equal(a["views"][0], b["views"][0]) for a, b in zip(again, results[1], strict=True))


def test_worker_plans_hand_computed():
    # eval: 10 samples, 2 ranks, 2 workers, batch 2: rank sizes 5, 5; 3 batches -> worker quotas 4, 2
    assert plan_worker(10, 0, 2, 0, 2, 2, train=False) == WorkerPlan(0, 4, 4)
    assert plan_worker(10, 0, 2, 1, 2, 2, train=False) == WorkerPlan(4, 1, 2)
    assert plan_worker(10, 1, 2, 1, 2, 2, train=False) == WorkerPlan(9, 1, 2)
    # train: 11 samples, 2 ranks, batch 2: 2 batches per rank; rank 1 starts at position 4
    assert plan_worker(11, 1, 2, 0, 1, 2, train=True) == WorkerPlan(4, 4, 4)


def _bad_members(mp4: bytes) -> dict:
    return {
        "train0002": {"mp4": mp4[: len(mp4) // 2]},  # truncated (moov at the end is cut off)
        "train0005": {"mp4": b""},  # zero-length member
        "train0007": {"mp4": np.random.default_rng(0).bytes(3000)},  # random bytes
    }


def test_bad_samples_skipped_logged_never_replaced(tmp_path, make_shards, mp4_bytes):
    d = tmp_path / "bad"
    make_shards(d, {"train": 12}, per_shard=12, bad=_bad_members(mp4_bytes))
    log_dir = tmp_path / "skips"
    # eval mode: read in order, 1 rank, 2 real workers, batch 1
    ds = VideoShardDataset(d, EVAL, split="train", batch_size=1, train=False, skip_log_dir=log_dir)
    batches = run_epoch(ds, num_workers=2)
    good = keys_of(batches)
    assert sorted(good) == [f"train{i:04d}" for i in range(12) if i not in (2, 5, 7)]
    assert len(batches) == 12  # quota kept with flagged duplicates (appended, not in place)
    recs = SkipLog(log_dir).records()
    assert sorted(r["key"] for r in recs) == ["train0002", "train0005", "train0007"]
    reasons = {r["key"]: r["reason"] for r in recs}
    assert reasons["train0005"] == "zero-length member: .mp4"
    assert reasons["train0002"].startswith("decode error") and reasons["train0007"].startswith("decode error")
    assert all(r["shard"] == "train-000000.tar" for r in recs)
    assert sum(len(b["skipped"]) for b in batches) == 3  # also reported through the stream
    assert SkipLog(log_dir).counts() == Counter({"decode error": 2, "zero-length member": 1})


def test_missing_member_bad_json_and_bad_label_skipped(tmp_path, make_shards):
    d = tmp_path / "bad2"
    bad = {
        "train0001": {"mp4": None},
        "train0003": {"json": b"{not json"},
        "train0004": {"json": json_bytes({"key": "train0004", "label": 9, "num_frames": 20})},
    }
    make_shards(d, {"train": 6}, per_shard=6, bad=bad)
    ds = VideoShardDataset(d, EVAL, split="train", batch_size=1, train=False, skip_log_dir=tmp_path / "s")
    good = keys_of(run_epoch(ds, num_workers=0))
    assert sorted(good) == ["train0000", "train0002", "train0005"]
    reasons = {r["key"]: r["reason"] for r in ds.skip_log.records()}
    assert reasons == {
        "train0001": "missing member: .mp4 (or another video container)",
        "train0003": reasons["train0003"],
        "train0004": "label outside the class list: 9 not in 0..2",
    }
    assert reasons["train0003"].startswith("bad json")


def test_round_trip_equals_pyav_decode(shard_set, decode_all):
    # eval view at the native short side (48): no resize, a centre 48x48 crop -> compare raw pixels
    views = [ViewSpec(name="e", sampler="uniform", frames=5, stride=3, size=48, num_clips=2, train=False,
                      augment=AugmentConfig(output="uint8"))]
    ds = VideoShardDataset(shard_set, views, split="val", batch_size=2, train=False)
    batch = run_epoch(ds, num_workers=0)[0]
    with tarfile.open(shard_set / "val-000000.tar") as tf:
        mp4s = {k: tf.extractfile(f"{k}.mp4").read() for k in batch["key"]}
    for i, key in enumerate(batch["key"]):
        ref = decode_all(mp4s[key])
        for v in range(2):
            idx = batch["indices"][v][i].numpy()
            want = torch.from_numpy(ref[idx][:, :, 8:56]).permute(0, 3, 1, 2).float()
            got = batch["views"][v][i].float()
            assert got.shape == (5, 3, 48, 48)
            assert (got - want).abs().mean().item() <= 1.0
    assert not torch.equal(batch["indices"][0], batch["indices"][1])


def test_brave_pair_views_and_ground_truth(shard_set):
    views = [
        ViewSpec(name="narrow", sampler="narrow", frames=4, stride=2, size=24),
        ViewSpec(name="broad", sampler="broad", frames=8, stride=4, size=12),  # span 29 > 20..28 frames: looped
    ]
    ds = VideoShardDataset(shard_set, views, split="train", batch_size=2, rank=0, world_size=1, extras=["mask.npy"])
    b = next(iter(make_loader(ds, num_workers=0)))
    assert b["views"][0].shape == (2, 4, 3, 24, 24) and b["views"][1].shape == (2, 8, 3, 12, 12)
    assert b["views"][0].dtype == torch.float32
    assert b["looped"][:, 1].all() and not b["padded"].any()
    assert b["mask"].shape == (2, 2, 2)
    assert [int(m[0, 0]) for m in b["mask"]] == [int(k[-4:]) for k in b["key"]]


def test_construction_errors(tmp_path, shard_set, make_shards):
    with pytest.raises(VideosslError, match="empty shard spec"):
        VideoShardDataset([], SMALL)
    with pytest.raises(VideosslError, match="also give the split"):
        VideoShardDataset(shard_set, SMALL)
    with pytest.raises(VideosslError, match="split 'test' is not in"):
        VideoShardDataset(shard_set, SMALL, split="test")
    broken = tmp_path / "missing"
    shutil.copytree(shard_set, broken)
    (broken / "train-000003.tar").unlink()
    with pytest.raises(VideosslError, match="missing"):
        VideoShardDataset(broken, SMALL, split="train")
    with pytest.raises(VideosslError, match="do not exist"):
        VideoShardDataset([str(broken / "train-000003.tar")], SMALL)
    with pytest.raises(VideosslError, match="matches no files"):
        VideoShardDataset(str(tmp_path / "nope-*.tar"), SMALL)
    labels = tmp_path / "labels"
    shutil.copytree(shard_set, labels)
    m = load_manifest(labels)
    m["splits"]["train"]["per_class"]["c0"] -= 2  # 2 samples whose label is not in the class list
    write_manifest(labels, m)
    with pytest.raises(VideosslError, match="2 of 24 samples have labels outside the class list"):
        VideoShardDataset(labels, SMALL, split="train")
    with pytest.raises(VideosslError, match="num_classes=2"):
        VideoShardDataset(shard_set, SMALL, split="train", num_classes=2)
    with pytest.raises(VideosslError, match="make no full batch"):
        VideoShardDataset(shard_set, SMALL, split="val", batch_size=8, world_size=2, rank=0)
    with pytest.raises(VideosslError, match="exactly one 'narrow' and one 'broad'"):
        VideoShardDataset(shard_set, [ViewSpec(sampler="narrow")], split="train")


def test_brace_glob_and_list_specs_count_samples(shard_set, tmp_path):
    brace = resolve_shards(str(shard_set / "train-{000000..000002}.tar"))
    assert brace.counts == [4, 4, 4] and brace.classes == ["c0", "c1", "c2"]
    glob = resolve_shards(str(shard_set / "val-*.tar"))
    assert glob.counts == [4, 4, 2]
    # without a manifest the tar is scanned
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(shard_set / "val-000002.tar", lone / "x.tar")
    assert resolve_shards([str(lone / "x.tar")]).counts == [2]


def test_ram_estimate_and_refusal():
    views = [ViewSpec(frames=4, size=32, copies=2)]  # float output
    est = ram_estimate(views, batch_size=3, num_workers=2, prefetch_factor=2)
    assert est["batch_bytes"] == 3 * 2 * 4 * 32 * 32 * 3 * 4
    assert est["batches_bytes"] == 4 * est["batch_bytes"]
    msg = check_ram(est, 0.5, host_bytes=2**40)
    assert "host RAM estimate" in msg
    with pytest.raises(VideosslError, match="too much; lower batch_size"):
        check_ram(est, 0.5, host_bytes=est["total_bytes"])


def test_datamodule_fit_and_val_loaders(shard_set, tmp_path, capsys):
    dm = VideoDataModule(
        str(shard_set), batch_size=4, eval_batch_size=5, num_workers=1, test_split=None,
        train_views=[{"name": "a", "frames": 2, "stride": 1, "size": 16, "copies": 2}],
        eval_views=EVAL, skip_log_dir=str(tmp_path / "skips"), rank=0, world_size=1,
    )
    dm.setup("fit")
    assert "host RAM estimate" in capsys.readouterr().out
    assert dm.classes == ["c0", "c1", "c2"]
    tl = dm.train_dataloader()
    assert len(tl) == 6
    e0 = [k for b in tl for k in b["key"]]
    e1 = [k for b in tl for k in b["key"]]  # second iteration = next epoch: reshuffled
    assert sorted(e0) == sorted(e1) and e0 != e1
    vb = list(dm.val_dataloader())
    assert len(vb) == 2 and sorted(keys_of(vb)) == [f"val{i:04d}" for i in range(10)]
    with pytest.raises(VideosslError, match="no test split"):
        dm.test_dataloader()
    with pytest.raises(VideosslError, match="ram_fraction"):
        VideoDataModule(str(shard_set), ram_fraction=0)


def test_unrequested_members_not_read_and_a_vanished_sample_is_reported(tmp_path, make_shards):
    d = tmp_path / "bad3"
    # train0001 keeps only a member nobody asked for: it never reaches the pipeline as a sample,
    # so the shard comes up one short of its manifest count, which must be reported, not silent
    make_shards(d, {"train": 6}, per_shard=6, bad={"train0001": {"json": None, "mp4": None, "note.txt": b"x" * 100}})
    ds = VideoShardDataset(d, EVAL, split="train", batch_size=1, train=False, skip_log_dir=tmp_path / "s")
    assert not ds._wanted_member("train0000.note.txt") and ds._wanted_member("train0000.mp4")
    good = keys_of(run_epoch(ds, num_workers=0))
    assert sorted(good) == ["train0000", "train0002", "train0003", "train0004", "train0005"]
    recs = ds.skip_log.records()
    assert len(recs) == 1 and recs[0]["shard"] == "train-000000.tar", recs
    assert recs[0]["reason"].startswith("shard ended early: 1 sample(s) missing")


@pytest.mark.parametrize(("world", "expected"), [(1, 4), (2, 4), (4, 2), (6, None)])
def test_val_pairs_batch_fits_a_small_val_split_or_turns_the_check_off(shard_set, tmp_path, capsys, world, expected):
    """10 val videos: the pairs loader keeps the training batch (4) while each rank holds >= 4, shrinks to what a
    rank holds below that, and is dropped (said once) when a rank holds under 2 (no pair to shuffle)."""
    dm = VideoDataModule(
        str(shard_set), batch_size=4, num_workers=0, test_split=None, val_pairs=True,
        train_views=[{"name": "a", "frames": 2, "stride": 1, "size": 16}, {"name": "b", "frames": 2, "stride": 1, "size": 16}],
        eval_views=EVAL, skip_log_dir=str(tmp_path / "skips"), rank=0, world_size=world,
    )
    dm.setup("fit")
    out = capsys.readouterr().out
    loaders = dm.val_dataloader()
    if expected is None:
        assert "pairs" not in dm.datasets and not isinstance(loaders, list)
        assert "data.val_pairs: off for this run" in out
        return
    assert dm.datasets["pairs"].batch_size == expected and len(loaders) == 2
    assert len(loaders[1]) == (10 // world) // expected >= 1
    assert ("data.val_pairs: batch" in out) == (expected < 4)
