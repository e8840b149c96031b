"""The LightningCLI that `videossl fit/validate/test` runs, with videossl's run-folder conventions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from videossl.callbacks import DataWaitMonitor, ResumeCheckpoint, SkipMonitor
from videossl.core.precision import set_tf32
from videossl.data.loader.datamodule import VideoDataModule
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError
from videossl.methods.base import SSLMethod
from videossl.models.encoders import input_checks

log = logging.getLogger(__name__)


def _num_classes(data: Any) -> int:
    """Number of classes of the data module's shard set (for the online probe)."""
    if getattr(data, "num_classes", None):
        return int(data.num_classes)
    d = data.data_dir if isinstance(data.data_dir, str) else None
    if d and os.path.isdir(d):
        return len(load_manifest(d)["classes"])
    return 0


def check_encoder_view(model: SSLMethod, data: VideoDataModule) -> None:
    """The training view the encoder sees must fit the input the encoder declares (:func:`input_checks`).

    A recipe states a ViViT's ``num_frames`` / ``img_size`` and the view's ``frames`` / ``size``; a
    mismatch would silently train on interpolated position tables, so ``fit`` refuses it in one line.
    An encoder that runs only at one size (torchvision's MViT) or needs a minimum (S3D) refuses other
    views the same way; a normalisation other than the encoder's is logged as a warning. Encoders that
    declare nothing (most CNNs) are not checked.
    """
    name, enc = getattr(model, "encoder_view", None), model.encoder
    if name is None:
        return
    for v in data.train_views:
        if v.name != name:
            continue
        aug = v.augment
        for c in input_checks(enc, v.frames, v.size, aug.mean, aug.std, what=f"data view {name!r}"):
            if c.level == "note":
                log.warning(c.message)
                continue
            frames, size = getattr(enc, "num_frames", None), getattr(enc, "img_size", None)
            size = size[0] if isinstance(size, tuple | list) else size
            if c.level == "mismatch":  # the encoder can be built for the view: name both fixes
                raise VideosslError(
                    f"data view {name!r} is {v.frames} frames at {v.size} px but the encoder is built for "
                    f"num_frames={frames}, img_size={size}: set both to the same values (e.g. "
                    f"--data.train_views with frames {frames} or --model.init_args.encoder.init_args.num_frames {v.frames})"
                )
            raise VideosslError(f"{c.message}: change the view's frames / size (--data.train_views)")


class VideosslCLI(LightningCLI):
    def __init__(self, args: list[str], run: bool = True) -> None:
        super().__init__(
            model_class=SSLMethod,
            datamodule_class=VideoDataModule,
            subclass_mode_model=True,
            seed_everything_default=0,
            trainer_defaults={"enable_checkpointing": False},
            save_config_kwargs={"overwrite": True},
            # no prefix matching of options: a misspelt key is an error, not another key
            parser_kwargs={"allow_abbrev": False, "exit_on_error": False,
                           **{sub: {"allow_abbrev": False, "exit_on_error": False} for sub in ("fit", "validate", "test")}},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--checkpoint_every", type=int, default=50,
                            help="write <run>/checkpoints/last.ckpt every N optimiser steps (and each epoch end)")
        parser.add_argument("--wandb", type=bool, default=False, help="also log to Weights & Biases (offline by default)")
        parser.add_argument("--skip_warn_rate", type=float, default=0.01,
                            help="warn loudly when an epoch skips more than this fraction of the samples it reads")
        parser.add_argument("--tf32", type=bool, default=False,
                            help="TF32 for fp32 CUDA matmuls and cuDNN convolutions (GPU recipes: true; a no-op without CUDA)")
        parser.link_arguments("data", "model.init_args.num_classes", compute_fn=_num_classes, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        sub = self.config[self.subcommand] if self.subcommand else self.config
        if sub.get("tf32"):
            set_tf32(True)

    def before_fit(self) -> None:
        check_encoder_view(self.model, self.datamodule)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> pl.Trainer:
        sub = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(config.get("default_root_dir") or "runs/default")
        config["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            from pytorch_lightning.loggers import CSVLogger

            loggers: list = [CSVLogger(save_dir=str(root), name="", version="")]
            if sub.get("wandb"):
                from pytorch_lightning.loggers import WandbLogger

                os.environ.setdefault("WANDB_MODE", "offline")
                loggers.append(WandbLogger(save_dir=str(root), project="videossl", id=root.name, resume="allow"))
            config["logger"] = loggers
        if self.subcommand == "fit":
            callbacks = list(callbacks) + [ResumeCheckpoint(str(root / "checkpoints"), sub.get("checkpoint_every", 50)),
                                           SkipMonitor(sub.get("skip_warn_rate", 0.01)), DataWaitMonitor()]
        return super()._instantiate_trainer(config, callbacks)
