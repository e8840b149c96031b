"""Which shards a stage reads and how many samples each holds: a shard-set folder + split (from its
manifest), a brace pattern, a glob or a list of tars; errors name what is wrong before any worker starts."""

from __future__ import annotations

import glob as globlib
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from videossl.data.shards.format import MANIFEST, load_manifest, manifest_counts, split_shard_paths
from videossl.errors import VideosslError

__all__ = ["ShardSource", "count_tar_samples", "resolve_shards"]


@dataclass
class ShardSource:
    urls: list[str]
    counts: list[int]
    classes: list[str] | None = None
    avg_sample_bytes: float = 0.0
    exclude: dict[str, str] = field(default_factory=dict)  # key -> reason (manifest "exclude", `data verify`)

    @property
    def total(self) -> int:
        return int(sum(self.counts))


def count_tar_samples(path: str | os.PathLike) -> int:
    """Number of distinct sample keys in a tar (header scan, data skipped)."""
    keys = set()
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if m.isreg():
                    keys.add(wds.tariterators.base_plus_ext(m.name)[0])
    except (tarfile.TarError, OSError) as e:
        raise VideosslError(f"cannot read shard {path}: {e}") from None
    keys.discard(None)
    return len(keys)


def _check_labels(manifest: dict, split: str, num_classes: int | None) -> None:
    classes = manifest.get("classes", [])
    entry = manifest["splits"][split]
    counted = sum(int(v) for v in entry.get("per_class", {}).values())
    n = int(entry.get("num_samples", 0))
    if entry.get("per_class") is not None and classes and counted != n:
        raise VideosslError(
            f"split {split!r}: {n - counted} of {n} samples have labels outside the class list "
            f"({len(classes)} classes); rebuild the shards with a complete class list"
        )
    if num_classes is not None and classes and len(classes) > num_classes:
        raise VideosslError(f"the data has {len(classes)} classes but the model is configured for num_classes={num_classes}")


def resolve_shards(spec: str | os.PathLike | Sequence[str], split: str | None = None,
                   num_classes: int | None = None) -> ShardSource:
    """Shard URLs and sample counts from a folder + split, a brace pattern, a glob or a list."""
    if spec is None or (isinstance(spec, str | list | tuple) and len(spec) == 0):
        raise VideosslError("empty shard spec: give a shard-set folder (+ split), a brace pattern, a glob or a list of tars")
    if isinstance(spec, str | os.PathLike) and Path(spec).is_dir():
        d = Path(spec)
        manifest = load_manifest(d)
        if split is None:
            raise VideosslError(f"{d} is a shard-set folder: also give the split (one of {', '.join(manifest['splits'])})")
        paths = split_shard_paths(d, split)
        _check_labels(manifest, split, num_classes)
        entry = manifest["splits"][split]
        counts = [int(s["num_samples"]) for s in entry["shards"]]
        nbytes = sum(int(s.get("bytes", 0)) for s in entry["shards"])
        if not paths or sum(counts) == 0:
            raise VideosslError(f"split {split!r} of {d} has no samples")
        classes = list(manifest.get("classes", [])) or None
        exclude = {e["key"]: e.get("reason", "?") for e in manifest.get("exclude", []) if e.get("split") == split}
        return ShardSource([str(p) for p in paths], counts, classes, nbytes / max(sum(counts), 1), exclude)
    items = [str(spec)] if isinstance(spec, str | os.PathLike) else [str(s) for s in spec]
    urls: list[str] = []
    for item in items:
        for u in wds.shardlists.expand_urls(item):
            if any(ch in u for ch in "*?["):
                found = sorted(globlib.glob(u))
                if not found:
                    raise VideosslError(f"shard glob {u!r} matches no files")
                urls.extend(found)
            else:
                urls.append(u)
    if not urls:
        raise VideosslError(f"shard spec {spec!r} expands to no shards")
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise VideosslError(f"{len(missing)} shard(s) do not exist: {missing[:5]}")
    if len(local) != len(urls):
        raise VideosslError("remote shard urls need a shard-set manifest for their sample counts: use a local folder + split")
    counts, classes, nbytes = [], None, 0
    for u in urls:
        p = Path(u)
        known = manifest_counts(p.parent)
        counts.append(known[p.name] if p.name in known else count_tar_samples(p))
        nbytes += p.stat().st_size
        if classes is None and (p.parent / MANIFEST).is_file():
            try:
                classes = list(load_manifest(p.parent).get("classes", [])) or None
            except VideosslError:
                classes = None
    if sum(counts) == 0:
        raise VideosslError(f"shard spec {spec!r} holds no samples")
    if num_classes is not None and classes and len(classes) > num_classes:
        raise VideosslError(f"the data has {len(classes)} classes but the model is configured for num_classes={num_classes}")
    return ShardSource(urls, counts, classes, nbytes / max(sum(counts), 1))
