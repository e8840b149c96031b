"""BraVe's regression loss (arXiv:2103.16559), as pure functions.

``d(x, y) = mean_batch ½‖x/‖x‖ − y/‖y‖‖²``, which equals ``1 − cos(x, y)`` for non-zero vectors
and lies in [0, 2]. Norms are clamped below at ``eps`` (1e-5), so a zero vector normalises to
zero instead of NaN (then ``d = ½`` against any unit target).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from videossl.errors import VideosslError

__all__ = ["brave_loss", "regression_distance"]


def regression_distance(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean over the batch of ``½‖x/‖x‖ − y/‖y‖‖²`` for ``(B, D)`` inputs; a scalar.

    No stop-gradient here: :func:`brave_loss` detaches the targets.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise VideosslError(
            f"regression_distance needs two (B, D) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    xn = F.normalize(x, dim=-1, eps=eps)
    yn = F.normalize(y, dim=-1, eps=eps)
    return 0.5 * (xn - yn).pow(2).sum(dim=-1).mean()


def brave_loss(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], eps: float = 1e-5) -> torch.Tensor:
    """Plain mean of ``regression_distance(prediction, sg(target_projection))`` over ``pairs``.

    For one broad view: ``pairs = [(p_b, z_n), (p_n, z_b)]`` (2 terms); with video + audio broad
    views 4 terms. Targets are detached here, so each projection is trained only through its own
    side's prediction path, never as a target.
    """
    pairs = list(pairs)
    if not pairs:
        raise VideosslError("brave_loss needs at least one (prediction, target) pair")
    terms = [regression_distance(p, z.detach(), eps=eps) for p, z in pairs]
    return torch.stack(terms).mean()
