"""Symmetric InfoNCE: hand computations, multi-positive targets, 2-process gloo all-gather."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from videossl.errors import VideosslError
from videossl.losses import gather_with_grad, infonce, infonce_distributed

torch.set_num_threads(1)

Q = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
K = [[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]


def _hand_infonce(q, k, tau, pos):
    """Plain-Python symmetric InfoNCE with uniform targets over positives."""
    n = len(q)
    s = [[sum(a * b for a, b in zip(q[i], k[j], strict=True)) / tau for j in range(n)] for i in range(n)]

    def direction(logits, pos):
        total = 0.0
        for i in range(n):
            lse = math.log(sum(math.exp(v) for v in logits[i]))
            ps = [j for j in range(n) if pos[i][j]]
            total += -sum(logits[i][j] - lse for j in ps) / len(ps)
        return total / n

    st = [[s[j][i] for j in range(n)] for i in range(n)]
    pt = [[pos[j][i] for j in range(n)] for i in range(n)]
    return 0.5 * (direction(s, pos) + direction(st, pt))


def test_infonce_3x2_against_hand_computation():
    eye = [[i == j for j in range(3)] for i in range(3)]
    want = _hand_infonce(Q, K, 0.5, eye)
    got = infonce(torch.tensor(Q), torch.tensor(K), 0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # unnormalised inputs give the same loss once normalised
    assert infonce(3 * torch.tensor(Q), 2 * torch.tensor(K), 0.5).item() == pytest.approx(want, rel=1e-6)


def test_infonce_multi_positive_targets_are_uniform_over_positives():
    labels = torch.tensor([7, 7, 2])  # samples 0 and 1 share a caption
    pos = [[labels[i] == labels[j] for j in range(3)] for i in range(3)]
    want = _hand_infonce(Q, K, 0.3, pos)
    got = infonce(torch.tensor(Q), torch.tensor(K), 0.3, labels=labels)
    assert got.item() == pytest.approx(want, rel=1e-6)
    mask = labels[:, None] == labels[None, :]
    assert infonce(torch.tensor(Q), torch.tensor(K), 0.3, positive_mask=mask).item() == pytest.approx(
        want, rel=1e-6
    )
    assert abs(want - _hand_infonce(Q, K, 0.3, [[i == j for j in range(3)] for i in range(3)])) > 1e-3
    bad = torch.eye(3, dtype=torch.bool)
    bad[2, 2] = False
    with pytest.raises(VideosslError, match="without any positive"):
        infonce(torch.tensor(Q), torch.tensor(K), 0.3, positive_mask=bad)


def test_infonce_equal_logits_is_log_b_and_symmetric():
    q = torch.ones(5, 4)
    assert infonce(q, q.clone(), 0.1).item() == pytest.approx(math.log(5), rel=1e-6)
    torch.manual_seed(0)
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(infonce(a, b, 0.2), infonce(b, a, 0.2))
    with pytest.raises(VideosslError, match="temperature"):
        infonce(a, b, 0.0)


def test_learnable_temperature_gets_the_right_gradient():
    torch.manual_seed(0)
    q, k = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    log_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    loss = infonce(q, k, 1 / log_scale.exp())
    (g,) = torch.autograd.grad(loss, log_scale)
    h = 1e-6
    with torch.no_grad():
        fd = (infonce(q, k, 1 / (log_scale + h).exp()) - infonce(q, k, 1 / (log_scale - h).exp())) / (2 * h)
    assert g.item() == pytest.approx(fd.item(), rel=1e-5)


def test_gather_and_distributed_fall_back_without_a_process_group():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x
    torch.testing.assert_close(infonce_distributed(x, x + 1, 0.5), infonce(x, x + 1, 0.5))


# --------------------------------------------------------------------------- 2-process gloo test

WORLD, B, D, TAU = 2, 3, 4, 0.2


def _full_batch():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(WORLD * B, 5, generator=g)
    y = torch.randn(WORLD * B, 5, generator=g)
    q = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    k = torch.randn(WORLD * B, D, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 3, 1])
    return x, y, q, k, labels


class _TwoTower(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.vq, self.vk = nn.Linear(5, D), nn.Linear(5, D)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / TAU)))

    def forward(self, x, y):
        return self.vq(x), self.vk(y), 1 / self.log_scale.exp()


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        x, y, q, k, labels = _full_batch()
        rows = slice(rank * B, (rank + 1) * B)
        res = {}
        for mode, use_labels, local in [
            ("full", False, False),
            ("local", False, True),
            ("labels", True, False),
            ("labels_local", True, True),
        ]:
            ql, kl = q[rows].clone().requires_grad_(), k[rows].clone().requires_grad_()
            tau = torch.tensor(TAU, dtype=torch.float64, requires_grad=True)
            loss = infonce_distributed(
                ql, kl, tau, labels=labels[rows] if use_labels else None, local_loss=local
            )
            loss.backward()
            res[mode] = (loss.detach(), ql.grad, kl.grad, tau.grad)
        # a replicated model whose parameter gradients get DDP's default reduction (all-reduce
        # sum / world size). Real DDP does exactly this; it is not wrapped here only because
        # DistributedDataParallel() imports torch._dynamo (~4 s per process on a busy CPU).
        model = _TwoTower()
        qq, kk, t = model(x[rows], y[rows])
        infonce_distributed(qq, kk, t).backward()
        for p in model.parameters():
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        res["ddp"] = {n: p.grad.clone() for n, p in model.named_parameters()}
        torch.save(res, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_process_gather_matches_single_process_loss_and_gradients(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    x, y, q, k, labels = _full_batch()

    for mode, use_labels, local in [
        ("full", False, False),
        ("local", False, True),
        ("labels", True, False),
        ("labels_local", True, True),
    ]:
        qf, kf = q.clone().requires_grad_(), k.clone().requires_grad_()
        tau = torch.tensor(TAU, dtype=torch.float64, requires_grad=True)
        ref = infonce(qf, kf, tau, labels=labels if use_labels else None)
        ref.backward()
        losses = torch.stack([res[r][mode][0] for r in range(WORLD)])
        if local:
            torch.testing.assert_close(losses.mean(), ref.detach())  # mean over ranks = full loss
        else:
            for r in range(WORLD):
                torch.testing.assert_close(losses[r], ref.detach())  # every rank returns the full loss
        # DDP averages over ranks: rank r's contribution to the mean is grad_r / WORLD
        gq = torch.cat([res[r][mode][1] for r in range(WORLD)]) / WORLD
        gk = torch.cat([res[r][mode][2] for r in range(WORLD)]) / WORLD
        gt = torch.stack([res[r][mode][3] for r in range(WORLD)]).mean()
        torch.testing.assert_close(gq, qf.grad, msg=f"{mode}: q grad")
        torch.testing.assert_close(gk, kf.grad, msg=f"{mode}: k grad")
        torch.testing.assert_close(gt, tau.grad, msg=f"{mode}: temperature grad")

    model = _TwoTower()
    qq, kk, t = model(x, y)
    infonce(qq, kk, t).backward()
    for r in range(WORLD):
        for n, p in model.named_parameters():
            torch.testing.assert_close(res[r]["ddp"][n], p.grad, msg=f"rank {r} DDP grad {n}")


def test_hard_negative_nce_against_hand_computation():
    from videossl.losses.infonce import hard_negative_nce

    q = [[1.0, 0.0], [0.6, 0.8]]
    kp = [[0.8, 0.6], [0.0, 1.0]]
    kn = [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [-1.0, 0.0]]]
    tau = 0.5

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    def row(i, negs):
        logits = [dot(q[i], kp[i]) / tau] + [dot(q[i], kn[i][m]) / tau for m in negs]
        lse = math.log(sum(math.exp(z) for z in logits))
        return lse - logits[0]

    got = hard_negative_nce(torch.tensor(q), torch.tensor(kp), torch.tensor(kn), tau)
    assert got.item() == pytest.approx((row(0, [0, 1]) + row(1, [0, 1])) / 2, rel=1e-6)
    valid = torch.tensor([[True, False], [False, False]])  # row 1 has no negative: left out of the mean
    got = hard_negative_nce(torch.tensor(q), torch.tensor(kp), torch.tensor(kn), tau, valid=valid)
    assert got.item() == pytest.approx(row(0, [0]), rel=1e-6)
    none = hard_negative_nce(torch.tensor(q), torch.tensor(kp), torch.tensor(kn), tau, valid=torch.zeros(2, 2, dtype=torch.bool))
    assert none.item() == 0.0
    with pytest.raises(VideosslError, match="k_neg"):
        hard_negative_nce(torch.tensor(q), torch.tensor(kp), torch.tensor(kp), tau)


def test_hard_negative_nce_learnable_temperature_gradient_with_masked_negatives():
    """Masked-out negatives (and rows without any) give the learnable temperature a finite gradient, the one of
    the valid entries alone (masking before the division made it NaN: 0 * inf)."""
    from videossl.losses.infonce import hard_negative_nce

    torch.manual_seed(0)
    q, kp, kn = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 2, 4)
    valid = torch.tensor([[True, False], [True, True], [False, False]])
    scale = torch.tensor(2.0, requires_grad=True)
    hard_negative_nce(q, kp, kn, 1.0 / scale.exp(), valid=valid).backward()
    assert torch.isfinite(scale.grad)
    ref_scale = torch.tensor(2.0, requires_grad=True)  # the same loss over the valid entries only
    qn, pn, nn_ = (torch.nn.functional.normalize(x, dim=-1) for x in (q, kp, kn))
    rows = [torch.cat([(qn[0] * pn[0]).sum()[None], (nn_[0, :1] @ qn[0])]),
            torch.cat([(qn[1] * pn[1]).sum()[None], (nn_[1] @ qn[1])])]
    ref = sum(torch.logsumexp(r * ref_scale.exp(), 0) - r[0] * ref_scale.exp() for r in rows) / 2
    ref.backward()
    torch.testing.assert_close(scale.grad, ref_scale.grad)
