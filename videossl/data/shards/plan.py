"""The shard plan of make-shards: sample keys, records cut into shards (deterministic from the seed,
before any video is touched), and the per-shard state that makes a rerun resume."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from videossl.data.shards.format import (
    SPLITS,
    ShardInfo,
    build_manifest,
    shard_name,
    write_split_index,
)
from videossl.data.shards.records import SourceListing, SourceRecord

STATE_DIR = ".make-shards"


def sanitise_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text) or "video"


def make_keys(records: list[SourceRecord]) -> list[str]:
    """Unique sample keys: file stem, or the relative path when stems collide, then ``_2``, ``_3``..."""
    stems = [sanitise_key(PurePosixPath(r.source_id).stem) for r in records]
    counts = Counter(stems)
    used: set[str] = set()
    keys = []
    for r, stem in zip(records, stems, strict=True):
        base = stem if counts[stem] == 1 else sanitise_key(str(PurePosixPath(r.source_id).with_suffix("")))
        key, i = base, 2
        while key in used:
            key, i = f"{base}_{i}", i + 1
        used.add(key)
        keys.append(key)
    return keys


@dataclass
class PlannedSample:
    record: SourceRecord
    key: str
    label: int
    size: int


@dataclass
class PlannedShard:
    split: str
    index: int
    samples: list[PlannedSample]
    digest: str = ""

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


def plan_shards(
    samples: list[PlannedSample], *, max_count: int, max_bytes: int, seed: int, encode: dict[str, Any]
) -> list[PlannedShard]:
    shards: list[PlannedShard] = []
    for split in SPLITS:
        items = [s for s in samples if s.record.split == split]
        random.Random(f"videossl-make-shards:{seed}:{split}").shuffle(items)
        cur: list[PlannedSample] = []
        cur_bytes = 0
        for s in items:
            if cur and (len(cur) >= max_count or cur_bytes + s.size > max_bytes):
                shards.append(PlannedShard(split, len([x for x in shards if x.split == split]), cur))
                cur, cur_bytes = [], 0
            cur.append(s)
            cur_bytes += s.size
        if cur:
            shards.append(PlannedShard(split, len([x for x in shards if x.split == split]), cur))
    for sh in shards:
        desc = {
            "encode": encode,
            "samples": [
                [s.key, s.record.source_id, s.label, s.record.label_name, s.record.caption, s.size]
                for s in sh.samples
            ],
        }
        sh.digest = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()
    return shards


# ----------------------------------------------------------------------------- shard state
def state_path(out: Path, shard: PlannedShard) -> Path:
    return out / STATE_DIR / (shard.name + ".json")


def verify_shard(out: Path, shard: PlannedShard) -> dict[str, Any] | None:
    """The recorded state of ``shard`` if the tar on disk is exactly what the plan asks for, else None."""
    try:
        state = json.loads(state_path(out, shard).read_text())
    except (OSError, ValueError):
        return None
    if state.get("digest") != shard.digest:
        return None
    written, skipped = state.get("written", []), state.get("skipped", [])
    if sorted([w["key"] for w in written] + [s["key"] for s in skipped]) != sorted(
        s.key for s in shard.samples
    ):
        return None
    tar_path = out / shard.name
    if not written:
        return None if tar_path.exists() else state
    try:
        if tar_path.stat().st_size != state.get("bytes"):
            return None
        with tarfile.open(tar_path, "r") as t:
            names = sorted(t.getnames())
    except (OSError, tarfile.TarError):
        return None
    expected = sorted(
        [f"{w['key']}.{w['container']}" for w in written] + [f"{w['key']}.json" for w in written]
    )
    return state if names == expected else None


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def assemble_manifest(out_dir: Path, source: str, listing: SourceListing, plan: list[PlannedShard],
                      states: dict[str, dict[str, Any]], params: dict[str, Any], reencode: bool) -> dict[str, Any]:
    """The manifest of a finished plan from its shards' states (and each split's index, written to
    ``out_dir``); asserts the count invariant ``input == written + skipped``."""
    shard_infos: dict[str, list[ShardInfo]] = {}
    labels_per_split: dict[str, list[int]] = {}
    durations: dict[str, float] = {}
    skipped: list[dict[str, Any]] = [{"source": s, "reason": why} for s, why in listing.missing]
    splits_present = [s for s in SPLITS if any(r.split == s for r in listing.records)]
    for split_name in splits_present:
        shard_infos[split_name], labels_per_split[split_name], durations[split_name] = [], [], 0.0
    for sh in plan:
        st = states[sh.name]
        if st["written"]:
            shard_infos[sh.split].append(ShardInfo(sh.name, len(st["written"]), st["bytes"]))
        labels_per_split[sh.split] += [w["label"] for w in st["written"]]
        durations[sh.split] += sum(w["duration"] for w in st["written"])
        skipped += [
            {"source": s["source"], "reason": s["reason"], "split": sh.split, "shard": sh.name}
            for s in st["skipped"]
        ]
    n_in = listing.num_entries
    n_written = sum(len(v) for v in labels_per_split.values())
    n_skipped = len(skipped)
    assert n_in == n_written + n_skipped, f"count invariant broken: {n_in} in != {n_written} + {n_skipped}"
    for split_name in splits_present:
        write_split_index(out_dir, split_name, shard_infos[split_name])
    containers = sorted({w["container"] for st in states.values() for w in st["written"]})
    manifest = build_manifest(
        kind=source,
        classes=listing.classes,
        splits=shard_infos,
        labels_per_split=labels_per_split,
        params=params,
        skipped=skipped,
        video={"codec": "h264", "container": "mp4"} if reencode else {"containers": containers},
        source_root=str(listing.root),
        extra={
            "counts": {"input": n_in, "written": n_written, "skipped": n_skipped, "unused": listing.unused},
            "total_duration": {k: round(v, 3) for k, v in durations.items()},
        },
    )
    return manifest
