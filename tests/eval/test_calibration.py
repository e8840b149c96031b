"""Selective prediction and calibration metrics against hand computations and torchmetrics."""

import math

import pytest
import torch
from torchmetrics.classification import BinaryAUROC, MulticlassCalibrationError

from videossl.errors import VideosslError
from videossl.eval.calibration import (
    auroc,
    coverage_at_risk,
    expected_calibration_error,
    fit_temperature,
    held_out_split,
    margin,
    max_softmax,
    negative_entropy,
    reliability_data,
    risk_at_coverage,
    risk_coverage_curve,
    selective_at_threshold,
    top_label,
    train_confidence_probe,
    view_agreement,
)
from videossl.eval.probe import predict_views, train_linear_probe

CONF4 = torch.tensor([0.9, 0.8, 0.7, 0.6])
CORR4 = torch.tensor([True, False, True, False])


def probs_with_top(conf, correct, num_classes=10):
    """Probability rows whose max is `conf`, and labels that make the top class right or wrong."""
    rest = (1 - conf) / (num_classes - 1)
    p = rest[:, None].repeat(1, num_classes)
    p[:, 0] = conf
    labels = torch.where(correct, 0, 1)
    return p, labels


def test_confidence_scores_hand_computed():
    logits = torch.log(torch.tensor([[3.0, 1.0, 1.0], [1.0, 1.0, 2.0]]))  # softmax: [.6,.2,.2], [.25,.25,.5]
    assert torch.allclose(max_softmax(logits), torch.tensor([0.6, 0.5]))
    assert torch.allclose(margin(logits), torch.tensor([0.4, 0.25]))
    h0 = -(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2))
    h1 = -(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5))
    assert torch.allclose(negative_entropy(logits), torch.tensor([-h0, -h1]))
    # video a: views argmax 0, 0, 1 and mean argmax 0 → 2/3; video b: 1 view → 1
    views = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 0.5], [0.0, 1.0]])
    assert torch.allclose(view_agreement(views, ["a", "a", "a", "b"]), torch.tensor([2 / 3, 1.0]))


def test_ece_hand_computed_and_torchmetrics():
    conf = torch.tensor([0.15, 0.3, 0.35, 0.9, 0.95])
    corr = torch.tensor([False, True, False, True, True])
    # 5 bins of width .2: {.15}: |0-.15|; {.3,.35}: |.5-.325|; {.9,.95}: |1-.925|
    hand = (1 * 0.15 + 2 * 0.175 + 2 * 0.075) / 5
    assert expected_calibration_error(conf, corr, n_bins=5) == pytest.approx(hand, abs=1e-6)
    p, y = probs_with_top(conf, corr)
    tm = MulticlassCalibrationError(num_classes=10, n_bins=5, norm="l1")(p, y).item()
    assert tm == pytest.approx(hand, abs=1e-6)
    c2, k2 = top_label(p, y, logits=False)
    assert torch.allclose(c2, conf) and torch.equal(k2, corr)
    # random logits (with some saturated, exactly-1.0 softmax rows) at the default 15 bins
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(500, 7, generator=g)
    logits[:20, 0] += 200.0
    y = torch.randint(0, 7, (500,), generator=g)
    y[:10] = 0
    conf, corr = top_label(logits, y)
    assert int((conf == 1.0).sum()) == 20
    ref = MulticlassCalibrationError(num_classes=7)(logits, y).item()
    assert expected_calibration_error(conf, corr) == pytest.approx(ref, abs=1e-6)


def test_ece_calibrated_vs_miscalibrated_draws():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(20000, generator=g)
    assert expected_calibration_error(p, torch.rand(20000, generator=g) < p) < 0.02
    assert expected_calibration_error(p, torch.rand(20000, generator=g) < p**2) > 0.1  # overconfident


def test_reliability_bins():
    conf = torch.tensor([0.05, 0.5, 0.55, 1.0, 1.0])
    corr = torch.tensor([0, 1, 0, 1, 1])
    d = reliability_data(conf, corr, n_bins=4)
    assert d.count.tolist() == [1, 0, 2, 0, 2]  # [0,.25) [.25,.5) [.5,.75) [.75,1) [1,1]
    assert d.accuracy[0] == 0 and d.accuracy[2] == 0.5 and d.accuracy[4] == 1 and math.isnan(d.accuracy[1])
    assert d.confidence[2].item() == pytest.approx(0.525)
    assert d.ece == pytest.approx((0.05 + 2 * 0.025 + 0) / 5)
    assert d.mce == pytest.approx(0.05)


def test_risk_coverage_and_aurc_hand_computed():
    c = risk_coverage_curve(CONF4, CORR4)
    assert torch.allclose(c.coverage, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    assert torch.allclose(c.risk, torch.tensor([0, 1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    assert c.aurc == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    # oracle order (both correct first): risks 0, 0, 1/3, 2/4
    assert c.oracle_aurc == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert c.e_aurc == pytest.approx(
        (1 / 2) / 4
    )  # 1/3 + 1/2 of the AURC minus oracle's (0 + 0 + 1/3 + 1/2)/4
    assert c.error_rate == 0.5


def test_aurc_ties_cannot_move_the_result():
    conf = torch.tensor([0.9, 0.8, 0.8, 0.6])
    # the tie group {0.8, 0.8} holds one right and one wrong clip, in either order
    a = risk_coverage_curve(conf, torch.tensor([1, 1, 0, 0]))
    b = risk_coverage_curve(conf, torch.tensor([1, 0, 1, 0]))
    hand = (0 + 2 * (1 / 3) + 2 / 4) / 4  # both tied positions take the risk at the group's end
    assert a.aurc == pytest.approx(hand) and b.aurc == pytest.approx(hand)
    assert a.coverage.tolist() == [0.25, 0.75, 1.0] and a.thresholds.tolist() == pytest.approx(
        [0.9, 0.8, 0.6]
    )


def test_aurc_oracle_and_random():
    g = torch.Generator().manual_seed(2)
    corr = torch.rand(10000, generator=g) < 0.7
    oracle = risk_coverage_curve(
        corr.double() + 1e-3 * torch.rand(10000, generator=g, dtype=torch.float64), corr
    )
    assert oracle.e_aurc == pytest.approx(0.0, abs=1e-12)
    rnd = risk_coverage_curve(torch.rand(10000, generator=g), corr)
    assert abs(rnd.aurc - rnd.error_rate) < 0.02
    assert rnd.e_aurc > 0.1


def test_auroc_hand_and_torchmetrics():
    conf = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    corr = torch.tensor([1, 0, 1, 1, 0])
    assert auroc(conf, corr) == pytest.approx(4 / 6)  # 4 of the 6 (right, wrong) pairs are ordered
    assert auroc(torch.tensor([0.5, 0.5, 0.7]), torch.tensor([1, 0, 0])) == pytest.approx(0.25)  # tie = 1/2
    g = torch.Generator().manual_seed(3)
    conf = (torch.rand(400, generator=g) * 10).round() / 10  # many ties
    corr = torch.rand(400, generator=g) < conf
    assert auroc(conf, corr) == pytest.approx(BinaryAUROC()(conf, corr.long()).item(), abs=1e-6)
    assert math.isnan(auroc(conf, torch.ones(400, dtype=torch.bool)))


def test_threshold_policy_matches_curve():
    pt = selective_at_threshold(CONF4, CORR4, tau=0.75)
    assert (pt.n_answered, pt.coverage, pt.risk, pt.abstention_rate) == (2, 0.5, 0.5, 0.5)
    g = torch.Generator().manual_seed(4)
    conf = (torch.rand(300, generator=g) * 20).round() / 20
    corr = torch.rand(300, generator=g) < conf
    curve = risk_coverage_curve(conf, corr)
    for t, cov, risk in zip(
        curve.thresholds.tolist(), curve.coverage.tolist(), curve.risk.tolist(), strict=True
    ):
        p = selective_at_threshold(conf, corr, t)
        assert p.coverage == pytest.approx(cov) and p.risk == pytest.approx(risk)
    none = selective_at_threshold(conf, corr, 2.0)
    assert none.coverage == 0 and math.isnan(none.risk)
    assert risk_at_coverage(CONF4, CORR4, 0.5) == pytest.approx(0.5)
    assert risk_at_coverage(CONF4, CORR4, 0.6) == pytest.approx(1 / 3)
    assert coverage_at_risk(CONF4, CORR4, 0.34) == pytest.approx(0.75)
    assert coverage_at_risk(CONF4, CORR4, -0.1) == 0.0


def test_fit_temperature_recovers_scale():
    g = torch.Generator().manual_seed(5)
    z = 2 * torch.randn(3000, 10, generator=g)
    y = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)  # calibrated at T = 1
    assert fit_temperature(3 * z, y) == pytest.approx(3.0, rel=0.1)


def test_learned_confidence_probe_on_held_out_train_split():
    # 4 classes; feature 0 is a "difficulty" that blurs the class signal in features 1..4
    g = torch.Generator().manual_seed(6)

    def make(n):
        y = torch.randint(0, 4, (n,), generator=g)
        hard = torch.rand(n, generator=g)
        x = torch.randn(n, 8, generator=g) * (0.2 + 3 * hard[:, None])
        x[:, 1:5] += torch.nn.functional.one_hot(y, 4).float()
        x[:, 0] = hard
        return x, y

    x, y = make(1200)
    vids = torch.arange(1200) // 2  # 2 views per video
    fit_idx, held_idx = held_out_split(vids, 0.5, seed=0)
    assert set(vids[fit_idx].tolist()).isdisjoint(vids[held_idx].tolist())
    assert len(held_idx) == 600
    clf = train_linear_probe(x[fit_idx], y[fit_idx], 4, optimizer="lbfgs", epochs=50)
    held_correct = predict_views(clf, x[held_idx]).argmax(1) == y[held_idx]
    conf_probe = train_confidence_probe(x[held_idx], held_correct)
    xt, yt = make(1000)
    logits = predict_views(clf, xt)
    correct = logits.argmax(1) == yt
    g_conf = conf_probe(xt)
    assert g_conf.shape == (1000,) and bool(((g_conf >= 0) & (g_conf <= 1)).all())
    # the best possible ranking here is by the planted difficulty; the probe should find it, and
    # beat MSP, which only sees the blurred class evidence (here MSP ~0.48, difficulty ~0.66)
    best = auroc(-xt[:, 0], correct)
    assert best > 0.6
    assert auroc(g_conf, correct) > best - 0.03
    assert auroc(g_conf, correct) > auroc(max_softmax(logits), correct) + 0.05
    with pytest.raises(VideosslError, match="both correct and wrong"):
        train_confidence_probe(x[:10], torch.ones(10, dtype=torch.bool))


def test_calibration_user_errors():
    with pytest.raises(VideosslError, match="same shape"):
        risk_coverage_curve(CONF4, CORR4[:3])
    with pytest.raises(VideosslError, match="non-empty"):
        auroc(torch.tensor([]), torch.tensor([], dtype=torch.bool))
    with pytest.raises(VideosslError, match="probabilities"):
        expected_calibration_error(torch.tensor([1.5]), torch.tensor([True]))
    with pytest.raises(VideosslError, match="boolean"):
        aurc_input = torch.tensor([0.2, 0.3])
        risk_coverage_curve(aurc_input, torch.tensor([2, 0]))
