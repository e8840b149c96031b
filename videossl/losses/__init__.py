"""Losses as pure functions with numeric tests.

* :func:`regression_distance`, :func:`brave_terms`, :func:`brave_loss`: BraVe's 1 − cos regression with stop-gradient.
* :func:`infonce`, :func:`infonce_distributed`, :func:`gather_with_grad`: symmetric InfoNCE,
  multi-positive, all-gathered across ranks with DDP-exact gradients; :func:`hard_negative_nce`: each
  query against its own key and its own hard negatives.
"""

from videossl.losses.infonce import gather_with_grad, hard_negative_nce, infonce, infonce_distributed
from videossl.losses.regression import brave_loss, brave_terms, regression_distance

__all__ = ["brave_loss", "brave_terms", "gather_with_grad", "hard_negative_nce", "infonce", "infonce_distributed",
           "regression_distance"]
