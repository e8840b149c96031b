"""Where labelled sound comes from for audio evaluation: a shard set's videos, or an ESC-50 folder.

* :func:`shard_audio_items`: every sample of a split of a shard set (its video member's bytes hold the
  audio track; decoded later by :func:`videossl.data.audio.decode_audio`), in manifest order.
* :func:`list_esc50`: the ESC-50 release as its authors ship it (Piczak, "ESC: Dataset for Environmental
  Sound Classification", ACM MM 2015; github.com/karolpiczak/ESC-50): ``ROOT/meta/esc50.csv`` with the
  columns ``filename, fold, target, category, esc10, src_file, take`` and ``ROOT/audio/<filename>``
  (2000 five-second clips, 44.1 kHz mono WAV, 50 classes, 5 folds of 400). The folds come from the
  csv, never from the file names; the class names are the ``category`` of each ``target`` index.

Errors name the file and the fix: a missing csv or column, a row whose audio file is absent, a target
whose category differs between rows, folds outside 1..5.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from videossl.data.loader.dataset import VIDEO_EXTS
from videossl.data.loader.shardset import resolve_shards
from videossl.data.shards.format import iter_tar_samples
from videossl.errors import VideosslError

__all__ = ["AudioItem", "ESC50_COLUMNS", "esc50_folds", "list_esc50", "shard_audio_items"]

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


@dataclass(frozen=True)
class AudioItem:
    """One labelled recording: ``source`` is a file path or the bytes of a container holding an audio stream."""

    key: str
    label: int
    source: str | bytes
    fold: int | None = None


def list_esc50(root: str | os.PathLike, esc10: bool = False) -> tuple[list[AudioItem], list[str]]:
    """(items in csv order, class names by target index) of an ESC-50 folder; ``esc10``: the ESC-10 subset only
    (its 10 classes keep their ESC-50 names, relabelled 0..9 in target order)."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise VideosslError(f"{meta} not found: give the ESC-50 folder (it holds meta/esc50.csv and audio/), "
                            "e.g. the unpacked ESC-50-master of github.com/karolpiczak/ESC-50")
    with open(meta, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ESC50_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise VideosslError(f"{meta} lacks the column(s) {', '.join(missing)} (ESC-50's csv has {', '.join(ESC50_COLUMNS)})")
        rows = list(reader)
    if not rows:
        raise VideosslError(f"{meta} lists no recordings")
    names: dict[int, str] = {}
    for i, r in enumerate(rows, start=2):
        try:
            t, fold = int(r["target"]), int(r["fold"])
        except ValueError:
            raise VideosslError(f"{meta} line {i}: target {r['target']!r} / fold {r['fold']!r} are not integers") from None
        if not 1 <= fold <= 5:
            raise VideosslError(f"{meta} line {i}: fold {fold} is not in 1..5")
        if names.setdefault(t, r["category"]) != r["category"]:
            raise VideosslError(f"{meta} line {i}: target {t} is {r['category']!r} here but {names[t]!r} earlier")
    if esc10:
        rows = [r for r in rows if str(r["esc10"]).strip().lower() in ("true", "1")]
        if not rows:
            raise VideosslError(f"{meta} marks no recording as esc10")
    targets = sorted({int(r["target"]) for r in rows})
    relabel = {t: i for i, t in enumerate(targets)}
    absent = [r["filename"] for r in rows if not (root / "audio" / r["filename"]).is_file()]
    if absent:
        raise VideosslError(f"{len(absent)} recording(s) listed in {meta} are missing from {root / 'audio'}: {absent[:5]}")
    items = [AudioItem(Path(r["filename"]).stem, relabel[int(r["target"])], str(root / "audio" / r["filename"]), int(r["fold"]))
             for r in rows]
    return items, [names[t] for t in targets]


def esc50_folds(items: list[AudioItem], test_fold: int) -> tuple[list[AudioItem], list[AudioItem]]:
    """(train, test) of one cross-validation round: the test fold against the other four (Piczak, 2015)."""
    folds = sorted({it.fold for it in items if it.fold is not None})
    if test_fold not in folds:
        raise VideosslError(f"fold {test_fold} is not among the folds {folds}")
    return [it for it in items if it.fold != test_fold], [it for it in items if it.fold == test_fold]


def shard_audio_items(data_dir: str | os.PathLike, split: str) -> Iterator[AudioItem]:
    """Every sample of ``split`` of a shard-set folder: its key, label and video member bytes (audio inside)."""
    source = resolve_shards(data_dir, split)
    for url in source.urls:
        for key, group in iter_tar_samples(url):
            if key in source.exclude:
                continue
            ext = next((e for e in VIDEO_EXTS if e in group), None)
            if ext is None or "json" not in group:
                raise VideosslError(f"sample {key} in {url} has no video or json member: run `videossl data verify`")
            label = json.loads(group["json"]).get("label", -1)
            yield AudioItem(key, -1 if label is None else int(label), group[ext])
