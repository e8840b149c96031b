"""PNG figures for evaluation results (matplotlib, Agg canvas; pyplot's global state is not used).

Every ``plot_*`` writer creates the parent folder, writes a PNG and returns its path;
:func:`plot_reliability_diagram` also returns the :class:`ReliabilityData` it drew. The ``*_figure``
builders return the :class:`matplotlib.figure.Figure` so tests (and notebooks) can inspect it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from videossl.errors import VideosslError
from videossl.eval.calibration import (
    ReliabilityData,
    reliability_data,
    risk_coverage_curve,
    selective_at_threshold,
)

__all__ = [
    "per_class_accuracy_figure",
    "plot_per_class_accuracy",
    "reliability_figure",
    "plot_reliability_diagram",
    "risk_coverage_figure",
    "plot_risk_coverage",
]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VideosslError(f"plot path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
    return path


def per_class_accuracy_figure(
    per_class: Tensor,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    sort: bool = False,
) -> Figure:
    acc = torch.as_tensor(per_class, dtype=torch.float64).flatten()
    if acc.numel() == 0:
        raise VideosslError("per_class accuracy is empty; nothing to plot")
    names = list(class_names) if class_names is not None else [str(i) for i in range(acc.numel())]
    if len(names) != acc.numel():
        raise VideosslError(f"{len(names)} class names for {acc.numel()} classes; they must match")
    order = list(range(acc.numel()))
    if sort:
        order.sort(key=lambda i: -math.inf if math.isnan(acc[i]) else acc[i].item(), reverse=True)
    heights = [0.0 if math.isnan(acc[i]) else float(acc[i]) for i in order]
    fig = Figure(figsize=(max(6.0, 0.18 * len(order) + 2), 4.0))
    ax = fig.add_subplot()
    ax.bar(range(len(order)), heights, color="tab:blue", label="accuracy")
    ax.set_xticks(range(len(order)), [names[i] for i in order], rotation=90, fontsize=6)
    mean = float(acc[~acc.isnan()].mean()) if bool((~acc.isnan()).any()) else math.nan
    ax.axhline(mean, color="k", ls="--", lw=1, label=f"mean class acc {mean:.3f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(title or "Per-class accuracy")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(
    per_class: Tensor,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    sort: bool = False,
) -> Path:
    """Bar chart of per-class top-1 accuracy (absent classes, NaN, drawn as 0); dashed mean."""
    return _save(per_class_accuracy_figure(per_class, class_names=class_names, title=title, sort=sort), path)


def reliability_figure(data: ReliabilityData, *, title: str | None = None) -> Figure:
    """Reliability diagram: per-bin accuracy bars (label ``"accuracy"``, non-empty bins only), the
    gap to the bin's mean confidence as hatched bars (label ``"gap"``), and the diagonal. The
    torchmetrics ``[1, 1]`` bin, when non-empty, is a narrow bar at x = 1."""
    nonempty = (data.count > 0).nonzero().flatten().tolist()
    width = 1.0 / data.n_bins
    xs, ws, acc, conf = [], [], [], []
    for b in nonempty:
        if b < data.n_bins:
            xs.append(float(data.lower[b]) + width / 2)
            ws.append(width)
        else:  # exact-1.0 bin
            xs.append(1.0)
            ws.append(width / 4)
        acc.append(float(data.accuracy[b]))
        conf.append(float(data.confidence[b]))
    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot()
    ax.bar(xs, acc, width=ws, color="tab:blue", edgecolor="k", lw=0.5, label="accuracy")
    gaps = [c - a for a, c in zip(acc, conf, strict=True)]
    ax.bar(
        xs,
        gaps,
        bottom=acc,
        width=ws,
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1.0 + width / 4)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title + ': ' if title else ''}ECE = {data.ece:.4f} ({data.n_bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability_diagram(
    confidences: Tensor, correct: Tensor, path: str | Path, *, n_bins: int = 15, title: str | None = None
) -> tuple[Path, ReliabilityData]:
    """Write the reliability diagram of top-label confidences; returns (path, the binned data)."""
    data = reliability_data(confidences, correct, n_bins=n_bins)
    return _save(reliability_figure(data, title=title), path), data


def risk_coverage_figure(
    confidences: Tensor, correct: Tensor, *, tau: float | None = None, title: str | None = None
) -> Figure:
    curve = risk_coverage_curve(confidences, correct)
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot()
    ax.plot(curve.coverage.numpy(), curve.risk.numpy(), "-", color="tab:blue", lw=1.5, label="risk-coverage")
    ax.axhline(
        curve.error_rate, color="gray", ls=":", lw=1, label=f"error rate {curve.error_rate:.3f} (random κ)"
    )
    if tau is not None:
        pt = selective_at_threshold(confidences, correct, tau)
        if pt.n_answered:
            ax.plot(
                [pt.coverage],
                [pt.risk],
                "r*",
                ms=12,
                label=f"τ={tau:g}: cov {pt.coverage:.3f}, risk {pt.risk:.3f}",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(0.05, float(curve.risk.max()) * 1.05))
    ax.set_xlabel("coverage")
    ax.set_ylabel("selective risk")
    ax.set_title(f"{title + ': ' if title else ''}AURC = {curve.aurc:.4f}, E-AURC = {curve.e_aurc:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_risk_coverage(
    confidences: Tensor,
    correct: Tensor,
    path: str | Path,
    *,
    tau: float | None = None,
    title: str | None = None,
) -> Path:
    """Write the risk–coverage curve with AURC / E-AURC in the title and the τ operating point."""
    return _save(risk_coverage_figure(confidences, correct, tau=tau, title=title), path)
