"""The method base's optimiser and schedule: LR factors, parameter groups, LR / gradient multipliers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from videossl.core.optim import OptimConfig, build_optimizer, lr_factor
from videossl.errors import VideosslError


def test_lr_factor_warmup_then_cosine_to_min():
    cfg = OptimConfig(warmup=10, total=110, min_lr_ratio=0.1)
    assert lr_factor(0, cfg, 999) == pytest.approx(0.1)  # (step + 1) / warmup
    assert lr_factor(9, cfg, 999) == pytest.approx(1.0)
    assert lr_factor(10, cfg, 999) == pytest.approx(1.0)
    assert lr_factor(60, cfg, 999) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_factor(110, cfg, 999) == pytest.approx(0.1)
    assert lr_factor(500, cfg, 999) == pytest.approx(0.1)  # clamped after the end
    frac = OptimConfig(warmup=0.1)  # fractions of the run
    assert lr_factor(4, frac, 50) == pytest.approx(1.0) and lr_factor(50, frac, 50) == pytest.approx(0.0)
    step = OptimConfig(schedule="step", step_every=100, step_gamma=0.5)
    assert [lr_factor(s, step, 10**6) for s in (0, 99, 100, 250)] == [1.0, 1.0, 0.5, 0.25]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)
        self.predictor = nn.Linear(4, 4)


def _group_of(opt, p):
    return next(g for g in opt.param_groups if any(q is p for q in g["params"]))


def test_groups_exclude_bias_and_norm_from_decay():
    net = _Net()
    opt = build_optimizer(net.named_parameters(), OptimConfig(weight_decay=0.05), lr=0.1)
    assert _group_of(opt, net.encoder.weight)["weight_decay"] == 0.05
    assert _group_of(opt, net.encoder.bias)["weight_decay"] == 0.0
    assert _group_of(opt, net.norm.weight)["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_lr_multipliers_scale_the_matching_groups_and_keep_the_schedule_ratio():
    net = _Net()
    cfg = OptimConfig(lr_multipliers={"predictor": 10.0}, warmup=0, total=10)
    opt = build_optimizer(net.named_parameters(), cfg, lr=0.1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # the logged group is a plain one
    assert _group_of(opt, net.predictor.weight)["lr"] == pytest.approx(1.0)
    assert _group_of(opt, net.predictor.bias)["lr"] == pytest.approx(1.0)
    assert _group_of(opt, net.predictor.bias)["weight_decay"] == 0.0
    assert _group_of(opt, net.encoder.weight)["lr"] == pytest.approx(0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, 10))
    for _ in range(5):
        opt.step()
        sched.step()
    enc, pred = _group_of(opt, net.encoder.weight)["lr"], _group_of(opt, net.predictor.weight)["lr"]
    assert pred == pytest.approx(10 * enc) and enc == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_lr_multiplier_pattern_matching_nothing_is_an_error():
    with pytest.raises(VideosslError, match="predictr"):
        build_optimizer(_Net().named_parameters(), OptimConfig(lr_multipliers={"predictr": 10.0}), lr=0.1)


def test_a_x10_predictor_lr_moves_the_predictor_10x_further_with_sgd():
    torch.manual_seed(0)
    a, b = _Net(), _Net()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4)
    moves = []
    for net, mult in ((a, {}), (b, {"predictor": 10.0})):
        before = net.predictor.weight.detach().clone()
        opt = build_optimizer(net.named_parameters(), OptimConfig(name="sgd", momentum=0.0, weight_decay=0.0,
                                                                  lr_multipliers=mult), lr=0.01)
        net.predictor(net.norm(net.encoder(x))).pow(2).mean().backward()
        opt.step()
        moves.append((net.predictor.weight - before).abs().sum().item())
    assert moves[0] > 0 and moves[1] == pytest.approx(10 * moves[0], rel=1e-4)


def test_fused_adamw_auto_is_off_on_cpu_and_true_is_refused_there():
    net = nn.Linear(4, 2)
    opt = build_optimizer(net.named_parameters(), OptimConfig(), 1e-3)
    assert not opt.defaults["fused"]  # auto on CPU parameters: torch's default implementation
    assert not build_optimizer(net.named_parameters(), OptimConfig(fused=False), 1e-3).defaults["fused"]
    with pytest.raises(VideosslError, match="needs every parameter on CUDA"):
        build_optimizer(net.named_parameters(), OptimConfig(fused=True), 1e-3)
    with pytest.raises(VideosslError, match="optim.fused"):
        OptimConfig(fused="yes")
    # other optimisers ignore it
    assert isinstance(build_optimizer(net.named_parameters(), OptimConfig(name="sgd", fused=True), 1e-3), torch.optim.SGD)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_adamw_auto_is_fused_on_cuda():
    net = nn.Linear(4, 2).cuda()
    assert build_optimizer(net.named_parameters(), OptimConfig(), 1e-3).defaults["fused"] is True
    assert build_optimizer(net.named_parameters(), OptimConfig(fused=True), 1e-3).defaults["fused"] is True
    assert not build_optimizer(net.named_parameters(), OptimConfig(fused=False), 1e-3).defaults["fused"]
