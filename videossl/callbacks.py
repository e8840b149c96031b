"""Callbacks that `videossl fit` adds or that recipes can name (``trainer.callbacks``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytorch_lightning as pl
import torch

from videossl.methods.base import SSLMethod


class ResumeCheckpoint(pl.Callback):
    """Writes ``<run>/checkpoints/last.ckpt`` every ``every_n_steps`` optimiser steps and at each
    epoch end (atomically: a kill never leaves a half-written file), and ``<run>/encoder.pt``
    (the encoder's weights under the ``encoder.`` prefix) when training ends."""

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
            os.replace(tmp, self.dirpath / "last.ckpt")
        trainer.strategy.barrier("videossl-checkpoint")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)  # a run stopped by max_steps mid-epoch can be extended later
        if trainer.is_global_zero and isinstance(pl_module, SSLMethod):
            sd = {k: v.detach().cpu() for k, v in pl_module.encoder_state_dict().items()}
            torch.save(sd, self.dirpath.parent / "encoder.pt")


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
