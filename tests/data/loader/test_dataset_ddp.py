"""Two real rank processes x two DataLoader workers each: one epoch covers every sample exactly once."""

from __future__ import annotations

import json

import pytest
import torch.multiprocessing as mp

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.shards.format import iter_tar_samples, split_shard_paths
from videossl.data.shards.synthetic import generate

VIEWS = [ViewSpec(name="clip", sampler="random", frames=4, stride=1, size=16)]
EVAL_VIEWS = [ViewSpec(name="clip", sampler="uniform", frames=4, stride=1, size=16, train=False)]


def _rank_main(rank: int, data: str, out: str, train: bool, batch_size: int) -> None:
    ds = VideoShardDataset(data, VIEWS if train else EVAL_VIEWS, split="train", batch_size=batch_size, train=train,
                           rank=rank, world_size=2, seed=3)
    seen = []
    batches = 0
    for batch in make_loader(ds, num_workers=2):
        batches += 1
        seen += [[k, bool(d)] for k, d in zip(batch["key"], batch["duplicate"].tolist(), strict=True)]
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"keys": seen, "batches": batches, "len": len(ds)}, f)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, 64, seed=2, size=32, num_frames=6, progress=False, max_per_shard=10)  # 48 train, 5 shards
    keys = [k for p in split_shard_paths(out, "train") for k, _ in iter_tar_samples(p)]
    return out, keys


def _run(tmp_path, data, train, batch_size):
    mp.start_processes(_rank_main, args=(str(data), str(tmp_path), train, batch_size), nprocs=2, start_method="spawn")
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_train_epoch_every_sample_once_equal_batches(tmp_path, synth):
    data, keys = synth
    ranks = _run(tmp_path, data, True, 4)  # 48 = 2 ranks x 2 workers x 3 batches x 4
    assert ranks[0]["batches"] == ranks[1]["batches"] == ranks[0]["len"] == 6
    seen = [k for r in ranks for k, dup in r["keys"]]
    assert not any(dup for r in ranks for _, dup in r["keys"])
    assert sorted(seen) == sorted(keys)  # every training sample exactly once across ranks


def test_eval_each_sample_once_across_ranks(tmp_path, synth):
    data, keys = synth
    ranks = _run(tmp_path, data, False, 5)  # 24 per rank -> 5 batches of 5 with one padding duplicate
    assert ranks[0]["batches"] == ranks[1]["batches"]
    real = [k for r in ranks for k, dup in r["keys"] if not dup]
    assert sorted(real) == sorted(keys)
    assert sum(dup for r in ranks for _, dup in r["keys"]) == 2 * 5 * 5 - len(keys)
