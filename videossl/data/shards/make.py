"""``videossl data make-shards``: a video dataset on disk -> a WebDataset shard set.

What it does :

1. Lists the source (:mod:`videossl.data.shards.sources`): records + entries that are missing or invalid.
2. Plans the shards before touching any video: each split's records are shuffled with ``seed``
   (shards should mix classes) and cut into shards of at most ``max_count`` samples and at most
   ``max_bytes`` of *source* file bytes (known before encoding, so the plan is deterministic).
   Sample keys are the sanitised file stems (``[A-Za-z0-9_-]``; the relative path when stems collide,
   then ``_2``, ``_3``...), independent of the seed and of the split.
3. For each shard that is not already on disk and verified, every file is test-decoded with PyAV
   (first frame and last frame; a demuxed packet count below the header's frame count is a truncated
   file), optionally re-encoded, then the bytes to store are checked through the reader itself
   (:func:`~videossl.data.shards.reencode.check_readable`: a sequential decode gives the frame count, the
   reader's ``auto`` chain must return the same frames at the first, middle and last frames; the backend
   that did is recorded). A file that no backend reads from its bytes is stored as an H.264 re-encode
   (``--reencode-unreadable``, on by default) or skipped. Unreadable, empty or missing files never enter a shard;
   they are listed with their reason in ``manifest.json`` ``skipped`` and printed. Invariant, asserted
   and stored in ``manifest["counts"]``: ``input == written + skipped`` (HMDB51 flag-0 entries are
   ``unused``, reported apart).

Members of a sample: ``<key>.<container>`` (the video) and ``<key>.json``. When re-encoding the video
is always H.264/yuv420p in ``mp4``; without re-encoding the original file bytes are stored unchanged
under the source's extension (``mp4``, ``avi``, ``mkv``, ``webm``, ...), audio included. The json
records ``container`` (the member extension) plus key, label (-1 if unlabelled), label_name, split,
caption (when given), fps, num_frames (a sequential decode of the stored bytes), container_frames (demuxed
video packets), decoder (the backend that read it), width, height, duration (s), source
(path relative to the source root), has_audio.

Re-encoding happens when any of ``short_side``, ``fps``, ``keyframe_interval`` is set (or
``reencode=True``): short side S (aspect kept, even sizes; up- or down-scaled), frame rate F (nearest
frame, like ffmpeg's fps filter), a keyframe exactly every G frames (default 16), CRF, audio dropped
unless ``keep_audio`` (then AAC at the source's sample rate and layout, aligned with the video as in the
source). ``keep_audio`` has nothing to do without re-encoding: the original bytes hold their audio.
``has_audio`` in the json says whether the *stored* bytes have an audio stream.

Resuming: beside the tars, ``OUT/.make-shards/<shard>.json`` records what each finished shard holds
(written samples, skipped files with reasons, a hash of the plan and of the encode parameters). On a
rerun a shard is skipped when its state file matches the new plan and its tar exists, has the recorded
size and exactly the planned members; anything else is rewritten. Tars are written as ``.part`` and
renamed, and the state file is written after the tar, so a crash never leaves a half shard that counts.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from videossl.data.shards.format import (
    SPLITS,
    SplitWriter,
    ensure_writable_dir,
    json_bytes,
    load_manifest,
    write_manifest,
)
from videossl.data.shards.plan import (
    STATE_DIR,
    PlannedSample,
    PlannedShard,
    assemble_manifest,
    make_keys,
    plan_shards,
    state_path,
    verify_shard,
    write_json_atomic,
)
from videossl.data.shards.reencode import (
    DEFAULT_KEYFRAME_INTERVAL,
    EncodeParams,
    ProbeError,
    encode_params,
    probe_video,
    process_file,
    reencode_video,
    target_size,
)
from videossl.data.shards.sources import LAYOUTS, SourceListing, list_source
from videossl.errors import VideosslError

_SHARD_RE = re.compile(r"^(train|val|test)-\d{6}\.tar(\.part)?$")


# ----------------------------------------------------------------------------- main entry
def make_shards(
    source: str,
    root: str | os.PathLike,
    out: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    split: int | str = 1,
    short_side: int | None = None,
    fps: float | None = None,
    keyframe_interval: int | None = None,
    crf: int = 23,
    keep_audio: bool = False,
    reencode_unreadable: bool = True,
    workers: int = 1,
    val_fraction: float = 0.0,
    max_count: int = 256,
    max_bytes: int = 1 << 30,
    seed: int = 0,
    progress: bool = True,
    *,
    reencode: bool | None = None,
    preset: str = "medium",
    console: Any = None,
) -> dict[str, Any]:
    """Shard the dataset at ``root`` (layout ``source``) into ``out``; returns the manifest.

    ``split``: the official split 1-3 for ucf101/hmdb51; for folder/csv a split name (``train``,
    ``val``, ``test``) for rows without one (an int means ``train``). ``reencode`` None: re-encode iff
    ``short_side``, ``fps`` or ``keyframe_interval`` is set. See the module docstring for the rest.
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    if source not in LAYOUTS:
        raise VideosslError(f"unknown source layout {source!r}; valid layouts: {', '.join(LAYOUTS)}")
    _check_limits(workers, max_count, max_bytes)
    enc = encode_params(short_side, fps, keyframe_interval, crf, preset, keep_audio, reencode, reencode_unreadable)
    listing = list_source(source, root, annotations, split, val_fraction, seed)
    if listing.num_entries == 0:
        raise VideosslError(
            f"{source} source at {listing.root}: no videos listed (check --root/--annotations)"
        )
    out_dir = ensure_writable_dir(out)
    _check_out_dir(out_dir, listing)
    (out_dir / STATE_DIR).mkdir(exist_ok=True)

    plan = _plan(listing, enc, max_count, max_bytes, seed)
    _remove_stale(out_dir, plan, console)
    states: dict[str, dict[str, Any]] = {}
    todo: list[PlannedShard] = []
    for sh in plan:
        st = verify_shard(out_dir, sh)
        if st is None:
            todo.append(sh)
        else:
            states[sh.name] = st
    console.print(
        f"make-shards: {source} {listing.root} -> {out_dir}: {len(listing.records)} videos in {len(plan)} shards "
        f"({len(plan) - len(todo)} already done), {len(listing.missing)} missing/invalid"
        + (f", {listing.unused} unused (flag 0)" if listing.unused else "")
        + (
            f"; re-encode short side {short_side or 'as source'}, fps {fps or 'as source'}, keyframe every "
            f"{enc.keyframe_interval}, crf {crf}"
            if enc.reencode
            else "; original bytes, no re-encode"
        )
    )
    if todo:
        states.update(_write_pending(out_dir, todo, enc, workers, progress, console))
    params_out = {
        "source": source,
        "annotations": str(listing.annotations) if listing.annotations else None,
        "official_split": int(split) if source in ("ucf101", "hmdb51") else None,
        "reencode": enc.reencode,
        "short_side": short_side,
        "fps": fps,
        "keyframe_interval": enc.keyframe_interval if enc.reencode else None,
        "crf": crf if enc.reencode else None,
        "preset": preset if enc.reencode else None,
        "keep_audio": keep_audio,  # without re-encoding the original bytes (with any audio) are stored
        "reencode_unreadable": reencode_unreadable,
        "val_fraction": val_fraction,
        "max_count": max_count,
        "max_bytes": max_bytes,
        "seed": seed,
    }
    manifest = assemble_manifest(out_dir, source, listing, plan, states, params_out, enc.reencode)
    write_manifest(out_dir, manifest)
    _report(console, manifest, len(todo), len(plan))
    return manifest


def _check_limits(workers: int, max_count: int, max_bytes: int) -> None:
    if workers < 1:
        raise VideosslError(f"--workers must be at least 1, got {workers}")
    if max_count < 1:
        raise VideosslError(f"--max-count must be at least 1, got {max_count}")
    if max_bytes < 1:
        raise VideosslError(f"--max-bytes must be positive, got {max_bytes}")


def _plan(listing: SourceListing, enc: EncodeParams, max_count: int, max_bytes: int, seed: int) -> list[PlannedShard]:
    """Keys, labels and the shard plan of a listing (deterministic from ``seed``; no video is read)."""
    label_of = {name: i for i, name in enumerate(listing.classes)}
    for r in listing.records:
        if r.label_name is not None and r.label_name not in label_of:  # a layout bug, not a user error
            raise AssertionError(f"label {r.label_name!r} of {r.source_id} is not in the class list")
    keys = make_keys(listing.records)
    samples = [
        PlannedSample(r, k, label_of.get(r.label_name, -1) if r.label_name is not None else -1, _size(r.path))
        for r, k in zip(listing.records, keys, strict=True)
    ]
    encode_desc = asdict(enc) if enc.reencode else {"reencode": False}
    return plan_shards(samples, max_count=max_count, max_bytes=max_bytes, seed=seed, encode=encode_desc)


def _write_pending(out_dir: Path, todo: list[PlannedShard], enc: EncodeParams, workers: int, progress: bool,
                   console: Any) -> dict[str, dict[str, Any]]:
    """Probe / re-encode every file of the shards in ``todo`` (in ``workers`` processes) and write them."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    params = asdict(enc)
    tasks = [(str(s.record.path), params) for sh in todo for s in sh.samples]
    pool = mp.get_context("spawn").Pool(min(workers, len(tasks))) if workers > 1 and len(tasks) > 1 else None
    states: dict[str, dict[str, Any]] = {}
    try:
        results = pool.imap(process_file, tasks, chunksize=1) if pool is not None else map(process_file, tasks)
        cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*cols, console=console, disable=not progress) as bar:
            task = bar.add_task("make-shards", total=len(tasks))
            for sh in todo:
                bar.update(task, description=sh.name)
                states[sh.name] = _write_shard(out_dir, sh, results, bar, task)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return states


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _check_out_dir(out_dir: Path, listing: SourceListing) -> None:
    """Refuse to mix two different datasets in one folder (a rerun of the same one is fine)."""
    if not (out_dir / "manifest.json").exists():
        return
    try:
        old = load_manifest(out_dir)
    except VideosslError:
        return
    if old.get("kind") != listing.kind or old.get("source_root") != str(listing.root):
        raise VideosslError(
            f"{out_dir} already holds a shard set of {old.get('kind')} from {old.get('source_root')}; "
            "choose another --out or delete that folder"
        )


def _remove_stale(out_dir: Path, plan: list[PlannedShard], console: Any) -> None:
    """Remove ``.part`` leftovers of a crash and shard tars/states that the current plan has no place for."""
    wanted = {sh.name for sh in plan}
    removed = []
    for p in sorted(out_dir.iterdir()):
        if _SHARD_RE.match(p.name) and (p.name.endswith(".part") or p.name not in wanted):
            p.unlink()
            removed.append(p.name)
    for p in sorted((out_dir / STATE_DIR).glob("*.json*")):
        name = p.name.removesuffix(".part").removesuffix(".json")
        if p.name.endswith(".part") or name not in wanted:
            p.unlink()
    splits = {sh.split for sh in plan}
    for s in SPLITS:
        idx = out_dir / f"{s}.index.json"
        if s not in splits and idx.exists():
            idx.unlink()
            removed.append(idx.name)
    if removed:
        console.print(
            f"removed {len(removed)} stale file(s) of an earlier run: {', '.join(removed[:5])}"
            + (" ..." if len(removed) > 5 else "")
        )


def _write_shard(out_dir: Path, sh: PlannedShard, results: Any, bar: Any, task: Any) -> dict[str, Any]:
    state_file = state_path(out_dir, sh)
    state_file.unlink(missing_ok=True)
    (out_dir / sh.name).unlink(missing_ok=True)
    writer = SplitWriter(
        out_dir, sh.split, max_count=len(sh.samples) + 1, max_bytes=1 << 62, start_index=sh.index
    )
    written: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for s in sh.samples:
        res = next(results)
        bar.advance(task)
        r = s.record
        if res[0] != "ok":
            skipped.append({"key": s.key, "source": r.source_id, "reason": res[1]})
            continue
        _, ext, data, meta = res
        info = {
            "key": s.key,
            "label": s.label,
            "label_name": r.label_name,
            "split": r.split,
            **({"caption": r.caption} if r.caption is not None else {}),
            "fps": meta["fps"],
            "num_frames": meta["decoded_frames"],  # a sequential decode of the stored bytes
            "container_frames": meta["num_frames"],  # packets the demuxer found (the container's count)
            "decoder": meta["decoder"],  # the backend of the reader's auto chain that read it when written
            "width": meta["width"],
            "height": meta["height"],
            "duration": meta["duration"],
            "source": r.source_id,
            "container": ext,
            "has_audio": meta["has_audio"],
            **({"reencoded": meta["reencoded"]} if meta.get("reencoded") else {}),
            **({"frame_times": meta["frame_times"]} if meta.get("frame_times") else {}),  # VFR only
        }
        writer.write(s.key, {ext: data, "json": json_bytes(info)})
        written.append(info)
    infos = writer.close()
    assert len(infos) <= 1 and (not infos or infos[0].name == sh.name)
    state = {
        "shard": sh.name,
        "digest": sh.digest,
        "bytes": infos[0].bytes if infos else 0,
        "written": written,
        "skipped": skipped,
    }
    write_json_atomic(state_file, state)
    return state


def _report(console: Any, manifest: dict[str, Any], n_new: int, n_plan: int) -> None:
    from rich.table import Table

    c = manifest["counts"]
    skipped = manifest["skipped"]
    if skipped:
        t = Table(title=f"skipped: {len(skipped)} file(s) (all listed in manifest.json)", show_lines=False)
        t.add_column("source", overflow="fold")
        t.add_column("reason", overflow="fold")
        for s in skipped[:20]:
            t.add_row(s["source"], s["reason"])
        if len(skipped) > 20:
            t.add_row(f"... {len(skipped) - 20} more", "")
        console.print(t)
    per_split = ", ".join(f"{k} {v['num_samples']}" for k, v in manifest["splits"].items())
    console.print(
        f"input {c['input']} = written {c['written']} ({per_split}) + skipped {c['skipped']}"
        + (f"; unused {c['unused']}" if c["unused"] else "")
        + f"; shards written this run: {n_new} of {n_plan}"
    )


# ----------------------------------------------------------------------------- CLI
_EPILOG = """\
examples:
  # UCF101, official split 1, keep the original AVIs
  videossl data make-shards --source ucf101 --root UCF-101 --annotations ucfTrainTestlist --split 1 --out shards/ucf101-s1
  # HMDB51 split 2, re-encoded to short side 256 with a keyframe every 16 frames
  videossl data make-shards --source hmdb51 --root hmdb51_org --annotations testTrainMulti_7030_splits \\
      --split 2 --short-side 256 --keyframe-interval 16 --out shards/hmdb51-s2 --workers 8
  # Kinetics-400 (CVDF layout), short side 320, 8 workers; missing videos are counted and listed
  videossl data make-shards --source kinetics --root k400 --annotations k400/annotations --short-side 320 \\
      --out shards/k400 --workers 8
  # any ROOT/<class>/<video> folder, 10% of each class to val
  videossl data make-shards --source folder --root my_videos --val-fraction 0.1 --out shards/mine
  # a CSV of path,label[,split][,caption]
  videossl data make-shards --source csv --root clips --annotations clips/list.csv --out shards/clips

Rerunning the same command resumes: finished shards that verify are kept, the rest is rewritten.
Skipped files (missing, empty, undecodable) are printed and listed in OUT/manifest.json.
"""


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 512M, 1000000)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Turn a video dataset into WebDataset shards (encoded video + json per sample) with a manifest. "
        "Every file is test-decoded; unreadable or missing files are skipped and listed."
    )
    parser.epilog = _EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--source", required=True, choices=LAYOUTS, help="layout of the source dataset")
    parser.add_argument("--root", required=True, help="folder holding the videos")
    parser.add_argument(
        "--annotations",
        default=None,
        help="split/annotation files: ucfTrainTestlist folder, testTrainMulti_7030_splits folder, "
        "Kinetics CSV or folder of CSVs, or the csv source's CSV (default: looked up near ROOT)",
    )
    parser.add_argument(
        "--split",
        default="1",
        help="ucf101/hmdb51: official split 1, 2 or 3; folder/csv: split for rows without one "
        "(train|val|test, default train)",
    )
    parser.add_argument("--out", required=True, help="output folder for the shards and manifest.json")
    parser.add_argument("--short-side", type=int, default=None, help="re-encode to this short side (even)")
    parser.add_argument("--fps", type=float, default=None, help="re-encode to this frame rate")
    parser.add_argument(
        "--keyframe-interval",
        type=int,
        default=None,
        help=f"re-encode with a keyframe every G frames (default {DEFAULT_KEYFRAME_INTERVAL} when re-encoding)",
    )
    parser.add_argument("--crf", type=int, default=23, help="H.264 CRF when re-encoding (default 23)")
    parser.add_argument("--preset", default="medium", help="x264 preset when re-encoding (default medium)")
    parser.add_argument(
        "--reencode",
        action="store_true",
        help="re-encode to H.264 mp4 even without --short-side/--fps/--keyframe-interval",
    )
    parser.add_argument("--keep-audio", action="store_true",
                        help="when re-encoding, keep the first audio stream as AAC (its sample rate and channels, "
                             "aligned with the video); without it re-encoded shards have no audio. Without "
                             "re-encoding the original bytes are stored, audio included, with or without this flag")
    parser.add_argument("--reencode-unreadable", action=argparse.BooleanOptionalAction, default=True,
                        help="a file the reader cannot decode from its own bytes is stored as an H.264 re-encode "
                             "(default); --no-reencode-unreadable skips it with the reason")
    parser.add_argument("--workers", type=int, default=1, help="processes decoding/encoding in parallel")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="folder/csv: move this fraction of each class to val (stratified, seeded)",
    )
    parser.add_argument("--max-count", type=int, default=256, help="samples per shard at most (default 256)")
    parser.add_argument(
        "--max-bytes",
        type=parse_size,
        default=1 << 30,
        help="source bytes per shard at most, e.g. 512M (default 1G)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle and of --val-fraction")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    split: int | str = int(args.split) if str(args.split).strip().isdigit() else str(args.split)
    manifest = make_shards(
        args.source,
        args.root,
        args.out,
        annotations=args.annotations,
        split=split,
        short_side=args.short_side,
        fps=args.fps,
        keyframe_interval=args.keyframe_interval,
        crf=args.crf,
        keep_audio=args.keep_audio,
        reencode_unreadable=args.reencode_unreadable,
        workers=args.workers,
        val_fraction=args.val_fraction,
        max_count=args.max_count,
        max_bytes=args.max_bytes,
        seed=args.seed,
        progress=not args.no_progress,
        reencode=True if args.reencode else None,
        preset=args.preset,
    )
    return 0 if manifest["counts"]["written"] > 0 else 1


__all__ = [
    "EncodeParams",
    "ProbeError",
    "add_cli_arguments",
    "make_keys",
    "make_shards",
    "probe_video",
    "process_file",
    "reencode_video",
    "run_cli",
    "target_size",
    "verify_shard",
]
