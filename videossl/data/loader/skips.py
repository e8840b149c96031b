"""The skip log: every sample the reader could not use, with its key, shard, reason and epoch."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["SkipLog", "SkipSample"]


class SkipLog:
    """Skipped samples, one JSONL file per (rank, worker) under ``folder``: key, shard, reason, epoch."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, rank: int, worker: int) -> Path:
        return self.folder / f"skips-rank{rank:03d}-worker{worker:03d}.jsonl"

    def write(self, rank: int, worker: int, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path(rank, worker), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def records(self, epoch: int | None = None) -> list[dict[str, Any]]:
        out = []
        for p in sorted(self.folder.glob("skips-*.jsonl")):
            for line in p.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    if epoch is None or r.get("epoch") == epoch:
                        out.append(r)
        return out

    def counts(self, epoch: int | None = None) -> Counter:
        """Skips per reason kind (the reason's text before the first ':')."""
        return Counter(r["reason"].split(":")[0] for r in self.records(epoch))

    def clear(self) -> None:
        for p in self.folder.glob("skips-*.jsonl"):
            p.unlink()


class SkipSample(Exception):
    """Raised while processing a sample that must be skipped; the message is the reason."""
