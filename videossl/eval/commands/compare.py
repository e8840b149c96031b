"""Several evaluation results side by side: one Markdown table and one terminal table.

    videossl eval compare runs/brave-synthetic runs/simclr-synthetic
    videossl eval compare runs/a/eval/linear-synth/results.json runs/b/eval/knn-synth --out compare.md

Each argument is a ``results.json`` written by ``videossl eval linear | knn | finetune | tap``, a folder
holding one, or a run folder (every ``<run>/eval/*/results.json`` is taken). One row per
(source, encoder): protocol kind, dataset and split, top-1 / top-5 / mean-class accuracy, the
selective-prediction numbers when present (ECE, AURC of max-softmax and of the learned confidence
head), the TAP-Vid AJ / δ_avg / OA of ``eval tap`` (one row per query mode, so a run's correspondence
probe sits next to its linear probe), the number of test videos, and the checkpoint. Multi-split summaries (``--splits``) show
the mean ± std over their splits. Rows are sorted by kind, dataset, then top-1 (best first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from videossl.eval.compare import COLUMNS, compare, markdown
from videossl.eval.report import report_console

EPILOG = """\
examples:
  videossl eval compare runs/brave-synthetic runs/simclr-synthetic
  videossl eval compare runs/brave-ucf101/eval/linear-ucf101-ss runs/brave-ucf101/eval/finetune-ucf101-ss --out cmp.md
"""

def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RUN_OR_RESULTS", help="results.json files, eval folders or run folders")
    p.add_argument("--out", default=None, help="also write the Markdown table to this file")


def run_cli(args: argparse.Namespace) -> int:
    rows = compare(args.results)
    table = Table(title="evaluation comparison")
    for c in COLUMNS:
        table.add_column(c, justify="right" if c.endswith("%") or c in ("ECE", "AURC", "AURC learned", "test videos") else "left")
    for r in rows:
        table.add_row(*(r[c] for c in COLUMNS))
    console = report_console()
    console.print(table)
    md = markdown(rows)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
        console.print(f"wrote {args.out}")
    else:
        print(md)
    return 0
