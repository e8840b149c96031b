"""Symmetric InfoNCE, single-process and all-gathered across ranks with exact gradients.

``infonce(q, k, τ)``: with L2-normalised rows, ``logits = q kᵀ / τ``; the loss is the mean of the
q→k cross-entropy (rows) and the k→q cross-entropy (columns). Positives are the diagonal, or
all pairs that share a label / are set in a boolean ``positive_mask``; with several positives
the target distribution is uniform over them (e.g. the same caption twice in a batch).

Distributed (``infonce_distributed``), DDP gradient bookkeeping
--------------------------------------------------------------
Let ``L`` be the single-process loss over the concatenated global batch (N = W·B rows) and
``q_r`` rank r's slice. ``gather_with_grad`` all-gathers in the forward pass; its backward
all-reduces (sums) the incoming gradient over ranks and returns the local slice. DDP then
*averages* parameter gradients over the W ranks.

* ``local_loss=False`` (default): every rank computes the full ``L`` (N×N logits) and returns it,
  so the returned value is exactly the single-process loss. Each rank's autograd produces the
  same ``∂L/∂Q``; the sum in the gather backward makes rank r's gradient ``W·∂L/∂q_r``; DDP's
  mean over ranks then gives ``(1/W)·Σ_r W·∂L/∂q_r·∂q_r/∂θ = ∂L/∂θ``: exactly the full-batch
  gradient. A temperature parameter gets ``∂L/∂τ`` on every rank, unchanged by the mean.
* ``local_loss=True``: rank r computes only its own B rows of each direction (B×N logits, less
  memory) and returns ``L_r``; ``mean_r L_r = L``. Rank r's gradient is ``Σ_s ∂L_s/∂q_r``
  (sum in the gather backward), and DDP's mean gives ``∂(mean_s L_s)/∂θ = ∂L/∂θ`` again.

The classic bug, a gather whose backward returns only the local slice of the local gradient,
yields ``(1/W)·∂L/∂θ`` after DDP; the sum in ``_GatherWithGrad.backward`` is what prevents it.
Both modes require the same local batch size on every rank (use ``drop_last=True``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from videossl.errors import VideosslError

__all__ = ["gather_with_grad", "hard_negative_nce", "infonce", "infonce_distributed"]


def _check_temperature(temperature) -> None:
    if not isinstance(temperature, torch.Tensor) and not temperature > 0:
        raise VideosslError(f"InfoNCE temperature must be > 0, got {temperature}")


def _soft_targets(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    m = mask.to(dtype)
    return m / m.sum(dim=1, keepdim=True)


def infonce(
    q: torch.Tensor,
    k: torch.Tensor,
    temperature: float | torch.Tensor,
    labels: torch.Tensor | None = None,
    positive_mask: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE between ``q`` (Bq, D) and ``k`` (Bk, D); a scalar.

    Args:
        temperature: a float or a tensor (e.g. ``1 / logit_scale.exp().clamp(max=100)`` for a
            learnable CLIP-style scale); logits are divided by it.
        labels: optional (B,) ids; pairs with equal ids are positives (Bq == Bk).
        positive_mask: optional (Bq, Bk) bool; every row and column needs a positive.
        normalize: L2-normalise q and k first (set False if they already are).

    Without ``labels``/``positive_mask`` the positives are the diagonal (Bq == Bk).
    """
    _check_temperature(temperature)
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise VideosslError(
            f"infonce needs q (Bq, D) and k (Bk, D), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if labels is not None and positive_mask is not None:
        raise VideosslError("infonce: pass labels or positive_mask, not both")
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    logits = q @ k.t() / temperature
    if positive_mask is None and labels is None:
        if q.shape[0] != k.shape[0]:
            raise VideosslError(
                f"infonce with diagonal positives needs Bq == Bk, got {q.shape[0]} and {k.shape[0]}"
            )
        target = torch.arange(q.shape[0], device=q.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    if labels is not None:
        if labels.shape != (q.shape[0],) or q.shape[0] != k.shape[0]:
            raise VideosslError(f"infonce labels must be (B,) with Bq == Bk == B, got {tuple(labels.shape)}")
        mask = labels[:, None] == labels[None, :]
    else:
        mask = positive_mask.bool()
        if mask.shape != logits.shape:
            raise VideosslError(
                f"infonce positive_mask must be {tuple(logits.shape)}, got {tuple(mask.shape)}"
            )
        if not (bool(mask.any(dim=1).all()) and bool(mask.any(dim=0).all())):
            raise VideosslError("infonce positive_mask has a row or column without any positive")
    return 0.5 * (
        F.cross_entropy(logits, _soft_targets(mask, logits.dtype))
        + F.cross_entropy(logits.t(), _soft_targets(mask.t(), logits.dtype))
    )


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward sums the gradient over ranks, returns the local slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def _world(group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def gather_with_grad(x: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) from all ranks along dim 0, rank order.

    The backward pass sums the gradient over ranks and returns this rank's slice (see the
    module docstring). Without an initialised process group (or with one rank) returns ``x``.
    """
    if _world(group) == 1:
        return x
    return _GatherWithGrad.apply(x, group)


def _gather_no_grad(x: torch.Tensor, group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts)


def infonce_distributed(
    q: torch.Tensor,
    k: torch.Tensor,
    temperature: float | torch.Tensor,
    labels: torch.Tensor | None = None,
    normalize: bool = True,
    local_loss: bool = False,
    group=None,
) -> torch.Tensor:
    """InfoNCE over the batch gathered from all ranks, with DDP-exact gradients.

    Queries and keys are both gathered, so every sample sees all ``N = W·B`` negatives in both
    directions. ``labels`` (B,) are gathered too (multi-positive over the global batch). With
    ``local_loss=False`` the returned value equals :func:`infonce` on the concatenated batch;
    with ``local_loss=True`` only this rank's rows are computed and the mean over ranks equals
    it. In both modes the gradient after DDP's averaging equals the full-batch gradient.
    Falls back to :func:`infonce` when not distributed.
    """
    world = _world(group)
    if world == 1:
        return infonce(q, k, temperature, labels=labels, normalize=normalize)
    _check_temperature(temperature)
    sizes = _gather_no_grad(torch.tensor([q.shape[0], k.shape[0]], device=q.device), group).view(world, 2)
    if not bool((sizes == sizes[0]).all()) or int(sizes[0, 0]) != int(sizes[0, 1]):
        raise VideosslError(
            f"infonce_distributed needs the same batch size for q and k on every rank, got {sizes.tolist()}; "
            "use drop_last=True in the data loader"
        )
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    all_q, all_k = gather_with_grad(q, group), gather_with_grad(k, group)
    all_labels = None if labels is None else _gather_no_grad(labels, group)
    if not local_loss:
        return infonce(all_q, all_k, temperature, labels=all_labels, normalize=False)

    b, rank = q.shape[0], dist.get_rank(group)
    rows = slice(rank * b, (rank + 1) * b)
    logits_qk = all_q[rows] @ all_k.t() / temperature
    logits_kq = all_k[rows] @ all_q.t() / temperature
    if all_labels is None:
        target = torch.arange(rank * b, (rank + 1) * b, device=q.device)
        return 0.5 * (F.cross_entropy(logits_qk, target) + F.cross_entropy(logits_kq, target))
    target = _soft_targets(all_labels[rows, None] == all_labels[None, :], logits_qk.dtype)
    return 0.5 * (F.cross_entropy(logits_qk, target) + F.cross_entropy(logits_kq, target))


def hard_negative_nce(
    q: torch.Tensor,
    k_pos: torch.Tensor,
    k_neg: torch.Tensor,
    temperature: float | torch.Tensor,
    valid: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Per-sample cross-entropy of the positive against its own hard negatives; a scalar.

    Row i's logits are ``[q_i·k_pos_i, q_i·k_neg_{i,1}, …, q_i·k_neg_{i,M}] / τ`` and the target is
    index 0: each query must prefer its own key to keys that differ from it in one controlled way
    (e.g. a caption with another motion). ``q``, ``k_pos`` (B, D); ``k_neg`` (B, M, D); ``valid``
    (B, M) bool marks real negatives (others are left out of the row; rows without any are left
    out of the mean; 0 when no row has one). A mean over local rows: under DDP its average over
    ranks is the loss of the global batch, so no gathering is needed.
    """
    _check_temperature(temperature)
    if q.ndim != 2 or k_pos.shape != q.shape or k_neg.ndim != 3 or k_neg.shape[0] != q.shape[0] or k_neg.shape[2] != q.shape[1]:
        raise VideosslError(f"hard_negative_nce needs q, k_pos (B, D) and k_neg (B, M, D), got "
                            f"{tuple(q.shape)}, {tuple(k_pos.shape)}, {tuple(k_neg.shape)}")
    if normalize:
        q, k_pos, k_neg = F.normalize(q, dim=-1), F.normalize(k_pos, dim=-1), F.normalize(k_neg, dim=-1)
    pos = (q * k_pos).sum(-1, keepdim=True)
    neg = torch.einsum("bd,bmd->bm", q, k_neg)
    if valid is None:
        valid = torch.ones(neg.shape, dtype=torch.bool, device=q.device)
    # mask after the division: -inf / a learnable temperature has a NaN gradient (0 * inf), even in rows left out
    logits = torch.cat([pos / temperature, (neg / temperature).masked_fill(~valid, float("-inf"))], 1)
    rows = valid.any(1)
    if not bool(rows.any()):
        return q.sum() * 0.0
    target = torch.zeros(int(rows.sum()), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits[rows], target)
