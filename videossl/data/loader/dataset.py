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
in one call and the views are cut from it (:func:`videossl.data.loader.sampling.union_indices`).

Audio (``audio=AudioSpec(...)``, :mod:`videossl.data.audio`)
    The sound is decoded from the same video member bytes (in memory), placed on the video's timeline
    (the audio and video streams' start times aligned) and cut at the time window of the view
    ``audio.view`` (its first clip): from ``clip.start / fps`` (the start in the looped sequence, so a
    looped clip gets looped sound) for ``frames * step / fps`` seconds (BraVe's ``_num_audio_samples``;
    ``step`` = the view's stride, or ``fps / target_fps``), or the first ``audio.seconds``. It becomes a
    log-mel spectrogram in the worker: ``sample["spectrogram"]`` (C, frames, n_mels) and
    ``sample["has_audio"]``. The cut draws nothing from the sampling RNG; without ``audio`` nothing is
    decoded and the samples are unchanged. A video without an audio stream is skipped (``missing:
    skip``, reason ``no audio``, counted in the skip log) or gets a zero spectrogram with
    ``has_audio=False`` (``missing: silence``; each worker logs how many per epoch); an audio stream that
    does not decode is a skipped sample (``audio decode error``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from videossl.data.audio import AudioSpec, NoAudio, as_audio_spec, augment_log_mel, silence, window_spectrogram
from videossl.data.decoding import BACKENDS, open_video
from videossl.data.loader import sampling
from videossl.data.loader.batch import collate, decode_member, for_ipc
from videossl.data.loader.partition import batches_per_rank, plan_worker, resolve_rank, resume_plan
from videossl.data.loader.shardset import resolve_shards
from videossl.data.loader.skips import SkipLog, SkipSample
from videossl.data.loader.transforms import PHOTOMETRIC_PARAMS, EvalTransform, VideoAugment
from videossl.data.loader.views import ViewSpec, check_views, decode_scale
from videossl.errors import VideosslError

log = logging.getLogger(__name__)

VIDEO_EXTS = ("mp4", "avi", "mkv", "webm", "mov")
#: where training views are augmented: all in the data workers, or the photometric part on the device
AUGMENT_ON = ("workers", "device")

__all__ = ["AUGMENT_ON", "EpochDataLoader", "VIDEO_EXTS", "VideoShardDataset", "event_starts", "make_loader"]


def event_starts(meta: dict[str, Any]) -> torch.Tensor | None:
    """The sorted start frames (K,) of the parts a long sample is made of (its json's ``events``: the long
    synthetic preset's events, ``make-long``'s stitched clips), or None when it has no such list."""
    events = meta.get("events")
    if not isinstance(events, list) or not events:
        return None
    try:
        return torch.tensor(sorted(int(e["start"]) for e in events), dtype=torch.long)
    except (KeyError, TypeError, ValueError):
        return None


def _source_hw(meta: dict[str, Any]) -> tuple[int, int] | None:
    """(height, width) of the source frames as the shard maker recorded them (coded orientation)."""
    h, w = meta.get("height"), meta.get("width")
    return (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else None


def _is_identity(pos: np.ndarray, n: int) -> bool:
    return pos.shape[0] == n and (n == 0 or (int(pos[0]) == 0 and int(pos[-1]) == n - 1 and bool((np.diff(pos) == 1).all())))


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
        augment_on: str = "workers",
        decode_downscale: bool = False,
        audio: AudioSpec | dict | None = None,
    ):
        super().__init__()
        if augment_on not in AUGMENT_ON:
            raise VideosslError(f"augment_on must be one of {', '.join(AUGMENT_ON)}, got {augment_on!r}")
        self.augment_on = augment_on
        self.decode_downscale = bool(decode_downscale)
        if batch_size < 1:
            raise VideosslError(f"batch_size must be >= 1, got {batch_size}")
        if decoder not in ("auto", *BACKENDS):
            raise VideosslError(f"unknown decoder {decoder!r}: choose one of auto, {', '.join(BACKENDS)}")
        self.views = check_views(views, placement)
        self.placement = placement
        self.audio = as_audio_spec(audio)
        self._audio_view = self._check_audio_view()
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
            VideoAugment(v.size, v.augment) if v.train else EvalTransform(v.size, v.resize, v.crops, v.augment)
            for v in self.views
        ]
        if len(self) == 0:
            raise VideosslError(
                f"{self.source.total} samples over {self.world_size} rank(s) make no full batch of {self.batch_size}: "
                "lower batch_size or use more data"
            )

    def _check_audio_view(self) -> int | None:
        """Index of the view whose window the sound is cut from (None: no audio, or ``audio.seconds``)."""
        if self.audio is None or self.audio.seconds is not None:
            return None
        names = [v.name for v in self.views]
        if self.audio.view not in names:
            raise VideosslError(f"audio.view {self.audio.view!r} is not one of the views ({', '.join(names)}): name the "
                                "view whose time window the sound is cut from, or set audio.seconds")
        return names.index(self.audio.view)

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
        return sampling.sample_views(self.views, num_frames, fps, rng, self.placement)

    def process(self, raw: dict[str, Any], rng: np.random.Generator, gen: torch.Generator) -> dict[str, Any]:
        """Raw tar group → sample dict; raises ``SkipSample(reason)`` for a bad sample."""
        if raw["__key__"] in self.source.exclude:  # `videossl data verify --write-exclude` found it unreadable
            raise SkipSample(f"excluded by data verify: {self.source.exclude[raw['__key__']][:150]}")
        if "json" not in raw:
            raise SkipSample("missing member: .json")
        try:
            meta = json.loads(raw["json"])
            if not isinstance(meta, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            raise SkipSample(f"bad json: {str(e)[:100]}") from None
        label = meta.get("label", -1)
        label = -1 if label is None else label
        if not isinstance(label, int) or isinstance(label, bool):
            raise SkipSample(f"bad label: {label!r} is not an int")
        if self.num_classes is not None and not -1 <= label < self.num_classes:
            raise SkipSample(f"label outside the class list: {label} not in 0..{self.num_classes - 1}")
        video_ext = next((e for e in VIDEO_EXTS if e in raw), None)  # make-shards keeps .avi etc. unless re-encoding
        if video_ext is None:
            raise SkipSample("missing member: .mp4 (or another video container)")
        data = raw[video_ext]
        if len(data) == 0:
            raise SkipSample(f"zero-length member: .{video_ext}")
        extras = {}
        for ext in self.extras:
            if ext not in raw:
                raise SkipSample(f"missing member: .{ext}")
            try:
                extras[ext.split(".")[0]] = decode_member(ext, raw[ext])
            except Exception as e:
                raise SkipSample(f"bad member .{ext}: {str(e)[:100]}") from None
        src_hw = _source_hw(meta) if self.decode_downscale else None
        scale = decode_scale(self.views, *src_hw) if src_hw else None
        try:
            with open_video(data, self.decoder, num_threads=self.decoder_threads, scale=scale,
                            expected_frames=meta.get("num_frames"), prefer=meta.get("decoder")) as reader:
                fps = reader.fps or float(meta.get("fps") or 0)
                clips = self.sample_clips(reader.num_frames, fps, rng)
                times = meta.get("frame_times")  # recorded for variable-frame-rate videos only
                if times and len(times) == reader.num_frames:  # views at a target rate sample by time
                    clips = [(vi, sampling.retime(c, times, fps) if self.views[vi].target_fps else c) for vi, c in clips]
                union, positions = sampling.union_indices([c for _, c in clips])
                sound = self.sound(data, reader.num_frames, fps, clips, raw["__key__"], gen) if self.audio is not None else None
                frames = reader.get_frames(union)  # (U, H, W, 3) uint8, contiguous
        except VideosslError as e:
            raise SkipSample(f"decode error: {str(e)[:200]}") from None
        if scale is not None:  # the sample's random crops are drawn on the full-size frames, then scaled
            src_hw = src_hw if (src_hw[0] >= src_hw[1]) == (frames.shape[1] >= frames.shape[2]) else src_hw[::-1]
        views, names, valid, indices, padded, looped, augment = [], [], [], [], [], [], []
        for (vi, clip), pos in zip(clips, positions, strict=True):
            # Cut the view on the contiguous (U, H, W, 3) frames (a row gather; no copy when the view
            # is the whole union), then hand the transform a (T, 3, H, W) channels-last *view*:
            # indexing the permuted tensor instead made a full-resolution NCHW copy (~25 ms for
            # 16 frames at 602x256), and the uint8 antialiased resize is ~3x faster on channels-last.
            sel = frames if _is_identity(pos, frames.shape[0]) else frames[torch.from_numpy(pos)]
            tf, prm, clip_in = self.transforms[vi], None, sel.permute(0, 3, 1, 2)
            full_hw = src_hw if scale is not None else None
            if self.augment_on == "device" and isinstance(tf, VideoAugment):
                # the same draws as the all-in-workers path; the photometric part waits for the device
                prm = tf.draw(clip_in, gen, full_hw)
                out = tf.crop_flip(clip_in, prm)
                prm = {k: prm[k] for k in PHOTOMETRIC_PARAMS} | {"view": torch.tensor(vi)}
            elif isinstance(tf, VideoAugment):
                out = tf(clip_in, gen, full_hw)
            else:
                out = tf(clip_in, gen)
            outs = out if isinstance(out, list) else [out]
            for o in outs:
                views.append(o)
                augment.append(prm)
                names.append(self.views[vi].name)
                valid.append(torch.from_numpy(clip.valid) if clip.valid is not None else torch.ones(len(clip), dtype=torch.bool))
                indices.append(torch.from_numpy(clip.indices))
                padded.append(clip.padded)
                looped.append(clip.looped)
        out = {
            "key": raw["__key__"],
            "shard": raw["__shard__"],
            "label": label,
            "views": views,
            "view_names": names,
            "augment": augment,
            "valid": valid,
            "indices": indices,
            "padded": padded,
            "looped": looped,
            "extras": extras,
            "caption": meta.get("caption") or "",
            "duplicate": False,
        }
        starts = event_starts(meta)
        if starts is not None:
            out["event_starts"] = starts
        if sound is not None:
            out["spectrogram"], out["has_audio"] = sound
        return out

    def audio_window(self, fps: float, clips: list[tuple[int, sampling.Clip]]) -> tuple[float, float]:
        """(start, duration) in seconds of the sound to cut, on the video's timeline (see the module docstring)."""
        if self.audio.seconds is not None:
            return 0.0, float(self.audio.seconds)
        v = self.views[self._audio_view]
        clip = next(c for vi, c in clips if vi == self._audio_view)
        step = sampling.frame_step(fps, v.stride, v.target_fps)
        return clip.start / fps, v.frames * step / fps

    def sound(self, data: bytes, num_frames: int, fps: float, clips: list[tuple[int, sampling.Clip]],
              key: str, gen: torch.Generator | None = None) -> tuple[torch.Tensor, bool]:
        """(spectrogram (C, frames, n_mels), has_audio) of one sample; ``SkipSample`` per ``audio.missing``.
        In training, ``audio.augment`` is applied with the sample's generator ``gen``."""
        if not fps or fps <= 0:
            raise SkipSample(f"audio decode error: the video's frame rate is unknown ({fps}), so its sound cannot be placed")
        start, duration = self.audio_window(fps, clips)
        try:
            spec = window_spectrogram(data, self.audio, start, duration, num_frames, fps)
        except NoAudio as e:
            if self.audio.missing == "skip":
                raise SkipSample(f"no audio: {e} (audio.missing is skip)") from None
            log.info("sample %s: %s; its spectrogram is silence (audio.missing is silence)", key, e)
            return silence(self.audio, duration), False
        except VideosslError as e:
            raise SkipSample(f"audio decode error: {str(e)[:200]}") from None
        if self.train and self.audio.augment is not None:
            spec = augment_log_mel(spec, self.audio.augment, gen)
        return spec, True

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
            shuffle_rng = random.Random(int(rng.integers(0, 2**62)))
            own = wds.shuffle(self.shuffle_buffer, min(self.shuffle_buffer, 16), rng=shuffle_rng)(own)
        total = self.source.total
        end = plan.start + plan.real

        def extra() -> Iterator[dict[str, Any]]:  # positions after the own range, wrapping once around
            yield from self._read(order, end, total, worker, epoch)
            yield from self._read(order, 0, end, worker, epoch)

        produced, batch, skipped, silent = 0, [], [], 0
        for source, dup in ((own, False), (extra(), True)):
            for raw in source:
                if produced >= plan.quota:
                    break
                try:
                    sample = self.process(raw, rng, gen)
                except SkipSample as e:
                    if not dup:  # a bad sample read again for padding is not counted twice
                        skipped.append(self._record(worker, epoch, raw.get("__key__", "?"), raw.get("__shard__", "?"), str(e)))
                    continue
                sample["duplicate"] = dup
                silent += int(not dup and not sample.get("has_audio", True))
                batch.append(sample)
                produced += 1
                if len(batch) == self.batch_size:
                    if drop > 0:  # resuming mid-epoch: this batch was consumed before the restart
                        drop -= 1
                        batch = []
                        continue
                    out = collate(batch)
                    out["skipped"], batch, skipped = skipped, [], []
                    # from a DataLoader worker: small tensors go through the pipe by value (for_ipc), not one
                    # shared-memory segment each
                    yield out if info is None else for_ipc(out)
            if produced >= plan.quota:
                break
        if silent:
            log.warning("rank %d worker %d epoch %d: %d sample(s) without an audio stream got a silent spectrogram "
                        "(audio.missing is silence; batch['has_audio'] marks them)", self.rank, worker, epoch, silent)
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
