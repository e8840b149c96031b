"""Source layouts the shard maker reads: a dataset on disk -> a list of :class:`SourceRecord`.

Every layout returns a :class:`SourceListing`: the records (files that exist), the class list (index ->
name), and the entries that could not be used, each as ``(source, reason)`` (a file listed by the split
files that is not on disk, a line that does not parse, a label that contradicts its folder). Entries
that the official protocol marks as unused (HMDB51 flag 0) are only counted (``unused``).

Layouts (the official split files of UCF101 and HMDB51, Kinetics' annotation CSVs):

``folder``    ``ROOT/<class>/<video>`` (sub-folders of a class are searched too); everything goes to one
              split (``train`` unless named), or ``val_fraction`` of each class goes to ``val``
              (stratified, seeded). Classes: sorted names of the class folders that hold videos.
``csv``       ``path,label[,split][,caption]``, header optional (a header may order the columns freely).
              Paths are absolute, relative to ROOT, or relative to the CSV. Classes: sorted label names;
              if every label is an integer, the integer is the label index (classes ``"0".."max"``).
``ucf101``    ``ROOT/<Class>/v_<Class>_gXX_cYY.avi`` + ``ucfTrainTestlist/`` (classInd.txt 1-based,
              trainlist0N.txt, testlist0N.txt; CRLF; test lists with or without labels). File and folder
              names are matched case-insensitively (HandstandPushups / HandStandPushups). Splits: train, test.
``hmdb51``    ``ROOT/<class>/<video>.avi`` + ``testTrainMulti_7030_splits/<class>_test_split<N>.txt``,
              lines ``<video> <flag>``: 1 train, 2 test, 0 unused. Classes: alphabetical.
``kinetics``  annotation CSV(s) with a header ``label,youtube_id,time_start,time_end,split[,is_cc]``
              (label/split/is_cc optional) and files ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` anywhere
              under ROOT (flat, in class folders, in split folders). ``validate`` -> ``val``. Classes:
              alphabetical order of the CSV labels (never derived from the folders of a partial copy).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

from videossl.data.shards.official import kinetics_clip_name, list_hmdb51, list_kinetics, list_ucf101
from videossl.data.shards.records import (
    SPLIT_NAMES,
    VIDEO_EXTS,
    SourceListing,
    SourceRecord,
    _assign_val,
    _check_root,
    _default_split,
    _rel,
    is_video_file,
    normalise_split,
)
from videossl.errors import VideosslError


# ----------------------------------------------------------------------------- folder
def list_folder(
    root: Path, split: int | str | None = None, val_fraction: float = 0.0, seed: int = 0
) -> SourceListing:
    default = _default_split(split)
    records: list[SourceRecord] = []
    classes: list[str] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            (Path(dp) / f for dp, dns, fs in os.walk(d) for f in fs if is_video_file(f)),
            key=lambda p: p.as_posix(),
        )
        if not files:
            continue  # a folder without videos (e.g. an annotation folder) is not a class
        classes.append(d.name)
        records += [SourceRecord(f, d.name, default, None, _rel(f, root)) for f in files]
    if not classes:
        raise VideosslError(
            f"no videos found in {root}: the folder layout is ROOT/<class>/<video> "
            f"with extensions {', '.join(VIDEO_EXTS)}"
        )
    return SourceListing("folder", root, classes, _assign_val(records, val_fraction, seed))


# ----------------------------------------------------------------------------- csv
def _find_csv(root: Path, annotations: str | os.PathLike | None) -> Path:
    if annotations is not None:
        a = Path(annotations).expanduser()
        if not a.is_file():
            raise VideosslError(f"--annotations {a} is not a CSV file")
        return a.resolve()
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0].resolve()
    what = "no" if not found else f"{len(found)}"
    raise VideosslError(f"csv source: {what} .csv files in {root}; pass --annotations FILE.csv")


def list_csv(
    root: Path,
    annotations: str | os.PathLike | None = None,
    split: int | str | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> SourceListing:
    """``path,label[,split][,caption]`` rows; see the module docstring."""
    csv_path = _find_csv(root, annotations)
    default = _default_split(split)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f)]
    except OSError as e:
        raise VideosslError(f"cannot read {csv_path}: {e.strerror or e}") from None
    rows = [r for r in rows if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    cols = {"path": 0, "label": 1, "split": 2, "caption": 3}
    if rows and {"path", "label"} <= {c.strip().lower() for c in rows[0]}:
        header = [c.strip().lower() for c in rows.pop(0)]
        cols = {name: header.index(name) for name in ("path", "label", "split", "caption") if name in header}
    raw: list[tuple[Path, str, str | None, str | None, str]] = []
    missing: list[tuple[str, str]] = []
    for line_no, row in enumerate(rows, start=1):

        def cell(name: str, row: list[str] = row) -> str | None:
            i = cols.get(name)
            return row[i].strip() if i is not None and i < len(row) and row[i].strip() else None

        p, label = cell("path"), cell("label")
        where = f"{csv_path.name} row {line_no}"
        if p is None or label is None:
            missing.append((p or where, f"{where}: expected path,label[,split][,caption]"))
            continue
        s = cell("split")
        s_norm = normalise_split(s) if s is not None else None
        if s is not None and s_norm is None:
            missing.append((p, f"{where}: unknown split {s!r} (use {', '.join(SPLIT_NAMES)})"))
            continue
        cand = Path(p).expanduser()
        path = None
        for c in [cand] if cand.is_absolute() else [root / cand, csv_path.parent / cand]:
            if c.is_file():
                path = c
                break
        if path is None:
            missing.append((p, f"file not found (looked under {root} and {csv_path.parent})"))
            continue
        raw.append((path, label, s_norm, cell("caption"), _rel(path, root)))
    labels = sorted({r[1] for r in raw})
    if labels and all(re.fullmatch(r"\d+", lb) for lb in labels):
        classes = [str(i) for i in range(max(int(lb) for lb in labels) + 1)]
        norm = {lb: str(int(lb)) for lb in labels}
    else:
        classes = labels
        norm = {lb: lb for lb in labels}
    records = [SourceRecord(p, norm[lb], s or default, c, sid) for p, lb, s, c, sid in raw]
    free = [i for i, r in enumerate(raw) if r[2] is None]  # rows without a split column take the default/val
    for i, rec in zip(free, _assign_val([records[i] for i in free], val_fraction, seed), strict=True):
        records[i] = rec
    if not records and not missing:
        raise VideosslError(f"{csv_path} has no rows (expected path,label[,split][,caption])")
    return SourceListing("csv", root, classes, records, missing, annotations=csv_path)


# ----------------------------------------------------------------------------- dispatch
def list_source(
    source: str,
    root: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    split: int | str | None = 1,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> SourceListing:
    """List the videos of a dataset in one of :data:`LAYOUTS` (see the module docstring)."""
    if source not in LAYOUTS:
        raise VideosslError(f"unknown source layout {source!r}; valid layouts: {', '.join(LAYOUTS)}")
    if not 0.0 <= val_fraction < 1.0:
        raise VideosslError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_fraction > 0 and source not in ("folder", "csv"):
        raise VideosslError(
            f"--val-fraction applies to folder and csv sources only; {source} has official splits"
        )
    return LISTERS[source](_check_root(root), annotations, split, val_fraction, seed)


#: layout name → lister(root, annotations, split, val_fraction, seed). A new layout is one function and one entry.
LISTERS: dict[str, Callable[[Path, str | os.PathLike | None, int | str | None, float, int], SourceListing]] = {
    "folder": lambda root, annotations, split, val_fraction, seed: list_folder(root, split, val_fraction, seed),
    "csv": lambda root, annotations, split, val_fraction, seed: list_csv(root, annotations, split, val_fraction, seed),
    "ucf101": lambda root, annotations, split, val_fraction, seed: list_ucf101(root, annotations, split),
    "hmdb51": lambda root, annotations, split, val_fraction, seed: list_hmdb51(root, annotations, split),
    "kinetics": lambda root, annotations, split, val_fraction, seed: list_kinetics(root, annotations),
}
LAYOUTS = tuple(LISTERS)


__all__ = [
    "LAYOUTS",
    "VIDEO_EXTS",
    "SourceListing",
    "SourceRecord",
    "is_video_file",
    "kinetics_clip_name",
    "list_csv",
    "list_folder",
    "list_hmdb51",
    "list_kinetics",
    "list_source",
    "list_ucf101",
    "normalise_split",
]
