"""The official layouts: UCF101 and HMDB51 (with their three train/test splits) and Kinetics
(annotation CSVs, clips named ``<youtube_id>_<start>_<end>``)."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from videossl.data.shards.records import (
    SourceListing,
    SourceRecord,
    _CaseInsensitiveFinder,
    _find_annotations,
    _official_split,
    _read_lines,
    _rel,
    is_video_file,
    normalise_split,
)
from videossl.errors import VideosslError


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
