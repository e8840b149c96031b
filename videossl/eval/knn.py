"""Weighted kNN classification and nearest-neighbour retrieval on features.

InstDisc (Wu et al., 2018) / SlowFast (Feichtenhofer et al., 2019) style: L2-normalise train and test
features, cosine similarity of each test row to every train row, keep the top-k neighbours, and let
each vote for its class with weight
``exp(sim / T)``; the prediction is the class with the largest summed weight. Defaults k = 200,
T = 0.07 (videossl default; also report k = 20). The test set is processed in chunks so the
[chunk, N_train] similarity matrix bounds memory; everything runs on the bank's device, so the
same code serves online (GPU tensors during pretraining) and offline evaluation. k larger than the
bank is clipped to the bank size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from videossl.errors import VideosslError
from videossl.eval.scores import check_feats, check_labels

__all__ = ["WeightedKNN", "knn_scores", "knn_accuracy", "retrieval_recall_at_k"]


class WeightedKNN:
    """A feature bank (L2-normalised train features + labels) with a weighted-vote classifier."""

    def __init__(
        self,
        train_feats: Tensor,
        train_labels: Tensor | Sequence[int],
        num_classes: int,
        *,
        k: int = 200,
        temperature: float = 0.07,
        chunk_size: int = 1024,
    ) -> None:
        train_feats = check_feats(train_feats, "train_feats")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise VideosslError(f"num_classes must be a positive integer, got {num_classes!r}")
        if k < 1 or temperature <= 0 or chunk_size < 1:
            raise VideosslError(
                f"need k >= 1, temperature > 0, chunk_size >= 1; got {k}, {temperature}, {chunk_size}"
            )
        self.bank = torch.nn.functional.normalize(train_feats.detach(), dim=1)
        self.labels = check_labels(train_labels, train_feats.shape[0], "train_labels", num_classes).to(
            self.bank.device
        )
        self.num_classes = num_classes
        self.k = min(int(k), self.bank.shape[0])
        self.temperature = float(temperature)
        self.chunk_size = int(chunk_size)

    @torch.no_grad()
    def scores(self, test_feats: Tensor) -> Tensor:
        """Summed vote weights per class, [N_test, num_classes] (on the bank's device)."""
        test_feats = check_feats(test_feats, "test_feats")
        if test_feats.shape[1] != self.bank.shape[1]:
            raise VideosslError(
                f"feature dimension mismatch: kNN bank is {self.bank.shape[1]}-d, test features are "
                f"{test_feats.shape[1]}-d; use the same encoder layer for both"
            )
        out = []
        for i in range(0, test_feats.shape[0], self.chunk_size):
            q = torch.nn.functional.normalize(test_feats[i : i + self.chunk_size].to(self.bank), dim=1)
            sim = q @ self.bank.T  # [b, N]
            top_sim, top_idx = sim.topk(self.k, dim=1)
            w = (top_sim / self.temperature).exp()
            votes = torch.zeros(q.shape[0], self.num_classes, dtype=w.dtype, device=w.device)
            votes.scatter_add_(1, self.labels[top_idx], w)
            out.append(votes)
        return torch.cat(out)

    def predict(self, test_feats: Tensor) -> Tensor:
        return self.scores(test_feats).argmax(dim=1)


def knn_scores(
    train_feats: Tensor,
    train_labels: Tensor | Sequence[int],
    test_feats: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted-kNN class scores for ``test_feats``, [N_test, num_classes]."""
    knn = WeightedKNN(
        train_feats, train_labels, num_classes, k=k, temperature=temperature, chunk_size=chunk_size
    )
    return knn.scores(test_feats)


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor | Sequence[int],
    test_feats: Tensor,
    test_labels: Tensor | Sequence[int],
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier."""
    scores = knn_scores(
        train_feats,
        train_labels,
        test_feats,
        num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    labels = check_labels(test_labels, scores.shape[0], "test_labels", num_classes).to(scores.device)
    return float((scores.argmax(dim=1) == labels).float().mean())


@torch.no_grad()
def retrieval_recall_at_k(
    query_feats: Tensor,
    query_labels: Tensor | Sequence[int],
    bank_feats: Tensor,
    bank_labels: Tensor | Sequence[int],
    ks: Sequence[int] = (1, 5, 10, 20),
    *,
    chunk_size: int = 1024,
) -> dict[int, float]:
    """Clip retrieval (CoCLR "NN@k"): fraction of queries (test clips) whose top-k cosine
    neighbours in the bank (train clips) contain at least one clip of the query's class."""
    query_feats = check_feats(query_feats, "query_feats")
    bank_feats = check_feats(bank_feats, "bank_feats")
    if query_feats.shape[1] != bank_feats.shape[1]:
        raise VideosslError(
            f"feature dimension mismatch: queries are {query_feats.shape[1]}-d, bank is {bank_feats.shape[1]}-d"
        )
    ql = check_labels(query_labels, query_feats.shape[0], "query_labels").to(bank_feats.device)
    bl = check_labels(bank_labels, bank_feats.shape[0], "bank_labels").to(bank_feats.device)
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1 or ks[-1] > bank_feats.shape[0]:
        raise VideosslError(f"ks must lie in [1, {bank_feats.shape[0]}] (bank size), got {ks}")
    bank = torch.nn.functional.normalize(bank_feats, dim=1)
    hits = {k: 0 for k in ks}
    for i in range(0, query_feats.shape[0], chunk_size):
        q = torch.nn.functional.normalize(query_feats[i : i + chunk_size].to(bank), dim=1)
        idx = (q @ bank.T).topk(ks[-1], dim=1).indices
        match = bl[idx] == ql[i : i + chunk_size, None]  # [b, kmax]
        for k in ks:
            hits[k] += int(match[:, :k].any(dim=1).sum())
    return {k: hits[k] / query_feats.shape[0] for k in ks}
