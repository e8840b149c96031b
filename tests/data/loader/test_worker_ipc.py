"""What the DataLoader workers send to the main process (issue #16 item 7, CPU pipeline cost).

``for_ipc`` sends small tensors by value instead of one shared-memory segment each: the main process must
receive exactly the batches a 0-worker loader yields (values, dtypes, shapes, and the views' layout).
"""

from __future__ import annotations

import io
import pickle
from multiprocessing.reduction import ForkingPickler

import torch

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.batch import INLINE_BYTES, _Inline, collate, for_ipc
from videossl.data.loader.transforms import AugmentConfig

VIEWS = [
    # a batch of "a" is 4 x 4 x 3 x 72 x 72 bytes (> INLINE_BYTES: shared memory), of "b" 4 x 3 x 3 x 16 x 16 (inlined)
    ViewSpec(name="a", sampler="random", frames=4, stride=2, size=72, copies=2, augment=AugmentConfig(output="uint8")),
    ViewSpec(name="b", sampler="random", frames=3, stride=1, size=16),
]


def _roundtrip(obj):
    buf = io.BytesIO()
    ForkingPickler(buf, pickle.HIGHEST_PROTOCOL).dump(obj)
    return pickle.loads(buf.getvalue())


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


def _assert_same(a, b, strides=False):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        if strides:
            assert a.stride() == b.stride()
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k], strides and k == "views")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y, strides)
    else:
        assert a == b


def test_for_ipc_sends_small_tensors_by_value_and_they_come_back_equal():
    big = torch.randint(0, 255, (2, 4, 64, 64, 3), dtype=torch.uint8).permute(0, 1, 4, 2, 3)  # 98 KiB > INLINE_BYTES
    batch = {
        "label": torch.tensor([1, 2]), "valid": [torch.ones(2, 4, dtype=torch.bool)], "views": [big],
        "augment": [{"hue": torch.rand(2, dtype=torch.float64), "view": torch.tensor([0, 0])}, None],
        "key": ["a", "b"], "pair": (torch.zeros(3, dtype=torch.float16), 7), "skipped": [],
    }
    packed = for_ipc(batch)
    tensors = [x for x in _leaves(packed) if isinstance(x, torch.Tensor)]
    assert len(tensors) == 1 and tensors[0] is big  # only the large view keeps a shared-memory segment
    assert sum(isinstance(x, _Inline) for x in _leaves(packed)) == 5
    _assert_same(_roundtrip(packed), batch)
    assert big.numel() > INLINE_BYTES


def test_worker_batches_equal_main_process_batches(shard_set):
    def batches(workers):
        ds = VideoShardDataset(str(shard_set), VIEWS, split="train", batch_size=4, seed=3, rank=0, world_size=1,
                               augment_on="device")
        return list(make_loader(ds, num_workers=workers))

    main, work = batches(0), batches(1)
    assert len(main) == len(work) > 0
    for a, b in zip(main, work, strict=True):
        _assert_same(a, b, strides=True)
    assert all(v.is_shared() == (v.numel() > INLINE_BYTES) for b in work for v in b["views"])
    assert any(v.is_shared() for b in work for v in b["views"])
    assert not any(isinstance(x, _Inline) for b in work for x in _leaves(b))


def test_collate_unchanged_outside_workers():
    s = {"key": "k", "shard": "s", "label": 1, "views": [torch.zeros(2, 3, 4, 4, dtype=torch.uint8)], "view_names": ["a"],
         "augment": [None], "valid": [torch.ones(2, dtype=torch.bool)], "indices": [torch.arange(2)], "padded": [False],
         "looped": [False], "extras": {}, "caption": "", "duplicate": False}
    b = collate([s, s])
    assert b["views"][0].shape == (2, 2, 3, 4, 4) and not b["views"][0].is_shared() and b["augment"] == [None]
