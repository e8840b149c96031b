"""WebDataset shard sets: writing, the manifest, and reading the manifest back.

A *shard set* is a folder::

    DIR/
      manifest.json            classes, counts per split and class, shard list, skipped files, params
      train-000000.tar ...     one tar per shard, ``<split>-%06d.tar``
      train.index.json         per-split shard index (shard name -> number of samples)

Every sample in a tar is a group of members that share a key (``<key>.mp4``, ``<key>.json``, and
for the synthetic set ``<key>.flow.npz``, ``<key>.mask.npy``, ``<key>.tracks.npz``). All members
are written as bytes so that what lands on disk is exactly what the caller produced.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videossl import __version__
from videossl.errors import VideosslError

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
FORMAT_NAME = "videossl-shards"
FORMAT_VERSION = 1


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def load_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written there (one clear error if not)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".videossl-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise VideosslError(f"cannot write to output folder {out}: {e.strerror or e}") from None
    return out


@dataclass
class ShardInfo:
    name: str
    num_samples: int
    bytes: int


@dataclass
class SplitWriter:
    """Writes the samples of one split into ``<split>-%06d.tar`` files of at most ``max_count`` samples.

    Tar headers use a fixed mtime/owner so that the same samples give the same tar bytes.
    """

    out_dir: Path
    split: str
    max_count: int = 256
    max_bytes: int = 1 << 30
    start_index: int = 0
    shards: list[ShardInfo] = field(default_factory=list)
    _tar: tarfile.TarFile | None = None
    _count: int = 0
    _bytes: int = 0
    _index: int = 0

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self._index = self.start_index

    def _open(self) -> None:
        name = shard_name(self.split, self._index)
        self._tmp = self.out_dir / (name + ".part")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._count = 0
        self._bytes = 0

    def _finish(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        name = shard_name(self.split, self._index)
        os.replace(self._tmp, self.out_dir / name)  # atomic: a shard on disk is always complete
        self.shards.append(ShardInfo(name, self._count, (self.out_dir / name).stat().st_size))
        self._tar = None
        self._index += 1

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
        if self._tar is not None and (self._count >= self.max_count or self._bytes >= self.max_bytes):
            self._finish()
        if self._tar is None:
            self._open()
        assert self._tar is not None
        for ext in sorted(members):
            data = members[ext]
            if not isinstance(data, bytes | bytearray):
                raise TypeError(f"member {key}.{ext} must be bytes, got {type(data).__name__}")
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uname = info.gname = "videossl"
            self._tar.addfile(info, io.BytesIO(data))
            self._bytes += len(data)
        self._count += 1

    def close(self) -> list[ShardInfo]:
        self._finish()
        return self.shards


def write_split_index(out_dir: Path, split: str, shards: Iterable[ShardInfo]) -> Path:
    """Write ``<split>.index.json`` in the wids shard-index layout (relative shard urls)."""
    path = Path(out_dir) / f"{split}.index.json"
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": split,
        "shardlist": [{"url": s.name, "nsamples": s.num_samples, "filesize": s.bytes} for s in shards],
    }
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


def build_manifest(
    *,
    kind: str,
    classes: list[str],
    splits: Mapping[str, list[ShardInfo]],
    labels_per_split: Mapping[str, Iterable[int]],
    params: Mapping[str, Any],
    skipped: list[dict[str, str]] | None = None,
    video: Mapping[str, Any] | None = None,
    source_root: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    split_entries = {}
    for split, shards in splits.items():
        counts = Counter(labels_per_split.get(split, []))
        split_entries[split] = {
            "num_samples": sum(s.num_samples for s in shards),
            "per_class": {classes[c]: counts.get(c, 0) for c in range(len(classes))},
            "shards": [{"name": s.name, "num_samples": s.num_samples, "bytes": s.bytes} for s in shards],
        }
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tool_version": __version__,
        "kind": kind,
        "classes": list(classes),
        "splits": split_entries,
        "skipped": list(skipped or []),
        "params": dict(params),
    }
    if video is not None:
        manifest["video"] = dict(video)
    if source_root is not None:
        manifest["source_root"] = source_root
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(out_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def load_manifest(shard_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``DIR/manifest.json``; a missing or foreign folder is a clear :class:`VideosslError`."""
    d = Path(shard_dir)
    if not d.exists():
        raise VideosslError(f"shard folder {d} does not exist")
    path = d / MANIFEST if d.is_dir() else d
    if not path.is_file():
        raise VideosslError(
            f"{d} has no {MANIFEST}: it is not a videossl shard set "
            "(make one with `videossl data synth` or `videossl data make-shards`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VideosslError(f"{path} is not valid JSON: {e}") from None
    if manifest.get("format") != FORMAT_NAME:
        raise VideosslError(f"{path} is not a videossl manifest (format={manifest.get('format')!r})")
    return manifest


def split_shard_paths(shard_dir: str | os.PathLike, split: str) -> list[Path]:
    """Paths of the shards of ``split`` listed in the manifest; missing files are a clear error."""
    d = Path(shard_dir)
    manifest = load_manifest(d)
    if split not in manifest["splits"]:
        have = ", ".join(manifest["splits"]) or "none"
        raise VideosslError(f"split {split!r} is not in {d} (splits: {have})")
    paths = [d / s["name"] for s in manifest["splits"][split]["shards"]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise VideosslError(f"{len(missing)} shard(s) of split {split!r} are missing in {d}: {missing[:5]}")
    return paths


def iter_tar_samples(path: str | os.PathLike):
    """Yield ``(key, {ext: bytes})`` for each sample of one tar, in file order.

    Members are grouped by key = the name up to the first '.', as webdataset does. This is for
    tools (inspect, preview, verification); training reads shards through the webdataset pipeline.
    """
    key, group = None, {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = os.path.basename(info.name)
            k, _, ext = base.partition(".")
            if k != key and key is not None:
                yield key, group
                group = {}
            key = k
            f = tar.extractfile(info)
            group[ext] = f.read() if f is not None else b""
    if key is not None:
        yield key, group


def manifest_counts(folder: str | os.PathLike) -> dict[str, int]:
    """Shard file name → sample count, from the manifest in ``folder`` ({} when it has none)."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {s["name"]: int(s["num_samples"]) for sp in m.get("splits", {}).values() for s in sp.get("shards", [])}
