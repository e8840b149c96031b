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
    shard_name,
)
from videossl.data.shards.sources import SourceRecord

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
