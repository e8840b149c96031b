"""Reports shared by the ``videossl eval`` commands: numbers, Markdown, consoles, split summaries.

* :func:`confidence_metrics` and :func:`abstention_sweep`: selective prediction on per-video
  confidences — ECE (Guo et al., 2017), AUROC, AURC / E-AURC (Geifman et al., 2019) and the
  instructed abstention "answer iff κ ≥ τ" with payoff +1 correct, −τ/(1−τ) wrong, 0 abstained
  (answering pays exactly when P(correct) > τ; Chow, 1970);
* :func:`write_report`: the classification report of linear probing and fine-tuning;
* :func:`write_split_summary`: the mean ± std over official splits (``--splits 1,2,3``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from videossl.errors import VideosslError
from videossl.eval import calibration as cal

__all__ = ["abstention_sweep", "confidence_metrics", "fmt_num", "mean_over_splits", "report_console", "report_header",
           "write_markdown", "write_report", "write_split_summary"]


def fmt_num(x: Any, fmt: str = ".3f", scale: float = 1.0) -> str:
    """``scale * x`` formatted with ``fmt``; ``-`` for None / NaN."""
    return "-" if x is None or x != x else f"{scale * x:{fmt}}"


def report_header(title: str, protocol: list[str], results_heading: str = "Results") -> list[str]:
    """The opening of every evaluation report: title, the protocol as a list, then the results heading."""
    return [f"# {title}", "", "## Protocol", ""] + [f"- {x}" for x in protocol] + ["", f"## {results_heading}", ""]


def write_markdown(out_dir: Path, lines: list[str]) -> Path:
    """Write ``lines`` as ``out_dir/report.md``; returns its path."""
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def report_console(stderr: bool = False) -> Console:
    """A rich console for result tables: the terminal's width on a TTY, 160 columns when piped or
    logged (rich's default of 80 would truncate the table's names)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def mean_over_splits(per_split: dict[str, dict[str, Any]], keys=("top1", "top5", "mean_class_accuracy")) -> dict[str, Any]:
    """{encoder name: {metric: {mean, std, values}}} over the splits' ``results`` lists."""
    by_name: dict[str, dict[str, list[float]]] = {}
    for payload in per_split.values():
        for r in payload["results"]:
            for k in keys:
                v = r.get(k)
                if v is not None:
                    by_name.setdefault(r["name"], {}).setdefault(k, []).append(float(v))
    out: dict[str, Any] = {}
    for name, metrics in by_name.items():
        out[name] = {}
        for k, vals in metrics.items():
            m = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            out[name][k] = {"mean": m, "std": sd, "values": vals}
    return out


def write_split_summary(out_dir: Path, title: str, per_split: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json + report.md of a multi-split run (links to each split's own report)."""
    mean = mean_over_splits(per_split)
    first = next(iter(per_split.values()))
    payload = {"kind": first.get("kind"), "splits": list(per_split), "mean": mean,
               "protocol": first.get("protocol", []),
               "per_split": {s: str(Path(f"split{s}") / "results.json") for s in per_split},
               "results": [{"name": n, **{k: v["mean"] for k, v in m.items()}, "std": {k: v["std"] for k, v in m.items()}}
                           for n, m in mean.items()],
               "chance": first.get("chance")}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = report_header(f"{title}: mean over splits {', '.join(per_split)}", payload["protocol"], "Results (top-1 %)")
    lines += ["| encoder | " + " | ".join(f"split {s}" for s in per_split) + " | mean ± std |",
              "|---|" + "---|" * (len(per_split) + 1)]
    for name, m in mean.items():
        t = m["top1"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in t["values"])
                     + f" | {100 * t['mean']:.1f} ± {100 * t['std']:.1f} |")
    lines += ["", "Per-split reports: " + ", ".join(f"[split {s}](split{s}/report.md)" for s in per_split)]
    write_markdown(out_dir, lines)
    return payload



def confidence_metrics(conf: torch.Tensor, correct: torch.Tensor, tau: float, probability: bool) -> dict[str, Any]:
    rc = cal.risk_coverage_curve(conf, correct)
    at = cal.selective_at_threshold(conf, correct, tau)
    return {
        "ece": cal.expected_calibration_error(conf, correct) if probability else None,
        "auroc": cal.auroc(conf, correct),
        "aurc": rc.aurc,
        "e_aurc": rc.e_aurc,
        "coverage_at_tau": at.coverage,
        "risk_at_tau": at.risk,
    }


def abstention_sweep(conf: torch.Tensor, correct: torch.Tensor, taus) -> list[dict[str, float]]:
    """Answer iff κ ≥ τ; payoff +1 correct, −τ/(1−τ) wrong, 0 abstained (mean over all videos)."""

    out = []
    for tau in taus:
        if not 0 <= tau < 1:
            raise VideosslError(f"abstention thresholds must lie in [0, 1), got {tau}")
        pt = cal.selective_at_threshold(conf, correct, tau)
        answered = conf >= tau
        n_right = int((answered & correct).sum())
        n_wrong = int((answered & ~correct).sum())
        payoff = (n_right - tau / (1 - tau) * n_wrong) / conf.shape[0]
        out.append({"tau": float(tau), "coverage": pt.coverage, "risk": pt.risk, "payoff": payoff})
    return out


def write_report(out_dir: Path, results: list[dict[str, Any]], protocol: list[str], title: str = "Linear evaluation"
                 ) -> Path:
    lines = report_header(title, protocol)
    lines += ["| encoder | top-1 | top-5 | mean class acc | ECE | AURC | coverage@τ | risk@τ |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {fmt_num(r['top1'], '.1f', 100)} | {fmt_num(r['top5'], '.1f', 100)} | "
                     f"{fmt_num(r['mean_class_accuracy'], '.1f', 100)} | {fmt_num(r['ece'])} | {fmt_num(r['aurc'])} | "
                     f"{fmt_num(r['coverage_at_tau'], '.2f')} (τ={r['tau']}) | {fmt_num(r['risk_at_tau'])} |")
    if any("confidence" in r for r in results):
        lines += ["", "## Selective prediction", "",
                  "Confidence κ per test video; abstain when κ < τ. ECE: 15 bins (not defined for the margin).", "",
                  "| encoder | κ | ECE | AUROC | AURC | E-AURC | coverage@τ | risk@τ |", "|---|---|---|---|---|---|---|---|"]
        for r in results:
            for k, m in r.get("confidence", {}).items():
                lines.append(f"| {r['name']} | {k} | {fmt_num(m['ece'])} | {fmt_num(m['auroc'])} | {fmt_num(m['aurc'])} | "
                             f"{fmt_num(m['e_aurc'])} | {fmt_num(m['coverage_at_tau'], '.2f')} | {fmt_num(m['risk_at_tau'])} |")
        for r in results:
            if "learned" not in r.get("confidence", {}):
                lines.append(f"\n{r['name']}: no learned confidence head ({r.get('learned_confidence')})")
        lines += ["", "Instructed abstention (payoff +1 correct, −τ/(1−τ) wrong, 0 abstained; answering pays iff "
                  "P(correct) > τ):", "", "| encoder | κ | τ | coverage | risk | payoff |", "|---|---|---|---|---|---|"]
        for r in results:
            for k, rows in r.get("abstention", {}).items():
                for row in rows:
                    lines.append(f"| {r['name']} | {k} | {row['tau']:g} | {row['coverage']:.2f} | "
                                 f"{fmt_num(row['risk'])} | {row['payoff']:+.3f} |")
    lines += ["", "## Plots", ""]
    for r in results:
        for kind, path in r.get("plots", {}).items():
            lines.append(f"![{r['name']} {kind}]({Path(path).name})")
    return write_markdown(out_dir, lines)
