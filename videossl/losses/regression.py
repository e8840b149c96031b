"""BraVe's regression loss (arXiv:2103.16559), as pure functions.

``d(x, y) = mean_batch ½‖x/‖x‖ − y/‖y‖‖²``, which equals ``1 − cos(x, y)`` for non-zero vectors
and lies in [0, 2]. Norms are clamped below at ``eps`` (1e-5), so a zero vector normalises to
zero instead of NaN (then ``d = ½`` against any unit target).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from videossl.errors import VideosslError

__all__ = ["brave_loss", "brave_terms", "regression_distance"]

#: a loss term: (prediction, target projection) or (prediction, target projection, per-sample mask)
Term = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def regression_distance(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-5,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of ``½‖x/‖x‖ − y/‖y‖‖²`` for ``(B, D)`` inputs; a scalar.

    ``mask`` (B,) bool: the mean over the rows where it is true only (e.g. the samples that have an audio
    track when the others were given silence); no true row gives 0 with the graph kept (a zero gradient).
    No stop-gradient here: :func:`brave_loss` detaches the targets.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise VideosslError(
            f"regression_distance needs two (B, D) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    xn = F.normalize(x, dim=-1, eps=eps)
    yn = F.normalize(y, dim=-1, eps=eps)
    d = 0.5 * (xn - yn).pow(2).sum(dim=-1)
    if mask is None:
        return d.mean()
    if mask.shape != (x.shape[0],):
        raise VideosslError(f"regression_distance's mask must be ({x.shape[0]},) bool, got {tuple(mask.shape)}")
    m = mask.to(device=d.device, dtype=d.dtype)
    return (d * m).sum() / m.sum().clamp(min=1.0)


def brave_terms(terms: Mapping[str, Term], eps: float = 1e-5) -> dict[str, torch.Tensor]:
    """Each named term's ``regression_distance(prediction, sg(target), mask)`` (targets detached), in order.

    BraVe's names (arXiv:2103.16559, deepmind/brave ``_build_loss_fn``): ``b_video_to_n_video``,
    ``n_video_to_b_video``, ``b_audio_to_n_video``, ``n_video_to_b_audio``, …; the loss is their plain mean
    (:func:`brave_loss`).
    """
    if not terms:
        raise VideosslError("brave_terms needs at least one (prediction, target) term")
    out = {}
    for name, t in terms.items():
        p, z, mask = (*t, None)[:3]
        out[name] = regression_distance(p, z.detach(), eps=eps, mask=mask)
    return out


def brave_loss(terms: Sequence[Term] | Mapping[str, Term], eps: float = 1e-5) -> torch.Tensor:
    """Plain mean of ``regression_distance(prediction, sg(target_projection))`` over the terms.

    For one broad view: ``[(p_b, z_n), (p_n, z_b)]`` (2 terms); with video + audio broad views 4 terms
    (named, as :func:`brave_terms` takes them, or a plain sequence). Targets are detached, so each
    projection is trained only through its own side's prediction path, never as a target.
    """
    named = terms if isinstance(terms, Mapping) else {str(i): t for i, t in enumerate(terms)}
    if not named:
        raise VideosslError("brave_loss needs at least one (prediction, target) pair")
    return torch.stack(list(brave_terms(named, eps=eps).values())).mean()
