"""The class-subset helpers of tools/stream_compare.py (the binary left / right comparison of issue #22)."""

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "stream_compare", Path(__file__).resolve().parents[1] / "tools" / "stream_compare.py")
sc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sc)


def _clips():
    # three cached batches: labels 0..7, frames tagged with their (batch, position) so regrouping is checkable
    out = []
    for b, labels in enumerate(([0, 3, 1, 5], [2, 2, 7], [1, 0, 0, 6, 1])):
        v = torch.stack([torch.full((2, 3, 4, 4), 10.0 * b + i) for i in range(len(labels))])
        out.append((v, torch.tensor(labels)))
    return out


def test_restrict_keeps_relabels_and_regroups():
    got = sc.restrict(_clips(), [1, 0], batch=2)
    labels = torch.cat([y for _, y in got])
    tags = torch.cat([v[:, 0, 0, 0, 0] for v, _ in got])
    # class 1 -> 0, class 0 -> 1, in the cached order; everything else dropped
    assert labels.tolist() == [1, 0, 0, 1, 1, 0]
    assert tags.tolist() == [0.0, 2.0, 20.0, 21.0, 22.0, 24.0]
    assert [len(y) for _, y in got] == [2, 2, 2]


def test_restrict_without_batch_keeps_the_cached_batches_that_hold_a_kept_class():
    got = sc.restrict(_clips(), [6, 7], batch=None)
    assert [y.tolist() for _, y in got] == [[1], [0]]


def test_subset_reversal_relabels_and_rejects_an_open_subset():
    rc = [1, 0, 3, 2, 5, 4, 7, 6]
    assert sc.subset_reversal(rc, [0, 1]) == [1, 0]
    assert sc.subset_reversal(rc, [2, 0, 3, 1]) == [2, 3, 0, 1]
    with pytest.raises(SystemExit, match=r"not closed under time reversal .* add \[1\]"):
        sc.subset_reversal(rc, [0, 2, 3])
