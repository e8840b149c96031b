"""Callbacks that `videossl fit` adds or that recipes can name (``trainer.callbacks``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from videossl.methods.base import SSLMethod

log = logging.getLogger(__name__)


class ResumeCheckpoint(pl.Callback):
    """Writes ``<run>/checkpoints/last.ckpt`` every ``every_n_steps`` optimiser steps and at each
    epoch end (atomically: a kill never leaves a half-written file), and ``<run>/encoder.pt``
    (the encoder's weights under the ``encoder.`` prefix) when training ends.

    Under FSDP both are full (unsharded) weights gathered by every rank together: ``last.ckpt`` through
    Lightning's ``FSDPStrategy(state_dict_type="full")`` (``recipes/base/trainer/fsdp.yaml``), the encoder
    through :meth:`SSLMethod.encoder_state_dict`, which is why both are called on every rank."""

    def __init__(self, dirpath: str, every_n_steps: int = 50) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self._last_saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.global_step == self._last_saved_step:
            return
        self._last_saved_step = trainer.global_step
        tmp = self.dirpath / "last.ckpt.part"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: optimiser, loops, callbacks
        if trainer.is_global_zero:
            dst = self.dirpath / "last.ckpt"
            if tmp.is_dir() and dst.exists():  # FSDP state_dict_type "sharded" writes a folder
                shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
            os.replace(tmp, dst)
        trainer.strategy.barrier("videossl-checkpoint")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)  # a run stopped by max_steps mid-epoch can be extended later
        if isinstance(pl_module, SSLMethod):
            export_encoder(trainer, pl_module, self.dirpath.parent / "encoder.pt")


def export_encoder(trainer: pl.Trainer, pl_module: SSLMethod, path: Path) -> None:
    """Write ``<run>/encoder.pt``: called on every rank (under FSDP the gather of the full weights is a
    collective), written by rank 0."""
    sd = pl_module.encoder_state_dict(trainer.strategy.model)
    if trainer.is_global_zero:
        torch.save({k: v.detach().cpu() for k, v in sd.items()}, path)
    trainer.strategy.barrier("videossl-encoder-export")


class WeightSyncCheck(pl.Callback):
    """At the end of training, checks that every rank holds the same weights (a DDP sanity check).

    Each rank hashes its parameters, and separately its buffers; rank 0 writes
    ``<run>/weight_sync.json`` with both lists of hashes, ``equal`` (parameters identical on every
    rank: what DDP guarantees), ``buffers_equal`` and the global step. Buffers such as BatchNorm's
    running statistics may legitimately differ: DDP broadcasts rank 0's buffers at the start of
    each forward, so the last training step leaves every rank with its own statistics unless a
    later forward (validation) or SyncBN aligns them. Add it in a recipe::

        trainer:
          callbacks: [{class_path: videossl.callbacks.WeightSyncCheck}]
    """

    @staticmethod
    def _hash(tensors) -> str:
        h = hashlib.sha256()
        for k, v in sorted(tensors):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mine = (self._hash(pl_module.named_parameters()), self._hash(pl_module.named_buffers()))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, mine)
        else:
            gathered = [mine]
        if trainer.is_global_zero:
            hashes, buffers = [g[0] for g in gathered], [g[1] for g in gathered]
            report = {"hashes": hashes, "equal": len(set(hashes)) == 1, "buffer_hashes": buffers,
                      "buffers_equal": len(set(buffers)) == 1, "global_step": trainer.global_step,
                      "world_size": trainer.world_size}
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
            Path(trainer.default_root_dir, "weight_sync.json").write_text(json.dumps(report, indent=2) + "\n")


class SkipMonitor(pl.Callback):
    """Samples the reader skipped, as run metrics: per training epoch ``data/skipped`` (count, summed over
    ranks), ``data/skip_rate`` (skipped / samples read) and ``data/skipped/<reason>`` in ``metrics.csv``
    (and wandb); at the end of ``fit`` a one-line summary, and a loud warning with the top reasons when
    the rate of any epoch exceeds ``warn_rate`` (default 1 %).

    The counts come from each batch's ``skipped`` records (:mod:`videossl.data.loader.skips`), so they
    cover every worker; the full records (key, shard, reason) are in the skip log of the data module.
    """

    def __init__(self, warn_rate: float = 0.01) -> None:
        self.warn_rate = float(warn_rate)
        self._reasons: Counter = Counter()
        self._read = 0
        self.history: list[dict[str, Any]] = []  # one entry per epoch (rank-local counts)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._reasons, self._read = Counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        skipped = batch.get("skipped") or [] if isinstance(batch, dict) else []
        self._reasons.update(str(r.get("reason", "?")).split(":")[0] for r in skipped)
        self._read += len(skipped) + (len(batch["label"]) if isinstance(batch, dict) and "label" in batch else 0)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        n = sum(self._reasons.values())
        dev = pl_module.device
        pl_module.log("data/skipped", torch.tensor(float(n), device=dev), reduce_fx="sum", sync_dist=True)
        pl_module.log("data/skip_rate", torch.tensor(n / max(self._read, 1), device=dev), sync_dist=True)
        for reason, c in self._reasons.items():
            key = "data/skipped/" + "".join(ch if ch.isalnum() else "_" for ch in reason.strip())[:40]
            pl_module.log(key, torch.tensor(float(c), device=dev), reduce_fx="sum", sync_dist=True)
        self.history.append({"epoch": trainer.current_epoch, "skipped": n, "read": self._read,
                             "reasons": dict(self._reasons)})

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        total = sum(h["skipped"] for h in self.history)
        read = sum(h["read"] for h in self.history)
        reasons = Counter()
        for h in self.history:
            reasons.update(h["reasons"])
        top = ", ".join(f"{r} ×{c}" for r, c in reasons.most_common(3))
        worst = max(h["skipped"] / max(h["read"], 1) for h in self.history)
        msg = (f"data: {total} of {read} samples read were skipped ({100 * total / max(read, 1):.2f} %) over "
               f"{len(self.history)} epoch(s)" + (f"; top reasons: {top}" if top else ""))
        print(msg, flush=True)
        if worst > self.warn_rate:
            log.warning("!" * 8 + " %s: an epoch skipped %.1f %% of its samples (threshold %.1f %%); see the skip log "
                        "and `videossl data verify`", msg, 100 * worst, 100 * self.warn_rate)


class DataWaitMonitor(pl.Callback):
    """How much of each training step waited for data, logged on every run.

    Per epoch: ``data/wait_frac`` (time between the end of one step and the start of the next, i.e.
    fetching and transferring the batch, over the epoch's step time; shown in the progress bar),
    ``data/clips_per_s`` and ``data/frames_per_s`` (frames of every view fed to the model), and on a GPU
    ``data/peak_mem_gib``. At the end of ``fit`` one summary line, with advice when the wait exceeds
    ``advise_above`` (default 20 %). On CUDA the step end is synchronised, so asynchronous kernels are
    not counted as waiting.
    """

    def __init__(self, advise_above: float = 0.2) -> None:
        self.advise_above = float(advise_above)
        self.history: list[dict[str, float]] = []
        self._reset()

    def _reset(self) -> None:
        self._wait = self._busy = 0.0
        self._clips = self._frames = 0
        self._last_end = self._start = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:  # also a run resumed mid-epoch (no epoch start)
        self._reset()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._reset()
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        self._wait += self._start - self._last_end
        if isinstance(batch, dict):
            self._clips += len(batch.get("label", []))
            self._frames += sum(int(v.shape[0] * v.shape[1]) for v in batch.get("views", []))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._last_end = time.perf_counter()
        self._busy += self._last_end - self._start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        total = max(self._wait + self._busy, 1e-9)
        row = {"wait_frac": self._wait / total, "clips_per_s": self._clips / total, "frames_per_s": self._frames / total}
        if pl_module.device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        for k, v in row.items():
            pl_module.log(f"data/{k}", torch.tensor(v, device=pl_module.device), sync_dist=True,
                          prog_bar=k == "wait_frac")
        self.history.append(row)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        n = len(self.history)
        wait = sum(h["wait_frac"] for h in self.history) / n
        clips = sum(h["clips_per_s"] for h in self.history) / n
        frames = sum(h["frames_per_s"] for h in self.history) / n
        msg = (f"data wait: {100 * wait:.0f} % of step time over {n} epoch(s) ({clips:.1f} clips/s, "
               f"{frames:.0f} frames/s fed to the model)")
        if wait > self.advise_above:
            msg += ("; the model waits for data: raise data.num_workers, shard with `make-shards --short-side 160 "
                    "--keyframe-interval 16`, or lower the views' frames / size")
        print(msg, flush=True)
