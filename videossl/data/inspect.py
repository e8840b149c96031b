"""Print what a shard set holds, or what a training run could not read.

Reads DIR/manifest.json and prints: the kind of set and its parameters, video resolution / fps /
frames, counts per split and class, the shard files, and the source files that were skipped when
the set was made (with reasons). --scan reads every sample's metadata from the tars (resolution,
fps, frame-count and duration distributions); --verify also decodes every video and checks every
member, listing bad members (key, shard, reason). Exit code 1 if --verify finds a bad member.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from videossl.data.decoding import DecodeError, open_video
from videossl.data.shards.format import iter_tar_samples, load_manifest, split_shard_paths

EPILOG = """\
examples:
  videossl data inspect data/synth
  videossl data inspect data/ucf101-s1 --scan
  videossl data inspect data/ucf101-s1 --verify --json report.json
  videossl data inspect runs/brave-synthetic      # a run folder: samples skipped per epoch, by reason
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="shard-set folder (with manifest.json), or a `videossl fit` run folder (its skip history)")
    p.add_argument("--scan", action="store_true", help="read every sample's metadata from the tars")
    p.add_argument("--verify", action="store_true", help="also decode every video and check every member")
    p.add_argument("--json", default=None, help="also write the report as JSON to this path")


def check_sample(key: str, members: dict[str, bytes], decode: bool) -> tuple[dict[str, Any] | None, str | None]:
    """(metadata, None) for a good sample, (metadata-or-None, reason) for a bad one."""
    if "json" not in members:
        return None, "no .json member"
    try:
        meta = json.loads(members["json"])
    except ValueError as e:
        return None, f"bad json: {e}"
    video_ext = next((e for e in ("mp4", "avi", "mkv", "webm") if e in members), None)
    if video_ext is None:
        return meta, "no video member"
    data = members[video_ext]
    if not data:
        return meta, f"zero-length .{video_ext}"
    if decode:

        try:
            with open_video(data) as reader:
                n = reader.num_frames
                if n < 1:
                    return meta, "no decodable frames"
                reader.get_frames([0, n - 1])
        except DecodeError as e:
            return meta, f"undecodable: {e}"
    return meta, None


def scan(shard_dir: str, manifest: dict[str, Any], decode: bool) -> dict[str, Any]:
    from rich.progress import Progress

    report: dict[str, Any] = {"bad": [], "samples": Counter(), "res": Counter(), "fps": Counter(),
                              "frames": Counter(), "duration": []}
    paths = [(s, p) for s in manifest["splits"] for p in split_shard_paths(shard_dir, s)]
    with Progress(transient=True) as bar:
        task = bar.add_task("scan" if not decode else "verify", total=len(paths))
        for split, path in paths:
            for key, members in iter_tar_samples(path):
                meta, reason = check_sample(key, members, decode)
                if reason:
                    report["bad"].append({"key": key, "shard": path.name, "reason": reason})
                    continue
                report["samples"][split] += 1
                report["res"][f"{meta.get('width')}x{meta.get('height')}"] += 1
                report["fps"][round(float(meta.get("fps", 0)), 2)] += 1
                report["frames"][int(meta.get("num_frames", 0))] += 1
                report["duration"].append(float(meta.get("duration", 0)))
            bar.advance(task)
    return report


def _counts(c: Counter, top: int = 6) -> str:
    items = c.most_common(top)
    rest = sum(c.values()) - sum(v for _, v in items)
    s = ", ".join(f"{k}: {v}" for k, v in items)
    return s + (f", other: {rest}" if rest else "")


def skip_history(run: Path) -> list[dict[str, Any]]:
    """Per training epoch of a ``videossl fit`` run: samples skipped, skip rate and counts by reason
    (the ``data/skipped*`` columns of ``metrics.csv``)."""
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    out = []
    for row in rows:
        if not row.get("data/skipped"):
            continue
        reasons = {k.removeprefix("data/skipped/"): int(float(v)) for k, v in row.items()
                   if k.startswith("data/skipped/") and v not in ("", None) and float(v) > 0}
        out.append({"epoch": int(float(row.get("epoch") or 0)), "skipped": int(float(row["data/skipped"])),
                    "rate": float(row.get("data/skip_rate") or 0.0), "reasons": reasons})
    return out


def inspect_run(run: Path, console, as_json: str | None) -> int:
    """A run folder: its skip history per epoch (what the reader could not use while training)."""
    from rich.table import Table

    hist = skip_history(run)
    table = Table(title=f"{run}: samples skipped while training")
    for col in ("epoch", "skipped", "rate", "reasons"):
        table.add_column(col, justify="right" if col != "reasons" else "left")
    for h in hist:
        reasons = ", ".join(f"{k} ×{v}" for k, v in sorted(h["reasons"].items(), key=lambda kv: -kv[1]))
        table.add_row(str(h["epoch"]), str(h["skipped"]), f"{100 * h['rate']:.2f} %", reasons or "-")
    console.print(table if hist else f"{run}: no skip counts in metrics.csv (a run from before skip metrics?)")
    if as_json:
        Path(as_json).write_text(json.dumps({"run": str(run), "skips": hist}, indent=2) + "\n")
    return 0


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    folder = Path(args.dir)
    if (folder / "metrics.csv").is_file() and not (folder / "manifest.json").is_file():
        return inspect_run(folder, console, args.json)
    manifest = load_manifest(args.dir)
    classes = manifest["classes"]
    splits = manifest["splits"]
    total = sum(s["num_samples"] for s in splits.values())
    console.print(f"[bold]{args.dir}[/]: {manifest['kind']} shard set, {len(classes)} classes, {total} videos, "
                  f"tool {manifest.get('tool_version')}")
    if manifest.get("video"):
        v = manifest["video"]
        console.print("video: " + ", ".join(f"{k} {v[k]}" for k in v))
    params = manifest.get("params", {})
    if params:
        console.print("params: " + ", ".join(f"{k}={params[k]}" for k in list(params)[:14]), soft_wrap=True)

    table = Table(title="videos per split and class")
    table.add_column("class")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for name in classes:
        row = [splits[s]["per_class"].get(name, 0) for s in splits]
        table.add_row(name, *map(str, row), str(sum(row)))
    table.add_row("[bold]all", *[f"[bold]{splits[s]['num_samples']}" for s in splits], f"[bold]{total}")
    console.print(table)

    shards = Table(title="shards")
    for col in ("split", "shards", "videos", "MB"):
        shards.add_column(col, justify="right" if col != "split" else "left")
    for s, v in splits.items():
        mb = sum(x["bytes"] for x in v["shards"]) / 1e6
        shards.add_row(s, str(len(v["shards"])), str(v["num_samples"]), f"{mb:.1f}")
    console.print(shards)

    skipped = manifest.get("skipped", [])
    console.print(f"skipped when made: {len(skipped)}")
    for item in skipped[:20]:
        console.print(f"  {item.get('source')}: {item.get('reason')}")
    if len(skipped) > 20:
        console.print(f"  ... and {len(skipped) - 20} more (see manifest.json)")

    report: dict[str, Any] = {"dir": str(args.dir), "classes": classes,
                              "splits": {s: v["num_samples"] for s, v in splits.items()}, "skipped": skipped}
    if args.scan or args.verify:
        r = scan(args.dir, manifest, decode=args.verify)
        stats = Table(title="scanned from the shards" + (" (every video decoded)" if args.verify else ""))
        stats.add_column("what")
        stats.add_column("values")
        stats.add_row("readable samples", _counts(r["samples"]))
        stats.add_row("resolution", _counts(r["res"]))
        stats.add_row("fps", _counts(r["fps"]))
        stats.add_row("frames", _counts(r["frames"]))
        d = sorted(r["duration"])
        if d:
            stats.add_row("duration s", f"min {d[0]:.2f}, median {d[len(d) // 2]:.2f}, max {d[-1]:.2f}")
        stats.add_row("bad members", str(len(r["bad"])))
        console.print(stats)
        for b in r["bad"][:20]:
            console.print(f"  [red]bad[/] {b['shard']}:{b['key']}: {b['reason']}")
        report.update(bad=r["bad"], scanned={s: r["samples"][s] for s in splits})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 1 if report.get("bad") else 0
