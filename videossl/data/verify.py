"""``videossl data verify``: decode every sample of a shard set the way training will, and say what fails.

Every sample's video is read from the bytes in the tar through the reader's own
:func:`~videossl.data.decoding.open_video` (``auto``: the backend the shard maker recorded first, then
the fallback chain), with the frame count the sample's json records, at the frames a sampler can ask
for (first, a middle span, last). A sample that cannot be read that way is **unreadable**: listed with
its reason, and the command exits 1. With ``--backend all`` every installed backend also reads the same
frames and is compared with ``auto``'s: a backend that errs, counts other frames or returns other pixels
(mean abs error > 1 grey level) is a **disagreement** (reported; not a failure, since ``auto`` passes
such a backend over). ``--write-exclude`` records the unreadable samples in ``manifest.json``
(``exclude``) so that the reader skips them (counted in the skip log) without decoding them every epoch.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

import numpy as np

from videossl.data.decoding import DecodeError, available_backends, open_video
from videossl.data.shards.format import MANIFEST, iter_tar_samples, load_manifest, split_shard_paths, write_manifest
from videossl.data.shards.reencode import check_indices
from videossl.errors import VideosslError

VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov")

EPILOG = """\
examples:
  videossl data verify data/synth                       # every split, the auto chain training uses
  videossl data verify data/ucf101-s1 --backend all --workers 8
  videossl data verify data/k400 --split train --write-exclude --json verify.json
Exit code 1 when a sample is unreadable (its key, shard and reason are listed).
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="shard-set folder (with manifest.json)")
    p.add_argument("--backend", default="auto", choices=["auto", "all", "torchcodec", "decord", "pyav"],
                   help="auto: the reader's chain (default); all: also compare every installed backend with auto; "
                        "a name: only that backend")
    p.add_argument("--split", default=None, help="only this split (default: every split)")
    p.add_argument("--workers", type=int, default=1, help="processes reading shards in parallel")
    p.add_argument("--write-exclude", action="store_true",
                   help="record the unreadable samples in manifest.json (exclude) so the reader skips them")
    p.add_argument("--json", default=None, help="also write the report as JSON to this path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read(data: bytes, backend: str, n: int | None, prefer: str | None) -> tuple[str, np.ndarray]:
    with open_video(data, backend, expected_frames=n, prefer=prefer) as r:
        if n and r.num_frames != n:
            raise DecodeError(f"{r.backend} counts {r.num_frames} frames, the shard's json {n}")
        count = r.num_frames
        return r.backend, r.get_frames(check_indices(count)).numpy()


def verify_sample(key: str, members: dict[str, bytes], backend: str) -> dict[str, Any]:
    """``{"key", "ok", "reason", "decoder", "disagree": [...]}`` for one sample."""
    out: dict[str, Any] = {"key": key, "ok": False, "reason": None, "decoder": None, "disagree": []}
    try:
        meta = json.loads(members.get("json", b""))
    except ValueError as e:
        out["reason"] = f"bad json: {e}"
        return out
    ext = next((e for e in VIDEO_EXTS if e in members), None)
    if ext is None or not members[ext]:
        out["reason"] = "no video member" if ext is None else f"zero-length .{ext}"
        return out
    data, n, prefer = members[ext], meta.get("num_frames"), meta.get("decoder")
    first = "auto" if backend == "all" else backend
    try:
        out["decoder"], ref = _read(data, first, n, prefer)
        out["ok"] = True
    except (DecodeError, VideosslError) as e:
        out["reason"] = str(e)[:300]
        return out
    if backend == "all":
        for b in available_backends():
            try:
                _, got = _read(data, b, None, None)
                if got.shape != ref.shape:
                    out["disagree"].append(f"{b}: frames of shape {got.shape[1:3]} vs {ref.shape[1:3]}")
                elif (mae := float(np.abs(got.astype(np.int16) - ref.astype(np.int16)).mean())) > 1.0:
                    out["disagree"].append(f"{b}: other pixels (MAE {mae:.1f})")
            except (DecodeError, VideosslError) as e:
                out["disagree"].append(f"{b}: {str(e)[:160]}")
    return out


def _verify_shard(task: tuple[str, str, str]) -> list[dict[str, Any]]:
    split, path, backend = task
    rows = []
    for key, members in iter_tar_samples(path):
        row = verify_sample(key, members, backend)
        row.update(split=split, shard=Path(path).name)
        rows.append(row)
    return rows


def verify(folder: str | Path, backend: str = "auto", split: str | None = None, workers: int = 1,
           progress: bool = True) -> list[dict[str, Any]]:
    """One row per sample of the shard set (see :func:`verify_sample`), shard by shard."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    manifest = load_manifest(folder)
    splits = [split] if split else list(manifest["splits"])
    if split and split not in manifest["splits"]:
        raise VideosslError(f"split {split!r} is not in {folder} (splits: {', '.join(manifest['splits'])})")
    if workers < 1:
        raise VideosslError(f"--workers must be at least 1, got {workers}")
    tasks = [(s, str(p), backend) for s in splits for p in split_shard_paths(folder, s)]
    total = sum(int(manifest["splits"][s]["num_samples"]) for s in splits)
    rows: list[dict[str, Any]] = []
    pool = mp.get_context("spawn").Pool(min(workers, len(tasks))) if workers > 1 and len(tasks) > 1 else None
    cols = [TextColumn("verify"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        results = pool.imap(_verify_shard, tasks) if pool is not None else map(_verify_shard, tasks)
        with Progress(*cols, disable=not progress, transient=True) as bar:
            task = bar.add_task("verify", total=total)
            for shard_rows in results:
                rows += shard_rows
                bar.advance(task, len(shard_rows))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return rows


def write_exclude(folder: str | Path, rows: list[dict[str, Any]]) -> int:
    """Record the unreadable samples in the manifest's ``exclude`` list; returns how many it holds."""
    manifest = load_manifest(folder)
    bad = {(r["split"], r["key"]): r for r in rows if not r["ok"]}
    kept = [e for e in manifest.get("exclude", []) if (e["split"], e["key"]) not in bad]
    manifest["exclude"] = kept + [{"split": s, "key": k, "shard": r["shard"], "reason": r["reason"]}
                                  for (s, k), r in sorted(bad.items())]
    write_manifest(folder, manifest)
    return len(manifest["exclude"])


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not (Path(args.dir) / MANIFEST).is_file():
        raise VideosslError(f"{args.dir} is not a videossl shard set (no {MANIFEST})")
    rows = verify(args.dir, args.backend, args.split, args.workers, progress=not args.no_progress)
    bad = [r for r in rows if not r["ok"]]
    odd = [r for r in rows if r["disagree"]]
    if bad or odd:
        table = Table(title=f"{args.dir}: samples that fail or on which backends disagree")
        for col in ("split", "shard", "key", "problem"):
            table.add_column(col)
        for r in bad:
            table.add_row(r["split"], r["shard"], r["key"], f"[red]unreadable[/]: {r['reason']}")
        for r in odd:
            table.add_row(r["split"], r["shard"], r["key"], "; ".join(r["disagree"]))
        console.print(table)
    used: dict[str, int] = {}
    for r in rows:
        if r["ok"]:
            used[r["decoder"]] = used.get(r["decoder"], 0) + 1
    console.print(f"verified {len(rows)} samples ({args.backend}): {len(bad)} unreadable, {len(odd)} with backend "
                  f"disagreements; read by " + (", ".join(f"{b} ×{n}" for b, n in sorted(used.items())) or "none"))
    if args.write_exclude:
        n = write_exclude(args.dir, rows)
        console.print(f"manifest.json now excludes {n} sample(s): the reader skips them without decoding")
    if args.json:
        Path(args.json).write_text(json.dumps({"dir": str(args.dir), "backend": args.backend, "rows": rows}, indent=2) + "\n")
    return 1 if bad else 0
