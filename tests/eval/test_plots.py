"""PNG writers: files exist, are PNGs, and the reliability bars are the computed bin accuracies."""

import pytest
import torch
from matplotlib.container import BarContainer
from matplotlib.image import imread

from videossl.errors import VideosslError
from videossl.eval.calibration import risk_coverage_curve, selective_at_threshold
from videossl.eval.plots import (
    plot_per_class_accuracy,
    plot_reliability_diagram,
    plot_risk_coverage,
    reliability_figure,
    risk_coverage_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def data():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(200, generator=g)
    conf[:5] = 1.0  # exercises the [1, 1] bin
    return conf, torch.rand(200, generator=g) < conf**2


def test_per_class_plot(tmp_path):
    acc = torch.tensor([0.9, 0.5, float("nan"), 1.0])
    p = plot_per_class_accuracy(acc, tmp_path / "sub" / "pc.png", class_names=["a", "b", "c", "d"], sort=True)
    assert p == tmp_path / "sub" / "pc.png"
    assert_png(p)
    with pytest.raises(VideosslError, match="class names"):
        plot_per_class_accuracy(acc, tmp_path / "x.png", class_names=["a"])
    with pytest.raises(VideosslError, match=".png"):
        plot_per_class_accuracy(acc, tmp_path / "x.jpg")


def test_reliability_plot_bars_are_bin_accuracies(tmp_path):
    conf, corr = data()
    path, d = plot_reliability_diagram(conf, corr, tmp_path / "rel.png", n_bins=10)
    assert_png(path)
    nonempty = d.count > 0
    assert int(d.count[-1]) == 5 and d.accuracy[-1] == 1.0
    # recompute one bin by hand: [0.3, 0.4)
    m = (conf >= 0.3) & (conf < 0.4)
    assert d.accuracy[3].item() == pytest.approx(corr[m].float().mean().item())
    fig = reliability_figure(d)
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    heights = torch.tensor([r.get_height() for r in bars["accuracy"]], dtype=torch.float64)
    assert torch.allclose(heights, d.accuracy[nonempty])
    gap_tops = torch.tensor([r.get_y() + r.get_height() for r in bars["gap"]], dtype=torch.float64)
    assert torch.allclose(gap_tops, d.confidence[nonempty])  # gap bars reach the mean confidence
    assert f"ECE = {d.ece:.4f}" in ax.get_title()


def test_risk_coverage_plot_marks_tau(tmp_path):
    conf, corr = data()
    p = plot_risk_coverage(conf, corr, tmp_path / "rc.png", tau=0.5)
    assert_png(p)
    ax = risk_coverage_figure(conf, corr, tau=0.5).axes[0]
    curve = risk_coverage_curve(conf, corr)
    pt = selective_at_threshold(conf, corr, 0.5)
    line = ax.get_lines()[0]
    assert torch.allclose(torch.as_tensor(line.get_ydata()), curve.risk)
    star = [ln for ln in ax.get_lines() if ln.get_marker() == "*"][0]
    assert star.get_xdata()[0] == pytest.approx(pt.coverage) and star.get_ydata()[0] == pytest.approx(pt.risk)
    assert f"AURC = {curve.aurc:.4f}" in ax.get_title()
