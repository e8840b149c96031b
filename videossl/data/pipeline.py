"""WebDataset reader of encoded-video shards: split, shuffle, decode once, cut many views, batch.

Shard specs
    A shard-set folder + split (the manifest gives shard names, sample counts and classes), a brace
    pattern (``dir/train-{000000..000003}.tar``), a glob (``dir/*.tar``) or a list of paths. Sample
    counts come from the manifest beside the shards when there is one, else from a tar scan. A
    missing shard, an empty spec, a manifest whose labels fall outside its class list or a model
    with fewer classes than the data: :class:`~videossl.errors.VideosslError` at construction.

Splitting (``rank``/``world_size`` explicit, else ``torch.distributed``, else env ``RANK``/``WORLD_SIZE``)
    The shards (training: permuted per epoch with ``seed``; evaluation: manifest order) are laid end
    to end into one *global order* of sample positions. Every (rank, worker) gets a contiguous range
    of it and a *quota* that is a whole number of batches, so every rank yields exactly the same
    number of full batches (``len(dataset)`` batches; the DataLoader runs with ``batch_size=None``):

    - training: ``nb = (total // world_size) // batch_size`` batches per rank (drop rule: the last
      ``total - world_size * nb * batch_size`` positions of this epoch's order are not read; they
      differ per epoch because the shard order does). Workers split the rank's batches as evenly
      as possible and read disjoint ranges, so with ``total`` divisible by
      ``world_size * batch_size`` (and batches divisible by workers) every sample is seen exactly once.
    - evaluation: the positions are split into ``world_size`` contiguous, nearly equal parts;
      ``nb = ceil(ceil(total / world_size) / batch_size)`` per rank; the slots not filled by the
      rank's own samples (pad rule) hold *duplicates* flagged ``duplicate=True``: every sample is
      seen exactly once with ``duplicate=False`` across ranks; evaluators drop duplicates (or
      de-duplicate by key after gathering).

Bad samples
    Truncated / zero-length / undecodable video, a missing ``.mp4``/``.json`` member, bad JSON, a
    label outside the class list, a missing requested ground-truth member: the sample is skipped,
    logged (key, shard, reason) and recorded in a :class:`SkipLog` (one JSONL file per rank and
    worker under ``skip_log_dir``), and reported in the batch (``batch["skipped"]``). It is never
    replaced in place; to keep the quota the worker *appends* samples read after its range (wrapping
    around), flagged ``duplicate=True``.

Each sample is decoded once: the sampler gives every view's frame indices, their union is decoded
in one call and the views are cut from it (:func:`videossl.data.sampling.union_indices`).
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import math
import os
import random
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from videossl.data import sampling
from videossl.data.decoding import BACKENDS, open_video
from videossl.data.shards import MANIFEST, load_manifest, load_npy, load_npz, split_shard_paths
from videossl.data.transforms import AugmentConfig, EvalTransform, VideoAugment
from videossl.errors import VideosslError

log = logging.getLogger(__name__)

SAMPLERS = ("random", "uniform", "long", "narrow", "broad")
VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov")


# ------------------------------------------------------------------------------------ view config
@dataclass
class ViewSpec:
    """One view: how its frames are sampled and how they are transformed.

    ``sampler``: ``random`` (``frames`` at ``stride`` or ``target_fps``, random start), ``uniform``
    (``num_clips`` evenly spaced clips), ``long`` (up to ``frames`` frames at ``target_fps`` with a
    validity mask), ``narrow`` / ``broad`` (the BraVe pair, drawn jointly with ``placement``).
    ``train=True``: random augmentation (``augment``) to ``size``; ``train=False``: the eval
    transform (resize the short side to ``resize`` or ``size``, then ``crops`` crops); ``augment``'s
    ``output``/``mean``/``std`` set the output type in both cases. ``copies`` independent draws of
    the view (2 for SimCLR-style contrastive views). A sample's ``views`` list holds, in order, for
    each spec, each copy / clip, each crop, one tensor ``(T, 3, size, size)``.
    """

    name: str = "clip"
    sampler: str = "random"
    frames: int = 16
    stride: int = 2
    target_fps: float | None = None
    size: int = 224
    train: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_clips: int = 1
    crops: int = 1
    resize: int | None = None
    copies: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.sampler not in SAMPLERS:
            raise VideosslError(f"view {self.name!r}: unknown sampler {self.sampler!r} (choose one of {', '.join(SAMPLERS)})")
        if self.frames < 1 or self.size < 1 or self.copies < 1 or self.num_clips < 1 or self.crops < 1:
            raise VideosslError(f"view {self.name!r}: frames, size, copies, num_clips and crops must be >= 1")
        if self.sampler == "long" and not self.target_fps:
            raise VideosslError(f"view {self.name!r}: the long-video sampler needs target_fps")
        if self.sampler in ("narrow", "broad") and self.copies != 1:
            raise VideosslError(f"view {self.name!r}: a BraVe {self.sampler} view has copies=1")
        if self.train and self.crops != 1:
            raise VideosslError(f"view {self.name!r}: crops > 1 is an eval option (train=False)")

    @property
    def num_outputs(self) -> int:
        n = self.copies * (self.num_clips if self.sampler == "uniform" else 1)
        return n * (1 if self.train else self.crops)

    def out_bytes(self) -> int:
        per = 1 if self.augment.output == "uint8" else 4
        return self.num_outputs * self.frames * self.size * self.size * 3 * per


def _check_views(views: Sequence[ViewSpec], placement: str) -> list[ViewSpec]:
    views = [ViewSpec(**v) if isinstance(v, dict) else v for v in views]
    if not views:
        raise VideosslError("no views configured: give at least one ViewSpec")
    kinds = Counter(v.sampler for v in views)
    if kinds["narrow"] or kinds["broad"]:
        if kinds["narrow"] != 1 or kinds["broad"] != 1:
            raise VideosslError("a BraVe pair needs exactly one 'narrow' and one 'broad' view")
        if placement not in sampling.PLACEMENTS:
            raise VideosslError(f"unknown placement {placement!r}: choose one of {', '.join(sampling.PLACEMENTS)}")
    return views


# -------------------------------------------------------------------------------- shard resolution
@dataclass
class ShardSource:
    urls: list[str]
    counts: list[int]
    classes: list[str] | None = None
    avg_sample_bytes: float = 0.0

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


def _manifest_counts(folder: Path) -> dict[str, int]:
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {s["name"]: int(s["num_samples"]) for sp in m.get("splits", {}).values() for s in sp.get("shards", [])}


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


def resolve_shards(spec: str | os.PathLike | Sequence[str], split: str | None = None, num_classes: int | None = None) -> ShardSource:
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
        return ShardSource([str(p) for p in paths], counts, list(manifest.get("classes", [])) or None, nbytes / max(sum(counts), 1))
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
        known = _manifest_counts(p.parent)
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


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit, else torch.distributed, else env RANK / WORLD_SIZE, else (0, 1)."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise VideosslError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)


# ------------------------------------------------------------------------------------ partitioning
def _even(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


@dataclass(frozen=True)
class WorkerPlan:
    start: int  # first global position of this worker's own range
    real: int  # positions read from its own range
    quota: int  # samples it yields (a multiple of batch_size)


def plan_worker(total: int, rank: int, world_size: int, worker: int, num_workers: int, batch_size: int, train: bool) -> WorkerPlan:
    """This worker's range of the global order and its quota (see the module docstring)."""
    if train:
        nb = (total // world_size) // batch_size
        per_worker = [b * batch_size for b in _even(nb, num_workers)]
        start = rank * nb * batch_size + sum(per_worker[:worker])
        return WorkerPlan(start, per_worker[worker], per_worker[worker])
    rank_sizes = _even(total, world_size)
    nb = math.ceil(max(rank_sizes) / batch_size)
    quotas = [b * batch_size for b in _even(nb, num_workers)]
    before = sum(quotas[:worker])
    real = max(0, min(quotas[worker], rank_sizes[rank] - before))
    start = sum(rank_sizes[:rank]) + min(before, rank_sizes[rank])
    return WorkerPlan(start, real, quotas[worker])


def resume_plan(skip_batches: int, total: int, world_size: int, num_workers: int, batch_size: int,
                train: bool) -> list[tuple[int, int]]:
    """For each DataLoader worker: (the worker plan it plays, how many of that plan's batches it drops).

    A DataLoader takes batches from its workers round-robin starting at worker 0, passing over
    exhausted ones, and the worker plans' quotas differ by at most one batch, larger first
    (:func:`plan_worker`). After ``skip_batches`` batches the next one belongs to some plan ``l``;
    so that a restarted loader continues the uninterrupted order exactly, worker 0 plays plan
    ``l``, worker 1 the plan after it, and so on, each dropping the batches of its plan that were
    already consumed. With ``skip_batches=0`` this is the identity with no drops.
    """
    workers = max(num_workers, 1)
    remaining = [plan_worker(total, 0, world_size, w, workers, batch_size, train).quota // batch_size for w in range(workers)]
    drops = [0] * workers
    order: list[int] = []  # owners of the global batch sequence, round-robin over non-exhausted plans
    left = list(remaining)
    while any(left):
        for w in range(workers):
            if left[w]:
                left[w] -= 1
                order.append(w)
    for w in order[:skip_batches]:
        drops[w] += 1
    nxt = []
    for w in order[skip_batches:]:
        if w not in nxt:
            nxt.append(w)
        if len(nxt) == workers:
            break
    finished = [w for w in range(workers) if w not in nxt]  # fully consumed plans: drop everything
    return [(w, drops[w]) for w in nxt + finished]


def batches_per_rank(total: int, world_size: int, batch_size: int, train: bool) -> int:
    if train:
        return (total // world_size) // batch_size
    return math.ceil(math.ceil(total / world_size) / batch_size)


# ---------------------------------------------------------------------------------------- skip log
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


class _Skip(Exception):
    pass


def _is_identity(pos: np.ndarray, n: int) -> bool:
    return pos.shape[0] == n and (n == 0 or (int(pos[0]) == 0 and int(pos[-1]) == n - 1 and bool((np.diff(pos) == 1).all())))


# ------------------------------------------------------------------------------------ RAM estimate
def _host_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ram_estimate(
    views: Sequence[ViewSpec],
    batch_size: int,
    num_workers: int,
    prefetch_factor: int = 2,
    shuffle_buffer: int = 0,
    avg_sample_bytes: float = 0.0,
    source_hw: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Host RAM held by the loader: workers × prefetch × batch × Σ_views(outputs × T × H × W × 3 × dtype),
    plus each worker's decoded frames and encoded shuffle buffer."""
    w = max(num_workers, 1)
    in_flight = w * (prefetch_factor if num_workers > 0 else 1)
    batch = batch_size * sum(v.out_bytes() for v in views)
    frames = 0.0
    if source_hw:
        frames = max(1, num_workers) * sum(v.frames * v.copies * v.num_clips for v in views) * source_hw[0] * source_hw[1] * 3
    shuffle = max(1, num_workers) * shuffle_buffer * avg_sample_bytes
    total = in_flight * batch + frames + shuffle
    return {"batches_bytes": in_flight * batch, "frames_bytes": frames, "shuffle_bytes": shuffle, "total_bytes": total, "batch_bytes": batch}


def check_ram(estimate: dict[str, float], fraction: float, what: str = "data loader", host_bytes: int | None = None) -> str:
    host = host_bytes or _host_ram_bytes()
    gb = 2**30
    msg = (
        f"{what}: host RAM estimate {estimate['total_bytes'] / gb:.2f} GiB "
        f"(batches in flight {estimate['batches_bytes'] / gb:.2f} GiB, one batch {estimate['batch_bytes'] / 2**20:.1f} MiB, "
        f"decoded frames {estimate['frames_bytes'] / gb:.2f} GiB, shuffle buffers {estimate['shuffle_bytes'] / gb:.2f} GiB) "
        f"of {host / gb:.1f} GiB host RAM (limit {fraction:.0%})"
    )
    if estimate["total_bytes"] > fraction * host:
        raise VideosslError(msg + ": too much; lower batch_size, num_workers, prefetch_factor, frames or size")
    return msg


# ----------------------------------------------------------------------------------------- dataset
def _decode_member(ext: str, data: bytes) -> Any:
    if ext.endswith("npz"):
        return {k: torch.from_numpy(v) for k, v in load_npz(data).items()}
    if ext.endswith("npy"):
        return torch.from_numpy(load_npy(data))
    if ext.endswith("json"):
        return json.loads(data)
    return data


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples: views → list of (B, T, 3, S, S); masks/indices → (B, T); GT → stacked if possible."""
    out: dict[str, Any] = {
        "key": [s["key"] for s in samples],
        "shard": [s["shard"] for s in samples],
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "caption": [s.get("caption", "") for s in samples],
        "duplicate": torch.tensor([s["duplicate"] for s in samples], dtype=torch.bool),
        "padded": torch.tensor([s["padded"] for s in samples], dtype=torch.bool),
        "looped": torch.tensor([s["looped"] for s in samples], dtype=torch.bool),
        "views": [torch.stack(v) for v in zip(*(s["views"] for s in samples), strict=True)],
        "valid": [torch.stack(v) for v in zip(*(s["valid"] for s in samples), strict=True)],
        "indices": [torch.stack(v) for v in zip(*(s["indices"] for s in samples), strict=True)],
    }
    for k in samples[0].get("extras", {}):
        vals = [s["extras"][k] for s in samples]
        try:
            out[k] = torch.utils.data.default_collate(vals)
        except (RuntimeError, TypeError):
            out[k] = vals
    return out


class VideoShardDataset(IterableDataset):
    """Iterable over *batches* (dicts from :func:`collate`) of one rank; use ``DataLoader(batch_size=None)``.

    ``len(dataset)`` is the number of batches every rank yields per epoch.
    """

    def __init__(
        self,
        shards: str | os.PathLike | Sequence[str],
        views: Sequence[ViewSpec],
        *,
        split: str | None = None,
        batch_size: int = 8,
        train: bool = True,
        placement: str = "inside_random",
        decoder: str = "auto",
        shuffle_buffer: int = 64,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        num_classes: int | None = None,
        extras: Sequence[str] = (),
        skip_log_dir: str | os.PathLike | None = None,
        decoder_threads: int = 1,
    ):
        super().__init__()
        if batch_size < 1:
            raise VideosslError(f"batch_size must be >= 1, got {batch_size}")
        if decoder not in ("auto", *BACKENDS):
            raise VideosslError(f"unknown decoder {decoder!r}: choose one of auto, {', '.join(BACKENDS)}")
        self.views = _check_views(views, placement)
        self.placement = placement
        self.source = resolve_shards(shards, split, num_classes)
        self.num_classes = num_classes if num_classes is not None else (len(self.source.classes) if self.source.classes else None)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.batch_size, self.train = int(batch_size), bool(train)
        self.decoder, self.decoder_threads = decoder, int(decoder_threads)
        self.shuffle_buffer, self.seed = int(shuffle_buffer), int(seed)
        self.extras = tuple(e.lstrip(".").lower() for e in extras)
        self.skip_log = SkipLog(skip_log_dir or tempfile.mkdtemp(prefix="videossl-skips-"))
        self._epoch = torch.multiprocessing.Value("l", 0)  # shared with DataLoader workers
        self._skip = torch.multiprocessing.Value("l", 0)  # batches of this epoch to drop (exact resume)
        self.transforms = [
            VideoAugment(v.size, v.augment) if v.train else EvalTransform(v.size, v.resize, v.crops, v.augment) for v in self.views
        ]
        if len(self) == 0:
            raise VideosslError(
                f"{self.source.total} samples over {self.world_size} rank(s) make no full batch of {self.batch_size}: "
                "lower batch_size or use more data"
            )

    # -- epoch / length -------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = int(epoch)

    def set_skip(self, batches: int) -> None:
        """Start the next iteration at batch ``batches`` of the epoch (resuming mid-epoch).

        The dropped batches are still read and decoded (a bad sample is only known by decoding it,
        and the augmentation RNG must advance), so the stream after them is exactly the one an
        uninterrupted run sees; they are just not yielded.
        """
        self._skip.value = int(batches)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def __len__(self) -> int:
        return batches_per_rank(self.source.total, self.world_size, self.batch_size, self.train)

    @property
    def samples_per_rank(self) -> int:
        return len(self) * self.batch_size

    # -- global order ------------------------------------------------------------------------------
    def shard_order(self, epoch: int) -> list[int]:
        order = list(range(len(self.source.urls)))
        if self.train:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def _read(self, order: list[int], start: int, stop: int, worker: int, epoch: int) -> Iterator[dict[str, Any]]:
        """Raw samples at global positions [start, stop) of ``order``."""
        pos = 0
        for s in order:
            n = self.source.counts[s]
            lo, hi = max(start, pos), min(stop, pos + n)
            if lo < hi:
                yield from self._read_shard(self.source.urls[s], lo - pos, hi - lo, worker, epoch)
            pos += n
            if pos >= stop:
                return

    def _wanted_member(self, fname: str) -> bool:
        ext = os.path.basename(fname).partition(".")[2].lower()
        return ext == "json" or ext in VIDEO_EXTS or ext in self.extras

    def _read_shard(self, url: str, skip: int, take: int, worker: int, epoch: int) -> Iterator[dict[str, Any]]:
        shard = os.path.basename(url)

        errors = []

        def handler(exn: Exception) -> bool:
            errors.append(exn)
            self._record(worker, epoch, "?", shard, f"tar read error: {str(exn)[:200]}")
            return True

        # Read only the members a sample needs (the synthetic set's ~80 KB of ground truth per
        # sample is skipped unless asked for in ``extras``); a sample is grouped by key as before.
        it = wds.tariterators.tarfile_samples([{"url": url}], handler=handler, select_files=self._wanted_member)
        seen = 0
        try:
            for i, raw in enumerate(it):
                if i < skip:
                    continue
                if i >= skip + take:
                    break
                seen = i + 1
                raw["__shard__"] = shard
                yield raw
            else:  # the shard ended: fewer samples than the manifest lists is reported, never silent
                if seen < skip + take and not errors:
                    self._record(worker, epoch, "?", shard,
                                 f"shard ended early: {skip + take - max(seen, skip)} sample(s) missing (no .json or "
                                 f"video member, or a short tar); the manifest lists more")
        finally:
            it.close()

    # -- per-sample processing -----------------------------------------------------------------------
    def _record(self, worker: int, epoch: int, key: str, shard: str, reason: str) -> dict[str, Any]:
        rec = {"key": key, "shard": shard, "reason": reason, "epoch": epoch, "rank": self.rank, "worker": worker}
        log.warning("skipped sample %s in %s: %s", key, shard, reason)
        self.skip_log.write(self.rank, worker, rec)
        return rec

    def sample_clips(self, num_frames: int, fps: float, rng: np.random.Generator) -> list[tuple[int, sampling.Clip]]:
        """(view index, clip) for every clip of every view, in output order."""
        out: list[tuple[int, sampling.Clip]] = []
        pair: dict[str, sampling.Clip] = {}
        if any(v.sampler == "narrow" for v in self.views):
            nv = next(v for v in self.views if v.sampler == "narrow")
            bv = next(v for v in self.views if v.sampler == "broad")
            n, b = sampling.brave_pair(
                num_frames, fps, rng, nv.frames, nv.stride, bv.frames, bv.stride, self.placement,
                narrow_fps=nv.target_fps, broad_fps=bv.target_fps,
            )
            pair = {"narrow": n, "broad": b}
        for i, v in enumerate(self.views):
            if v.sampler in pair:
                out.append((i, pair[v.sampler]))
            elif v.sampler == "random":
                out += [(i, sampling.random_clip(num_frames, fps, rng, v.frames, v.stride, v.target_fps)) for _ in range(v.copies)]
            elif v.sampler == "uniform":
                for _ in range(v.copies):
                    out += [(i, c) for c in sampling.uniform_clips(num_frames, fps, v.num_clips, v.frames, v.stride, v.target_fps)]
            else:  # long
                out += [
                    (i, sampling.long_video_clip(num_frames, fps, v.target_fps, v.frames, rng if v.train else None))
                    for _ in range(v.copies)
                ]
        return out

    def process(self, raw: dict[str, Any], rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
        """Raw tar group → sample dict; raises ``_Skip(reason)`` for a bad sample."""
        if "json" not in raw:
            raise _Skip("missing member: .json")
        try:
            meta = json.loads(raw["json"])
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            raise _Skip(f"bad json: {str(e)[:100]}") from None
        label = meta.get("label", -1)
        label = -1 if label is None else label
        if not isinstance(label, int) or isinstance(label, bool):
            raise _Skip(f"bad label: {label!r} is not an int")
        if self.num_classes is not None and not -1 <= label < self.num_classes:
            raise _Skip(f"label outside the class list: {label} not in 0..{self.num_classes - 1}")
        video_ext = next((e for e in VIDEO_EXTS if e in raw), None)  # make-shards keeps .avi etc. unless re-encoding
        if video_ext is None:
            raise _Skip("missing member: .mp4 (or another video container)")
        data = raw[video_ext]
        if len(data) == 0:
            raise _Skip(f"zero-length member: .{video_ext}")
        extras = {}
        for ext in self.extras:
            if ext not in raw:
                raise _Skip(f"missing member: .{ext}")
            try:
                extras[ext.split(".")[0]] = _decode_member(ext, raw[ext])
            except Exception as e:
                raise _Skip(f"bad member .{ext}: {str(e)[:100]}") from None
        try:
            with open_video(data, self.decoder, num_threads=self.decoder_threads, expected_frames=meta.get("num_frames")) as reader:
                fps = reader.fps or float(meta.get("fps") or 0)
                clips = self.sample_clips(reader.num_frames, fps, rng)
                union, positions = sampling.union_indices([c for _, c in clips])
                frames = reader.get_frames(union)  # (U, H, W, 3) uint8, contiguous
        except VideosslError as e:
            raise _Skip(f"decode error: {str(e)[:200]}") from None
        views, valid, indices, padded, looped = [], [], [], [], []
        for (vi, clip), pos in zip(clips, positions, strict=True):
            # Cut the view on the contiguous (U, H, W, 3) frames (a row gather; no copy when the view
            # is the whole union), then hand the transform a (T, 3, H, W) channels-last *view*:
            # indexing the permuted tensor instead made a full-resolution NCHW copy (~25 ms for
            # 16 frames at 602x256), and the uint8 antialiased resize is ~3x faster on channels-last.
            sel = frames if _is_identity(pos, frames.shape[0]) else frames[torch.from_numpy(pos)]
            out = self.transforms[vi](sel.permute(0, 3, 1, 2), gen)
            outs = out if isinstance(out, list) else [out]
            for o in outs:
                views.append(o)
                valid.append(torch.from_numpy(clip.valid) if clip.valid is not None else torch.ones(len(clip), dtype=torch.bool))
                indices.append(torch.from_numpy(clip.indices))
                padded.append(clip.padded)
                looped.append(clip.looped)
        return {
            "key": raw["__key__"],
            "shard": raw["__shard__"],
            "label": label,
            "views": views,
            "valid": valid,
            "indices": indices,
            "padded": padded,
            "looped": looped,
            "extras": extras,
            "caption": meta.get("caption") or "",
            "duplicate": False,
        }

    # -- iteration ---------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        drop = 0
        if self._skip.value:  # resuming mid-epoch: this worker plays the plan that comes next
            worker, drop = resume_plan(self._skip.value, self.source.total, self.world_size, num_workers,
                                       self.batch_size, self.train)[worker]
        plan = plan_worker(self.source.total, self.rank, self.world_size, worker, num_workers, self.batch_size, self.train)
        if plan.quota == 0:
            return
        seeds = [self.seed, epoch, self.rank, worker, int(self.train)]
        rng = np.random.default_rng(seeds)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        order = self.shard_order(epoch)
        own = self._read(order, plan.start, plan.start + plan.real, worker, epoch)
        if self.train and self.shuffle_buffer > 1:
            own = wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 16), rng=random.Random(int(rng.integers(0, 2**62))))(own)
        total = self.source.total
        end = plan.start + plan.real

        def extra() -> Iterator[dict[str, Any]]:  # positions after the own range, wrapping once around
            yield from self._read(order, end, total, worker, epoch)
            yield from self._read(order, 0, end, worker, epoch)

        produced, batch, skipped = 0, [], []
        for source, dup in ((own, False), (extra(), True)):
            for raw in source:
                if produced >= plan.quota:
                    break
                try:
                    sample = self.process(raw, rng, gen)
                except _Skip as e:
                    if not dup:  # a bad sample read again for padding is not counted twice
                        skipped.append(self._record(worker, epoch, raw.get("__key__", "?"), raw.get("__shard__", "?"), str(e)))
                    continue
                sample["duplicate"] = dup
                batch.append(sample)
                produced += 1
                if len(batch) == self.batch_size:
                    if drop > 0:  # resuming mid-epoch: this batch was consumed before the restart
                        drop -= 1
                        batch = []
                        continue
                    out = collate(batch)
                    out["skipped"], batch, skipped = skipped, [], []
                    yield out
            if produced >= plan.quota:
                break
        if produced < plan.quota:
            raise VideosslError(
                f"rank {self.rank} worker {worker}: only {produced} of {plan.quota} samples could be decoded "
                f"in {total} samples; see the skip log in {self.skip_log.folder}"
            )


class _LazyIterator:
    def __init__(self, start):
        self._start, self._it = start, None

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            self._it = self._start()
        return next(self._it)


class EpochDataLoader(torch.utils.data.DataLoader):
    """DataLoader over a :class:`VideoShardDataset` that sets the dataset's epoch at each ``iter()``.

    ``epoch_fn`` (e.g. the trainer's ``current_epoch``) gives the epoch; without it, iterations are
    counted from 0.
    """

    def __init__(self, dataset: VideoShardDataset, epoch_fn=None, skip_fn=None, **kw: Any):
        kw.setdefault("batch_size", None)
        super().__init__(dataset, **kw)
        self._epoch_fn = epoch_fn
        self._skip_fn = skip_fn
        self._iters = 0

    def __iter__(self):
        # Workers start at the first next(), not at iter(): Lightning may call iter() before it has
        # restored a checkpoint's epoch and batch position (e.g. to count steps); what the epoch and
        # the data position are is only known when the first batch is asked for.
        return _LazyIterator(self._start)

    def _start(self):
        ds = self.dataset
        ds.set_epoch(self._epoch_fn() if self._epoch_fn is not None else self._iters)
        ds.set_skip(self._skip_fn() if self._skip_fn is not None else 0)
        self._iters += 1
        return super().__iter__()

    # Lightning's resumable-loader protocol. The data position itself is restored from the
    # trainer's batch progress (``skip_fn``), which counts consumed batches exactly, whereas a
    # loader-side count would include batches prefetched but never trained on.
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": int(self.dataset.epoch), "iterations": self._iters}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._iters = int(state.get("iterations", 0))


def make_loader(dataset: VideoShardDataset, num_workers: int = 0, prefetch_factor: int = 2, epoch_fn=None, skip_fn=None,
                **kw: Any) -> EpochDataLoader:
    if num_workers > 0:
        kw.setdefault("prefetch_factor", prefetch_factor)
    return EpochDataLoader(dataset, epoch_fn=epoch_fn, skip_fn=skip_fn, num_workers=num_workers, **kw)
