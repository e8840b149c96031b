"""Weighted kNN and retrieval: clustered features and a hand-computed vote."""

import math

import pytest
import torch

from videossl.errors import VideosslError
from videossl.eval.knn import WeightedKNN, knn_accuracy, knn_scores, retrieval_recall_at_k


def clustered(n_per_class, num_classes=6, dim=16, seed=0, centers=None):
    g = torch.Generator().manual_seed(seed)
    if centers is None:
        centers = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=1)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centers[y] + 0.1 * torch.randn(len(y), dim, generator=g), y, centers


def test_knn_clustered_features():
    tr_x, tr_y, c = clustered(50)
    te_x, te_y, _ = clustered(20, seed=1, centers=c)
    assert knn_accuracy(tr_x, tr_y, te_x, te_y, 6) >= 0.99  # defaults k=200 (clipped to 300 rows), T=0.07
    assert knn_accuracy(tr_x, tr_y, te_x, te_y, 6, k=20) >= 0.99
    # shuffled train labels destroy it
    perm = torch.randperm(len(tr_y), generator=torch.Generator().manual_seed(0))
    assert knn_accuracy(tr_x, tr_y[perm], te_x, te_y, 6, k=20) < 0.5


def test_weighted_vote_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    q = torch.tensor([[2.0, 0.0]])  # cosine sims to the bank: 1, 0, 1/sqrt2, -1
    s = knn_scores(bank, labels, q, 2, k=3, temperature=0.5)
    # top-3: rows 0 (class 0, sim 1), 2 (class 1, sim .7071), 1 (class 1, sim 0)
    expected = torch.tensor([[math.exp(2.0), math.exp(math.sqrt(2)) + math.exp(0.0)]])
    assert torch.allclose(s, expected, rtol=1e-5)
    assert s.argmax().item() == 0  # one close neighbour outweighs two far ones ...
    flat = knn_scores(bank, labels, q, 2, k=3, temperature=100.0)
    assert flat.argmax().item() == 1  # ... while a near-uniform weighting is a majority vote
    assert knn_scores(bank, labels, q, 2, k=1, temperature=0.5)[0, 1].item() == 0.0


def test_chunking_and_device_invariance():
    tr_x, tr_y, c = clustered(10)
    te_x, _, _ = clustered(7, seed=2, centers=c)
    a = WeightedKNN(tr_x, tr_y, 6, k=5, chunk_size=1).scores(te_x)
    b = WeightedKNN(tr_x, tr_y, 6, k=5, chunk_size=1000).scores(te_x)
    assert torch.allclose(a, b)
    knn = WeightedKNN(tr_x.double(), tr_y, 6, k=5)
    assert torch.equal(knn.predict(te_x), a.argmax(1))  # float32 queries against a float64 bank


def test_retrieval_hand_computed():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    bank_y = torch.tensor([0, 1, 1])
    q = torch.tensor([[1.0, 0.05], [0.0, 1.0]])
    r = retrieval_recall_at_k(q, torch.tensor([1, 1]), bank, bank_y, ks=(1, 2))
    # query 0: nearest is bank 0 (class 0: miss at k=1), then bank 1 (class 1: hit at k=2); query 1 hits at k=1
    assert r == {1: 0.5, 2: 1.0}


def test_knn_errors():
    x, y, _ = clustered(3)
    with pytest.raises(VideosslError, match="dimension mismatch"):
        knn_scores(x, y, x[:, :4], 6)
    with pytest.raises(VideosslError, match="empty"):
        knn_scores(x[:0], y[:0], x, 6)
    with pytest.raises(VideosslError, match="must lie in"):
        knn_scores(x, y + 6, x, 6)
