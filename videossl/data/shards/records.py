"""What a source layout lists: :class:`SourceRecord` / :class:`SourceListing`, and the helpers every
layout shares (split names, case-insensitive file lookup, stratified validation split, annotation lookup)."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from videossl.errors import VideosslError

SPLIT_NAMES = ("train", "val", "test")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class SourceRecord:
    """One video file to shard. ``label_name`` is None only for unlabelled rows (e.g. a label-less test CSV)."""

    path: Path
    label_name: str | None
    split: str
    caption: str | None
    source_id: str  # path relative to the source root (posix), used as ``source`` in the sample json


@dataclass
class SourceListing:
    kind: str
    root: Path
    classes: list[str]
    records: list[SourceRecord]
    missing: list[tuple[str, str]] = field(default_factory=list)  # (source, reason): counted as skipped
    unused: int = 0  # official "not used" entries (HMDB51 flag 0): neither written nor skipped
    annotations: Path | None = None

    @property
    def num_entries(self) -> int:
        """Entries that count as input: records + missing/invalid (``unused`` is reported apart)."""
        return len(self.records) + len(self.missing)


def normalise_split(name: str) -> str | None:
    return _SPLIT_ALIASES.get(name.strip().lower())


def is_video_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTS


# ----------------------------------------------------------------------------- helpers
def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read_lines(path: Path) -> list[str]:
    """Lines without line ends (CRLF or LF), BOM and surrounding whitespace; blank lines dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise VideosslError(f"cannot read {path}: {e.strerror or e}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


class _CaseInsensitiveFinder:
    """Resolve ``<dir>/<file>`` under ROOT, falling back to a case-insensitive match of each part."""

    def __init__(self, root: Path):
        self.root = root
        self._listings: dict[Path, dict[str, str]] = {}

    def _listing(self, d: Path) -> dict[str, str]:
        if d not in self._listings:
            try:
                names = sorted(os.listdir(d))
            except OSError:
                names = []
            lower: dict[str, str] = {}
            for n in names:
                lower.setdefault(n.lower(), n)
            self._listings[d] = lower
        return self._listings[d]

    def find(self, rel: str) -> Path | None:
        exact = self.root / rel
        if exact.is_file():
            return exact
        cur = self.root
        for part in rel.split("/"):
            hit = self._listing(cur).get(part.lower())
            if hit is None:
                return None
            cur = cur / hit
        return cur if cur.is_file() else None


def _check_root(root: str | os.PathLike) -> Path:
    r = Path(root).expanduser()
    if not r.exists():
        raise VideosslError(f"source root {r} does not exist")
    if not r.is_dir():
        raise VideosslError(f"source root {r} is not a folder")
    return r.resolve()


def _assign_val(records: list[SourceRecord], val_fraction: float, seed: int) -> list[SourceRecord]:
    """Move ``val_fraction`` of each class (at least one when a class has 2+ videos) to ``val``; seeded."""
    if val_fraction <= 0:
        return records
    by_class: dict[str | None, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_class[r.label_name].append(i)
    rng = random.Random(seed)
    to_val: set[int] = set()
    for name in sorted(by_class, key=lambda n: (n is None, n or "")):
        idx = sorted(by_class[name], key=lambda i: records[i].source_id)
        n_val = int(round(len(idx) * val_fraction))
        if n_val == 0 and len(idx) >= 2:
            n_val = 1
        n_val = min(n_val, len(idx) - 1) if len(idx) >= 2 else 0
        to_val.update(rng.sample(idx, n_val))
    return [
        SourceRecord(r.path, r.label_name, "val", r.caption, r.source_id) if i in to_val else r
        for i, r in enumerate(records)
    ]


def _default_split(split: int | str | None) -> str:
    if split is None or isinstance(split, int):
        return "train"
    s = normalise_split(str(split))
    if s is None:
        if str(split).strip().isdigit():
            return "train"
        raise VideosslError(
            f"--split {split!r} for folder/csv sources must be one of {', '.join(SPLIT_NAMES)}"
        )
    return s


def _official_split(split: int | str | None, kind: str) -> int:
    try:
        n = int(split) if split is not None else 1
    except (TypeError, ValueError):
        n = -1
    if n not in (1, 2, 3):
        raise VideosslError(f"--split for {kind} is the official split number 1, 2 or 3, got {split!r}")
    return n


def _find_annotations(
    root: Path, annotations: str | os.PathLike | None, names: Iterable[str], probe: str, flag_hint: str
) -> Path:
    """The folder holding ``probe`` (a file name or glob): ``annotations``, or a conventional place."""
    cands: list[Path] = []
    if annotations is not None:
        a = Path(annotations).expanduser()
        if not a.exists():
            raise VideosslError(f"--annotations {a} does not exist")
        if a.is_file():
            a = a.parent
        cands += [a] + [a / n for n in names]
    else:
        for base in (root, root.parent):
            cands += [base / n for n in names]
            cands += [
                base / n / n for n in names
            ]  # e.g. testTrainMulti_7030_splits/testTrainMulti_7030_splits
        cands.append(root)
    for c in cands:
        if c.is_dir() and any(c.glob(probe)):
            return c.resolve()
    looked = ", ".join(str(c) for c in dict.fromkeys(cands))
    raise VideosslError(f"split files ({probe}) not found; looked in: {looked}. Pass {flag_hint}")
