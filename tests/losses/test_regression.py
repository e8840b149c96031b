"""BraVe regression loss: d(x, y) = mean ½‖x̂ − ŷ‖² = 1 − cos, stop-gradient on targets."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from videossl.errors import VideosslError
from videossl.losses import brave_loss, brave_terms, regression_distance

torch.set_num_threads(1)


def test_distance_against_hand_computation():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    y = torch.tensor([[4.0, 3.0], [-1.0, 0.0]])
    # row 0: cos = 24/25 → 1/25; row 1: opposite → 2; mean = 1.02
    torch.testing.assert_close(regression_distance(x, y), torch.tensor(1.02))


def test_distance_is_one_minus_cos_and_in_range():
    torch.manual_seed(0)
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    torch.testing.assert_close(regression_distance(x, y), (1 - F.cosine_similarity(x, y)).mean())
    assert regression_distance(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_distance(x, -x).item() == pytest.approx(2.0, abs=1e-6)
    for _ in range(5):
        d = regression_distance(torch.randn(4, 3), torch.randn(4, 3)).item()
        assert 0.0 <= d <= 2.0


def test_norm_is_clamped_at_eps():
    y = torch.tensor([[1.0, 0.0]])
    # ‖x‖ = 1e-7 is clamped to 1e-5: x̂ = (0.01, 0) → ½·0.99² (not 0 as with exact normalisation)
    x = torch.tensor([[1e-7, 0.0]])
    assert regression_distance(x, y).item() == pytest.approx(0.5 * 0.99**2, rel=1e-5)
    z = torch.zeros(1, 2, requires_grad=True)
    d = regression_distance(z, y)
    assert d.item() == pytest.approx(0.5)
    d.backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(VideosslError, match="one shape"):
        regression_distance(torch.ones(2, 3), torch.ones(2, 4))


class _Side(nn.Module):
    """backbone → (projection z, prediction p), as one BraVe head pair side."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(5, 6)
        self.proj = nn.Linear(6, 4)
        self.pred = nn.Linear(4, 4)

    def forward(self, x):
        z = self.proj(torch.relu(self.backbone(x)))
        return z, self.pred(z)


def test_stop_gradient_and_both_sides_get_gradients():
    torch.manual_seed(0)
    narrow, broad = _Side(), _Side()
    xn, xb = torch.randn(8, 5), torch.randn(8, 5)
    z_n, p_n = narrow(xn)
    z_b, p_b = broad(xb)

    # one term alone: the target side receives no gradient at all
    own = brave_loss([(p_b, z_n)])
    grads = torch.autograd.grad(
        own, list(narrow.parameters()) + list(broad.parameters()), allow_unused=True, retain_graph=True
    )
    assert all(g is None for g in grads[:6])  # narrow: only a target here
    assert all(g is not None and g.abs().sum() > 0 for g in grads[6:])

    # full loss: each backbone is trained only through its own prediction
    loss = brave_loss([(p_b, z_n), (p_n, z_b)])
    g_full = torch.autograd.grad(loss, list(narrow.parameters()), retain_graph=True)
    g_own = torch.autograd.grad(
        0.5 * regression_distance(p_n, z_b.detach()), list(narrow.parameters()), retain_graph=True
    )
    for a, b in zip(g_full, g_own, strict=True):
        torch.testing.assert_close(a, b)
    loss.backward()
    assert narrow.backbone.weight.grad.abs().sum() > 0
    assert broad.backbone.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("n_terms", [2, 4])
def test_loss_is_plain_mean_of_terms(n_terms):
    torch.manual_seed(n_terms)
    pairs = [(torch.randn(6, 4), torch.randn(6, 4)) for _ in range(n_terms)]
    want = sum(regression_distance(p, z) for p, z in pairs) / n_terms
    torch.testing.assert_close(brave_loss(pairs), want)
    with pytest.raises(VideosslError):
        brave_loss([])


def test_brave_flow_view_gathers_resizes_and_scales_flow():
    """BraVe's V/F broad view: flow t->t+1 per broad frame, resized with the image, vectors rescaled."""
    from videossl.methods.brave import flow_view

    flow = torch.zeros(1, 3, 4, 4, 2)
    flow[0, 1, ..., 0] = 2.0  # frame 1 moves +2 px in x
    flow[0, 2, ..., 1] = -1.0  # frame 2 moves -1 px in y
    out = flow_view(flow, torch.tensor([[0, 1, 2, 3]]), size=8, scale=2.0)
    assert out.shape == (1, 2, 4, 8, 8)
    # x2 resize doubles the vectors, /2 normalises: frame 1 dx = 2; the last frame reuses flow 2->3 (index 2)
    assert torch.allclose(out[0, 0, :, 3, 3], torch.tensor([0.0, 2.0, 0.0, 0.0]))
    assert torch.allclose(out[0, 1, :, 3, 3], torch.tensor([0.0, 0.0, -1.0, -1.0]))


def test_masked_distance_is_the_mean_over_the_kept_rows_only():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    keep = torch.tensor([True, False, True, True, False, True])
    torch.testing.assert_close(regression_distance(x, y, mask=keep), regression_distance(x[keep], y[keep]))
    torch.testing.assert_close(regression_distance(x, y, mask=torch.ones(6, dtype=torch.bool)), regression_distance(x, y))
    xg = x.clone().requires_grad_(True)
    none = regression_distance(xg, y, mask=torch.zeros(6, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.count_nonzero(xg.grad) == 0  # no kept row: nothing learnt, no NaN
    with pytest.raises(VideosslError, match=r"mask must be \(6,\)"):
        regression_distance(x, y, mask=keep[:3])


def test_named_terms_detach_targets_and_their_mean_is_the_loss():
    g = torch.Generator().manual_seed(1)
    p_b, z_n, p_n, z_b = (torch.randn(4, 8, generator=g).requires_grad_(True) for _ in range(4))
    terms = {"b_audio_to_n_video": (p_b, z_n), "n_video_to_b_audio": (p_n, z_b, None)}
    values = brave_terms(terms)
    assert list(values) == list(terms)
    torch.testing.assert_close(values["b_audio_to_n_video"], regression_distance(p_b, z_n))
    torch.testing.assert_close(brave_loss(terms), brave_loss([(p_b, z_n), (p_n, z_b)]))
    values["b_audio_to_n_video"].backward()
    assert p_b.grad is not None and z_n.grad is None  # the target of a term gets nothing from it
    with pytest.raises(VideosslError, match="at least one"):
        brave_terms({})
