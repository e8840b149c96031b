"""Several evaluation results side by side: rows of ``results.json`` files, as one Markdown table.

The ``videossl eval compare`` command is :mod:`videossl.eval.commands.compare`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videossl.errors import VideosslError

COLUMNS = ("source", "kind", "data", "split", "encoder", "top-1 %", "top-5 %", "mean class %", "ECE", "AURC",
           "AURC learned", "AJ %", "δ_avg %", "OA %", "test videos", "checkpoint")


def find_results(arg: str) -> list[Path]:
    p = Path(arg)
    if p.is_file():
        return [p]
    if p.is_dir():
        if (p / "results.json").is_file():
            return [p / "results.json"]
        found = sorted(p.glob("eval/*/results.json"))
        if found:
            return found
        raise VideosslError(f"{p} holds no results.json (nor eval/*/results.json): run `videossl eval linear` first")
    raise VideosslError(f"{arg} does not exist")


def load_results(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VideosslError(f"cannot read {path}: {e}") from None
    if not isinstance(d, dict) or not isinstance(d.get("results"), list):
        raise VideosslError(f"{path} is not a videossl eval results.json (no 'results' list)")
    return d


def _pct(x: Any, std: Any = None) -> str:
    if x is None or x != x:
        return "-"
    return f"{100 * x:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")


def _num(x: Any) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"


def rows_of(path: Path, d: dict[str, Any], label: str) -> list[dict[str, str]]:
    kind = d.get("kind") or path.parent.name.split("-")[0]
    data = d.get("dataset") or (d.get("config") or {}).get("data_dir", "?")
    multi = "splits" in d
    split = ("mean " + ",".join(map(str, d["splits"]))) if multi else ("-" if d.get("split") is None else str(d["split"]))
    out = []
    for r in d["results"]:
        std = r.get("std") or {}
        learned = ((r.get("confidence") or {}).get("learned") or {}).get("aurc")
        name = str(r.get("name", "?")) + (f" [{r['query_mode']}]" if r.get("query_mode") else "")  # eval tap rows
        out.append({
            "source": label, "kind": str(kind), "data": str(data), "split": split, "encoder": name,
            "top-1 %": _pct(r.get("top1"), std.get("top1") if multi else None),
            "top-5 %": _pct(r.get("top5"), std.get("top5") if multi else None),
            "mean class %": _pct(r.get("mean_class_accuracy"), std.get("mean_class_accuracy") if multi else None),
            "ECE": _num(r.get("ece")), "AURC": _num(r.get("aurc")), "AURC learned": _num(learned),
            "AJ %": _pct(r.get("average_jaccard")), "δ_avg %": _pct(r.get("average_pts_within_thresh")),
            "OA %": _pct(r.get("occlusion_accuracy")),
            "test videos": str(r.get("num_test_videos", "-")),
            "checkpoint": Path(d["checkpoint"]).name if d.get("checkpoint") and r.get("name") != "random-init" else "-",
            "_sort": (str(kind), str(data), -(r.get("top1") or 0.0)),
        })
    return out


def compare(paths: list[str]) -> list[dict[str, str]]:
    files = [f for a in paths for f in find_results(a)]
    if not files:
        raise VideosslError("nothing to compare: give results.json files, eval folders or run folders")
    # a short unique label per file: the shortest path suffix that tells them apart
    parts = [f.resolve().parent.parts for f in files]
    n = 1
    while n < max(len(p) for p in parts) and len({p[-n:] for p in parts}) < len(files):
        n += 1
    rows = []
    for f, p in zip(files, parts, strict=True):
        rows += rows_of(f, load_results(f), "/".join(p[-n:]))
    rows.sort(key=lambda r: r["_sort"])
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r[c] for c in COLUMNS) + " |" for r in rows]
    return "# Evaluation comparison\n\n" + "\n".join(lines) + "\n"


__all__ = ["COLUMNS", "compare", "find_results", "load_results", "markdown", "rows_of"]
