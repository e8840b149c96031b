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
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
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


# ----------------------------------------------------------------------------- UCF101
def list_ucf101(
    root: Path, annotations: str | os.PathLike | None = None, split: int | str | None = 1
) -> SourceListing:
    n = _official_split(split, "ucf101")
    lists = _find_annotations(
        root, annotations, ["ucfTrainTestlist"], "classInd.txt", "--annotations PATH/ucfTrainTestlist"
    )
    classes_by_index: dict[int, str] = {}
    for ln in _read_lines(lists / "classInd.txt"):
        parts = ln.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise VideosslError(f"{lists / 'classInd.txt'}: bad line {ln!r} (expected '<index> <ClassName>')")
        classes_by_index[int(parts[0])] = parts[1]
    if sorted(classes_by_index) != list(range(1, len(classes_by_index) + 1)):
        raise VideosslError(f"{lists / 'classInd.txt'}: class indices must be 1..N without gaps (1-based)")
    classes = [classes_by_index[i] for i in range(1, len(classes_by_index) + 1)]
    lower = {c.lower(): i for i, c in enumerate(classes)}
    finder = _CaseInsensitiveFinder(root)
    records: list[SourceRecord] = []
    missing: list[tuple[str, str]] = []
    for split_name, fname in (("train", f"trainlist0{n}.txt"), ("test", f"testlist0{n}.txt")):
        list_path = lists / fname
        if not list_path.is_file():
            raise VideosslError(f"UCF101 split file {list_path} is missing")
        for ln in _read_lines(list_path):
            parts = ln.split()
            rel = parts[0].replace("\\", "/").lstrip("/")
            cls = rel.split("/")[0] if "/" in rel else None
            if cls is None or cls.lower() not in lower:
                missing.append((rel, f"{fname}: class folder {cls!r} is not in classInd.txt"))
                continue
            label = lower[cls.lower()]
            if len(parts) >= 2:
                if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                    missing.append(
                        (
                            rel,
                            f"{fname}: label {parts[1]!r} does not match class {classes[label]} "
                            f"(index {label + 1} in classInd.txt)",
                        )
                    )
                    continue
            path = finder.find(rel)
            if path is None:
                missing.append((rel, "file not found"))
                continue
            records.append(SourceRecord(path, classes[label], split_name, None, _rel(path, root)))
    return SourceListing("ucf101", root, classes, records, missing, annotations=lists)


# ----------------------------------------------------------------------------- HMDB51
def list_hmdb51(
    root: Path, annotations: str | os.PathLike | None = None, split: int | str | None = 1
) -> SourceListing:
    n = _official_split(split, "hmdb51")
    lists = _find_annotations(
        root,
        annotations,
        ["testTrainMulti_7030_splits", "test_train_splits"],
        f"*_test_split{n}.txt",
        "--annotations PATH/testTrainMulti_7030_splits",
    )
    pat = re.compile(rf"^(.+)_test_split{n}\.txt$")
    split_files = {m.group(1): p for p in sorted(lists.iterdir()) if (m := pat.match(p.name))}
    classes = sorted(split_files)
    finder = _CaseInsensitiveFinder(root)
    records: list[SourceRecord] = []
    missing: list[tuple[str, str]] = []
    unused = 0
    for cls in classes:
        sf = split_files[cls]
        for ln in _read_lines(sf):
            parts = ln.rsplit(None, 1)  # names may hold odd characters; the flag is the last field
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                missing.append(
                    (f"{cls}/{parts[0]}", f"{sf.name}: bad line {ln!r} (expected '<video> <0|1|2>')")
                )
                continue
            name, flag = parts
            if flag == "0":
                unused += 1
                continue
            rel = f"{cls}/{name}"
            path = finder.find(rel)
            if path is None:
                missing.append((rel, "file not found"))
                continue
            records.append(
                SourceRecord(path, cls, "train" if flag == "1" else "test", None, _rel(path, root))
            )
    return SourceListing("hmdb51", root, classes, records, missing, unused=unused, annotations=lists)


# ----------------------------------------------------------------------------- Kinetics
def kinetics_clip_name(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def _kinetics_csvs(root: Path, annotations: str | os.PathLike | None) -> list[Path]:
    if annotations is None:
        found = sorted(root.glob("*.csv"))
        if not found:
            raise VideosslError(
                "kinetics source needs --annotations: a CSV file or a folder with train.csv/validate.csv/test.csv"
            )
        return found
    a = Path(annotations).expanduser()
    if a.is_file():
        return [a.resolve()]
    if a.is_dir():
        found = sorted(a.glob("*.csv"))
        if not found:
            raise VideosslError(f"--annotations {a} holds no .csv files")
        return [f.resolve() for f in found]
    raise VideosslError(f"--annotations {a} does not exist")


def list_kinetics(root: Path, annotations: str | os.PathLike | None = None) -> SourceListing:
    csvs = _kinetics_csvs(root, annotations)
    rows: list[tuple[str | None, str, int, int, str | None, str]] = []  # label, yid, start, end, split, where
    bad: list[tuple[str, str]] = []
    for path in csvs:
        file_split = normalise_split(path.stem)
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                fields = [h.strip().lower() for h in (reader.fieldnames or [])]
                if not {"youtube_id", "time_start", "time_end"} <= set(fields):
                    raise VideosslError(
                        f"{path}: expected a header with label,youtube_id,time_start,time_end,split[,is_cc]; "
                        f"got {','.join(fields) or 'nothing'}"
                    )
                reader.fieldnames = fields
                for i, row in enumerate(reader, start=2):
                    where = f"{path.name} line {i}"
                    yid = (row.get("youtube_id") or "").strip()
                    try:
                        start = int(float(row.get("time_start") or ""))
                        end = int(float(row.get("time_end") or ""))
                    except ValueError:
                        bad.append((yid or where, f"{where}: time_start/time_end are not numbers"))
                        continue
                    if not yid:
                        bad.append((where, f"{where}: empty youtube_id"))
                        continue
                    label = (row.get("label") or "").strip() or None
                    s_raw = (row.get("split") or "").strip()
                    s = normalise_split(s_raw) if s_raw else file_split
                    if s is None:
                        bad.append(
                            (
                                kinetics_clip_name(yid, start, end),
                                f"{where}: unknown split {s_raw or path.stem!r}",
                            )
                        )
                        continue
                    rows.append((label, yid, start, end, s, where))
        except OSError as e:
            raise VideosslError(f"cannot read {path}: {e.strerror or e}") from None
    classes = sorted({r[0] for r in rows if r[0] is not None})
    # one walk over ROOT: clip name -> file (flat, class folders or split folders)
    files: dict[str, Path] = {}
    for dp, dns, fs in os.walk(root):
        dns.sort()
        for f in sorted(fs):
            if is_video_file(f):
                files.setdefault(os.path.splitext(f)[0], Path(dp) / f)
    records: list[SourceRecord] = []
    missing = list(bad)
    seen: dict[str, str] = {}
    for label, yid, start, end, s, where in rows:
        clip = kinetics_clip_name(yid, start, end)
        if clip in seen:
            missing.append((clip, f"{where}: duplicate clip (already listed at {seen[clip]})"))
            continue
        seen[clip] = where
        path = files.get(clip)
        if path is None:
            missing.append((clip + ".mp4", "file not found"))
            continue
        records.append(SourceRecord(path, label, s, None, _rel(path, root)))
    return SourceListing(
        "kinetics",
        root,
        classes,
        records,
        missing,
        annotations=Path(annotations).resolve() if annotations is not None else None,
    )


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
