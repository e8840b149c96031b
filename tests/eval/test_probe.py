"""Linear probe / SVM / multi-view aggregation on small synthetic features (CPU, seconds)."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from videossl.errors import VideosslError
from videossl.eval.probe import evaluate_probe, predict_views, train_linear_probe, train_linear_svm
from videossl.eval.scores import aggregate_views, per_class_accuracy, top_k_accuracy


def clustered(n_per_class, num_classes=5, dim=32, spread=0.5, seed=0, centers=None):
    g = torch.Generator().manual_seed(seed)
    if centers is None:
        centers = 3.0 * torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centers[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return feats, labels, centers


@pytest.fixture(scope="module")
def separable():
    tr_x, tr_y, centers = clustered(60, seed=0)
    te_x, te_y, _ = clustered(40, seed=1, centers=centers)
    return tr_x, tr_y, te_x, te_y


@pytest.fixture(scope="module")
def noise():
    g = torch.Generator().manual_seed(3)
    tr_x, tr_y = torch.randn(200, 64, generator=g), torch.randint(0, 4, (200,), generator=g)
    te_x, te_y = torch.randn(2000, 64, generator=g), torch.randint(0, 4, (2000,), generator=g)
    return tr_x, tr_y, te_x, te_y


def acc(model, x, y):
    return top_k_accuracy(predict_views(model, x), y, 1)


@pytest.mark.parametrize(
    "opt,kw",
    [
        ("sgd", dict(epochs=15, lr=0.05, batch_size=64)),
        ("adam", dict(epochs=15, lr=1e-2, batch_size=64)),
        ("lbfgs", dict(epochs=50, weight_decay=1e-3)),
    ],
)
def test_probe_separable_and_random(separable, noise, opt, kw):
    tr_x, tr_y, te_x, te_y = separable
    model = train_linear_probe(tr_x, tr_y, 5, optimizer=opt, seed=0, **kw)
    assert acc(model, te_x, te_y) >= 0.98
    # random features, random labels: a held-out score near chance (0.25; 2000 samples, sd ~0.01)
    tr_x, tr_y, te_x, te_y = noise
    model = train_linear_probe(tr_x, tr_y, 4, optimizer=opt, seed=0, **kw)
    assert acc(model, tr_x, tr_y) > 0.5  # it did fit the training noise ...
    assert abs(acc(model, te_x, te_y) - 0.25) < 0.05  # ... and that does not transfer


def test_svm_separable_and_random(separable, noise):
    tr_x, tr_y, te_x, te_y = separable
    assert acc(train_linear_svm(tr_x, tr_y, 5), te_x, te_y) >= 0.98  # default C = 1e-4
    tr_x, tr_y, te_x, te_y = noise
    model = train_linear_svm(tr_x, tr_y, 4, C=1.0)
    assert acc(model, tr_x, tr_y) > 0.5
    assert abs(acc(model, te_x, te_y) - 0.25) < 0.05


def test_svm_matches_hand_solved_linearsvc_objective():
    # x = 2 is class 1, x = 0 is class 0; C = 1, bias regularised (LinearSVC, intercept_scaling=1):
    #   min 1/2 (w² + b²) + (1 − 2w − b)² + (1 + b)²  →  9w + 4b = 4, 5b + 4w = 0
    #   w = 4 / 5.8, b = −0.8 w.  (An unregularised bias would give a different optimum.)
    x = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
    y = torch.tensor([1, 0])
    m = train_linear_svm(x, y, 2, C=1.0, standardize=False, dtype=torch.float64, tol=1e-10)
    w, b = 4 / 5.8, -0.8 * 4 / 5.8
    assert m.linear.weight[1, 0].item() == pytest.approx(w, abs=1e-6)
    assert m.linear.bias[1].item() == pytest.approx(b, abs=1e-6)
    # one-vs-rest: the class-0 scorer solves the mirrored problem
    assert m.linear.weight[0, 0].item() == pytest.approx(-w, abs=1e-6)
    assert m.linear.bias[0].item() == pytest.approx(-b, abs=1e-6)
    # symmetric case x = ±1: b = 0 and w = 4C / (1 + 4C)
    C = 0.05
    m = train_linear_svm(
        torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
        torch.tensor([1, 0]),
        2,
        C=C,
        standardize=False,
        dtype=torch.float64,
        tol=1e-10,
    )
    assert m.linear.weight[1, 0].item() == pytest.approx(4 * C / (1 + 4 * C), abs=1e-6)
    assert m.linear.bias[1].item() == pytest.approx(0.0, abs=1e-6)


def test_standardizer_is_standardscaler():
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0], [8.0, 5.0]])
    m = train_linear_svm(x, torch.tensor([0, 1, 1]), 2)
    assert torch.allclose(m.mean, torch.tensor([4.0, 5.0]))
    assert torch.allclose(m.std, torch.tensor([math.sqrt(26 / 3), 1.0]))  # ddof=0; zero std -> 1


def test_aggregate_views_by_id_hand_computed():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 4.0]])
    ids = ["a", "b", "a", "b"]
    out = aggregate_views(v, ids, labels=[1, 0, 1, 0], views_per_video=2)
    assert out.video_ids == ["a", "b"]
    assert torch.equal(out.values, torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    assert out.labels.tolist() == [1, 0] and out.num_views.tolist() == [2, 2]
    # mean of softmax: a = mean(softmax([1,0]), softmax([3,0])); p1 = e^x / (e^x + 1)
    sm = aggregate_views(v, torch.tensor([7, 9, 7, 9]), how="mean_softmax")
    pa = (math.e / (math.e + 1) + math.e**3 / (math.e**3 + 1)) / 2
    assert sm.values[0, 0].item() == pytest.approx(pa, rel=1e-6)
    assert sm.video_ids == [7, 9]
    # grouping is by id, not position: shuffling the rows changes nothing
    perm = [3, 0, 2, 1]
    sh = aggregate_views(v[perm], [ids[i] for i in perm], views_per_video=2)
    assert torch.equal(sh.values[[sh.video_ids.index("a"), sh.video_ids.index("b")]], out.values)


def test_aggregate_views_errors():
    v = torch.randn(5, 3)
    with pytest.raises(VideosslError, match="exactly 2 views"):  # video "b" lost a view
        aggregate_views(v, ["a", "a", "b", "c", "c"], views_per_video=2)
    with pytest.raises(VideosslError, match="different labels"):
        aggregate_views(v, ["a", "a", "b", "b", "b"], labels=[0, 0, 1, 2, 1])
    with pytest.raises(VideosslError, match="one-to-one"):
        aggregate_views(v, ["a", "b"])


def test_metrics_against_hand_and_torchmetrics():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    y = torch.tensor([1, 1, 0, 0])
    assert top_k_accuracy(scores, y, 1) == pytest.approx(0.5)  # rows 0 and 3
    assert top_k_accuracy(scores, y, 2) == pytest.approx(0.75)  # + row 1
    pc = per_class_accuracy(scores, y, 3)
    assert pc[:2].tolist() == [0.5, 0.5] and math.isnan(pc[2])  # class 2 absent
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(300, 6, generator=g), torch.randint(0, 6, (300,), generator=g)
    for k in (1, 3):
        ref = MulticlassAccuracy(num_classes=6, top_k=k, average="micro")(s, t)
        assert top_k_accuracy(s, t, k) == pytest.approx(ref.item(), abs=1e-6)
    ref = MulticlassAccuracy(num_classes=6, average=None)(s, t)
    assert torch.allclose(per_class_accuracy(s, t, 6), ref, atol=1e-6)


def test_evaluate_probe_multiview(separable):
    tr_x, tr_y, te_x, te_y = separable
    model = train_linear_svm(tr_x, tr_y, 5)
    # 3 noisy views per test video, rows interleaved; ids are video names
    views = torch.cat([te_x + 0.3 * torch.randn_like(te_x) for _ in range(3)])
    ids = [f"v{i}" for i in range(len(te_y))] * 3
    res = evaluate_probe(model, views, te_y.repeat(3), ids, views_per_video=3)
    assert res.num_videos == len(te_y) and res.num_views == 3 * len(te_y)
    assert res.top1 >= 0.98 and res.top5 == 1.0
    # the per-video scores are the mean of the per-view decision values
    per_view = predict_views(model, views)
    assert torch.allclose(res.scores[0], per_view[[0, len(te_y), 2 * len(te_y)]].mean(0), atol=1e-5)
    res_f = evaluate_probe(model, views, te_y.repeat(3), ids, how="mean_features")
    assert torch.allclose(res_f.scores, res.scores, atol=1e-4)  # linear: mean of features == mean of scores
    with pytest.raises(VideosslError, match="exactly 4 views"):
        evaluate_probe(model, views, te_y.repeat(3), ids, views_per_video=4)


def test_probe_user_errors(separable):
    tr_x, tr_y, te_x, te_y = separable
    model = train_linear_probe(tr_x, tr_y, 5, optimizer="lbfgs", epochs=5)
    with pytest.raises(VideosslError, match="dimension mismatch"):
        predict_views(model, te_x[:, :16])
    with pytest.raises(VideosslError, match="dimension mismatch"):
        evaluate_probe(model, te_x[:, :16], te_y)
    with pytest.raises(VideosslError, match="trained on classes"):
        evaluate_probe(model, te_x, torch.full_like(te_y, 5))
    with pytest.raises(VideosslError, match="empty"):
        train_linear_probe(tr_x[:0], tr_y[:0], 5)
    with pytest.raises(VideosslError, match="empty"):
        evaluate_probe(model, te_x[:0], te_y[:0])
    with pytest.raises(VideosslError, match="must lie in"):
        train_linear_svm(tr_x, tr_y + 1, 5)
    # a class with no training rows → the test split's label map is suspect
    keep = tr_y != 4
    m4 = train_linear_svm(tr_x[keep], tr_y[keep], 5)
    with pytest.raises(VideosslError, match="never occur in the training"):
        evaluate_probe(m4, te_x, te_y)
    assert evaluate_probe(m4, te_x, te_y, allow_unseen_classes=True).num_videos == len(te_y)


def test_svm_reaches_the_optimum_of_the_ovr_objective():
    # gradient of 1/2||[W b]||² + C Σ max(0, 1 − y s)² vanishes at the returned solution
    g = torch.Generator().manual_seed(1)
    x = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=g)
    C = 0.1
    m = train_linear_svm(x, y, 3, C=C, dtype=torch.float64, tol=1e-10)
    W = m.linear.weight.detach().clone().requires_grad_(True)
    b = m.linear.bias.detach().clone().requires_grad_(True)
    s = m.standardize(x) @ W.T + b
    sign = torch.where(torch.nn.functional.one_hot(y, 3).bool(), 1.0, -1.0).double()
    obj = 0.5 * (W.pow(2).sum() + b.pow(2).sum()) + C * torch.clamp(1 - sign * s, min=0).pow(2).sum()
    obj.backward()
    assert W.grad.abs().max() < 1e-5 and b.grad.abs().max() < 1e-5  # |grad| at W = 0 is ~1
    assert W.abs().max() > 0.05  # a non-trivial solution
