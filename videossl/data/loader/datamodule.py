"""``VideoDataModule``: the one LightningDataModule every method uses (args usable from LightningCLI YAML).

Example recipe (BraVe narrow/broad)::

    data:
      class_path: videossl.data.loader.datamodule.VideoDataModule
      init_args:
        data_dir: shards/ucf101
        batch_size: 32
        num_workers: 8
        placement: inside_random
        train_views:
          - {name: narrow, sampler: narrow, frames: 16, stride: 2, size: 224}
          - {name: broad, sampler: broad, frames: 64, stride: 4, size: 112}
        eval_views:
          - {name: clip, sampler: uniform, frames: 32, stride: 2, size: 224, train: false, num_clips: 10, crops: 3}

BraVe V/A (broad audio): the sound under the broad window, 48 kHz mono, 80-band log-mel, in
``batch["spectrogram"]`` (B, 1, frames, 80) and ``batch["has_audio"]``::

    data:
      init_args:
        placement: aligned_start
        audio: {view: broad, sample_rate: 48000, channels: 1, n_mels: 80, missing: skip}

``audio`` applies to every stage whose views hold a view named ``audio.view`` (or to all with
``audio.seconds``); an evaluation stage without that view gets no audio (one printed line says so).

``val_pairs: true`` adds a second validation loader: the val split through the *training* views (the same clips
every time), on which a two-view method (BraVe: ``shuffle_pairs``) logs its SSL loss with true and with shuffled
pairs (``val/ssl_loss``, ``val/ssl_loss_shuffled``, ``val/pair_gap``): a gap near 0 on held-out videos means the
views' agreement does not generalise (memorised training pairs). For methods without pairs only the loss is logged.
Its batch is the training batch, or what one rank's share of the val split holds when that is smaller; under 2 per
rank the check is off for the run (a printed line says so).
"""

from __future__ import annotations

import logging
import os

import pytorch_lightning as pl

from videossl.data.audio import AudioSpec, as_audio_spec
from videossl.data.loader.dataset import AUGMENT_ON, EpochDataLoader, VideoShardDataset, make_loader
from videossl.data.loader.resources import check_ram, ram_estimate
from videossl.data.loader.skips import SkipLog
from videossl.data.loader.transforms import AugmentConfig, DevicePhotometric
from videossl.data.loader.views import ViewSpec
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError

log = logging.getLogger(__name__)


def default_train_views() -> list[ViewSpec]:
    return [ViewSpec(name="clip", sampler="random", frames=16, stride=2, size=224, copies=2)]


def default_eval_views() -> list[ViewSpec]:
    return [ViewSpec(name="clip", sampler="uniform", frames=16, stride=2, size=224, train=False, augment=AugmentConfig())]


class VideoDataModule(pl.LightningDataModule):
    """Train / val / test loaders over one shard set (``data_dir`` with ``manifest.json``).

    ``data_dir`` may also be a brace pattern, glob or list when only one split is used: then
    ``train_split`` etc. are ignored and every stage reads those shards. ``rank``/``world_size``
    default to the trainer's. Each stage's dataset is built in ``setup`` (all checks happen there,
    before any worker starts), and the host-RAM estimate is printed and checked against
    ``ram_fraction`` of the machine's RAM.
    """

    def __init__(
        self,
        data_dir: str | list[str],
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        prefetch_factor: int = 2,
        train_views: list[ViewSpec] | None = None,
        eval_views: list[ViewSpec] | None = None,
        placement: str = "inside_random",
        decoder: str = "auto",
        decoder_threads: int = 1,
        shuffle_buffer: int = 64,
        seed: int = 0,
        num_classes: int | None = None,
        extras: list[str] | None = None,
        skip_log_dir: str | None = None,
        ram_fraction: float = 0.5,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        augment_on: str = "auto",
        decode_downscale: bool = False,
        audio: AudioSpec | dict | None = None,
        val_pairs: bool = False,
    ):
        super().__init__()
        #: validation also reads the val split through the *training* views (a second val loader): the method
        #: scores its SSL loss there with true and with shuffled pairs (``SSLMethod.shuffle_pairs``)
        self.val_pairs = bool(val_pairs)
        self._pairs_off = False  # set when the val split is too small for a pair per rank
        self.audio = as_audio_spec(audio)
        if augment_on not in ("auto", *AUGMENT_ON):
            raise VideosslError(f"augment_on must be auto, {' or '.join(AUGMENT_ON)}, got {augment_on!r}")
        self.augment_on = augment_on
        self.decode_downscale = bool(decode_downscale)
        self.data_dir = data_dir
        self.splits = {"fit": train_split, "validate": val_split, "test": test_split}
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers, self.prefetch_factor = int(num_workers), int(prefetch_factor)
        self.train_views = list(train_views) if train_views else default_train_views()
        self.eval_views = list(eval_views) if eval_views else default_eval_views()
        self.placement, self.decoder, self.decoder_threads = placement, decoder, int(decoder_threads)
        self.shuffle_buffer, self.seed, self.num_classes = int(shuffle_buffer), int(seed), num_classes
        self.extras = list(extras or [])
        self.skip_log_dir = skip_log_dir
        self.ram_fraction = float(ram_fraction)
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.rank, self.world_size = rank, world_size
        self.datasets: dict[str, VideoShardDataset] = {}
        self._photometric_ops: dict[int, DevicePhotometric] = {}
        if self.num_workers < 0:
            raise VideosslError(f"num_workers must be >= 0, got {num_workers}")
        if not 0 < self.ram_fraction <= 1:
            raise VideosslError(f"ram_fraction must be in (0, 1], got {ram_fraction}")

    @property
    def classes(self) -> list[str] | None:
        ds = next(iter(self.datasets.values()), None)
        return ds.source.classes if ds is not None else None

    def _rank(self) -> tuple[int | None, int | None]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return self.rank, self.world_size

    def _source_hw(self) -> tuple[int, int] | None:
        if isinstance(self.data_dir, str) and os.path.isdir(self.data_dir):
            try:
                video = load_manifest(self.data_dir).get("video") or {}
            except VideosslError:
                return None
            h, w = video.get("height"), video.get("width")
            if h and w:
                return int(h), int(w)
        return None

    def _on_gpu(self) -> bool:
        trainer = getattr(self, "trainer", None)
        device = getattr(getattr(trainer, "strategy", None), "root_device", None)
        return device is not None and device.type not in ("cpu", "mps")

    def resolved_augment_on(self) -> str:
        """``augment_on``, with ``auto`` = ``device`` when the trainer runs on a GPU, else ``workers``."""
        if self.augment_on != "auto":
            return self.augment_on
        return "device" if self._on_gpu() else "workers"

    def _pin(self) -> bool:
        return self._on_gpu() if self.pin_memory is None else bool(self.pin_memory)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """With ``augment_on: device``: the photometric part of each training view, batched on the device
        the batch was just copied to (per-sample parameters drawn in the workers, carried in ``batch["augment"]``)."""
        params = batch.get("augment") if isinstance(batch, dict) else None
        if not params or all(p is None for p in params):
            return batch
        views = list(batch["views"])
        for i, prm in enumerate(params):
            if prm is not None:
                views[i] = self._photometric(int(prm["view"][0]))(views[i], prm)
        batch["views"], batch["augment"] = views, [None] * len(views)
        return batch

    def _photometric(self, spec: int) -> DevicePhotometric:
        if spec not in self._photometric_ops:
            v = self.datasets["fit"].views[spec]
            self._photometric_ops[spec] = DevicePhotometric(v.size, v.augment)
        return self._photometric_ops[spec]

    def _skip_dir(self, split: str) -> str | None:
        return os.path.join(self.skip_log_dir, split) if self.skip_log_dir else None

    def _audio_for(self, views: list, what: str, rank: int | None) -> AudioSpec | None:
        """The audio spec for a stage: all of them, except an evaluation stage without the view it names."""
        a = self.audio
        if a is None or a.seconds is not None or what == "fit":
            return a
        names = [v.name if isinstance(v, ViewSpec) else v.get("name", "clip") for v in views]
        if a.view in names:
            return a
        if rank in (None, 0):
            print(f"data[{what}]: no audio (no eval view is named {a.view!r}; views: {', '.join(names)})", flush=True)
        return None

    def _audio_seconds(self, views: list[ViewSpec], audio: AudioSpec) -> float:
        """Seconds of sound per sample, for the RAM estimate (a stride-based view at 25 fps)."""
        if audio.seconds is not None:
            return float(audio.seconds)
        v = next(v for v in views if v.name == audio.view)
        return v.frames / v.target_fps if v.target_fps else v.frames * v.stride / 25.0

    def build(self, stage: str, split: str | None, batch_size: int | None = None) -> VideoShardDataset:
        train = stage in ("fit", "pairs")  # "pairs": the training views on the val split (``val_pairs``)
        rank, world = self._rank()
        views = self.train_views if train else self.eval_views
        audio = self._audio_for(views, stage, rank)
        ds = VideoShardDataset(
            self.data_dir,
            views,
            split=split,
            batch_size=batch_size or (self.batch_size if train else self.eval_batch_size),
            train=train,
            placement=self.placement,
            decoder=self.decoder,
            shuffle_buffer=self.shuffle_buffer if stage == "fit" else 0,
            seed=self.seed,
            rank=rank,
            world_size=world,
            num_classes=self.num_classes,
            extras=self.extras,
            skip_log_dir=self._skip_dir((split or stage) + ("-pairs" if stage == "pairs" else "")),
            decoder_threads=self.decoder_threads,
            augment_on=self.resolved_augment_on() if stage == "fit" else "workers",
            decode_downscale=self.decode_downscale,
            audio=audio,
        )
        if stage == "fit" and rank in (None, 0):
            where = "the workers" if ds.augment_on == "workers" else "the workers (crop + flip) and on the device (photometric)"
            print(f"data[{split or stage}]: augmentation in {where} (data.augment_on)", flush=True)
        est = ram_estimate(
            ds.views, ds.batch_size, self.num_workers, self.prefetch_factor,
            ds.shuffle_buffer if stage == "fit" else 0, ds.source.avg_sample_bytes, self._source_hw(),
            audio_bytes=audio.out_bytes(self._audio_seconds(ds.views, audio)) if audio is not None else 0.0,
        )
        msg = check_ram(est, self.ram_fraction, what=f"data[{split or stage}{', training views' if stage == 'pairs' else ''}]")
        log.info(msg)
        if rank in (None, 0):
            print(msg, flush=True)
        return ds

    def setup(self, stage: str | None = None) -> None:
        stages = ["fit", "validate", "test"] if stage is None else [stage]
        if stage == "fit" and self.splits["validate"]:
            stages.append("validate")
        for st in stages:
            split = self.splits.get(st if st != "predict" else "test")
            if split is None or st in self.datasets:
                continue
            self.datasets[st] = self.build(st, split)
        if "validate" in self.datasets and self.val_pairs and "pairs" not in self.datasets and not self._pairs_off:
            self._setup_pairs(self.datasets["validate"])

    def _setup_pairs(self, val: VideoShardDataset) -> None:
        """The pairing check's dataset: the val split through the training views, at the training batch or at one
        rank's share of the split when that is smaller (it drops partial batches like the training loader); off
        for the run under 2 per rank (no pair to shuffle)."""
        split, per_rank = self.splits["validate"], val.source.total // val.world_size
        bs = min(self.batch_size, per_rank)
        say = val.rank in (None, 0)
        if bs < 2:
            self._pairs_off = True
            if say:
                print(f"data.val_pairs: off for this run: the {split!r} split holds under 2 samples per rank over "
                      f"{val.world_size} rank(s), no pair to shuffle", flush=True)
            return
        if bs < self.batch_size and say:
            print(f"data.val_pairs: batch {bs} (the {split!r} split holds {per_rank} per rank over {val.world_size} "
                  f"rank(s); training batch {self.batch_size})", flush=True)
        self.datasets["pairs"] = self.build("pairs", split, batch_size=bs)

    def _loader(self, stage: str) -> EpochDataLoader:
        if stage not in self.datasets:
            self.setup(stage)
        if stage not in self.datasets:
            raise VideosslError(f"no {stage} split configured (set {'train' if stage == 'fit' else stage}_split)")
        trainer = getattr(self, "trainer", None)
        fitting = trainer is not None and stage == "fit"
        epoch_fn = (lambda: trainer.current_epoch) if fitting else None
        if stage == "pairs":  # the same clips and crops at every validation: the pairing figures compare across epochs
            epoch_fn = lambda: 0  # noqa: E731
        # batches already trained on in this epoch: > 0 only when resuming mid-epoch from a checkpoint
        skip_fn = (lambda: int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)) if fitting else None
        return make_loader(
            self.datasets[stage],
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor,
            epoch_fn=epoch_fn,
            skip_fn=skip_fn,
            pin_memory=self._pin(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> EpochDataLoader:
        return self._loader("fit")

    def val_dataloader(self) -> EpochDataLoader | list[EpochDataLoader]:
        """The val split's eval views (the online probe); with ``val_pairs`` also a second loader of the same
        videos through the training views (always the same clips: epoch 0's draws), for the pairing check."""
        if not self.val_pairs or self._pairs_off:
            return self._loader("validate")
        return [self._loader("validate"), self._loader("pairs")]

    def test_dataloader(self) -> EpochDataLoader:
        return self._loader("test")

    def skip_log(self, stage: str = "fit") -> SkipLog:
        return self.datasets[stage].skip_log


__all__ = ["AudioSpec", "VideoDataModule", "ViewSpec", "AugmentConfig", "default_train_views", "default_eval_views"]
