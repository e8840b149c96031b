"""The small base every method builds on.

What lives here, once, for every method: the optimiser and LR schedule from config (AdamW, SGD,
LARS, RMSprop; linear warmup + cosine or step decay; LR scaled by the global batch), per-parameter
gradient multipliers (BraVe's predictor ×10), the online linear probe on detached features,
logging, and the checkpoint convention: the encoder that evaluation uses is ``module.encoder``
and its weights are saved under the ``encoder.`` prefix.

Speed switches (``compile``, ``channels_last``; GPU recipes set them, README "GPU recipes") are applied
to the method's encoders (:attr:`SSLMethod.speed_modules`) in :meth:`SSLMethod.configure_model`, in
place: parameter names, ``encoder.pt`` and checkpoints are the same with or without them.

What does not live here: views, heads and losses. A method subclasses :class:`SSLMethod`, sets
``self.encoder`` and implements :meth:`SSLMethod.ssl_step`, which returns the loss and the
features the online probe should see.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from videossl.core.distributed import full_state_dict, is_sharded
from videossl.core.optim import OptimConfig, build_optimizer, step_scheduler
from videossl.data.loader.batch import to_clip
from videossl.errors import VideosslError


def _clip_to_channels_last(module: nn.Module, args: tuple) -> tuple | None:
    if args and torch.is_tensor(args[0]) and args[0].dim() == 5:
        return (args[0].contiguous(memory_format=torch.channels_last_3d), *args[1:])
    return None


def to_channels_last(encoder: nn.Module) -> str:
    """Conv weights to channels-last (4-D: ``channels_last``, 5-D: ``channels_last_3d``) and the 5-D input
    clip to ``channels_last_3d`` (a forward pre-hook; a TSM's ``(B·T, C, H, W)`` frames folded from it are
    then channels-last too), in place. An encoder with at most one conv (a ViViT: its patch embedding) is
    left as it is: a transformer gains nothing. Returns what was done, in words."""
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    if len(convs) <= 1:
        return f"no-op ({type(encoder).__name__} has {len(convs)} conv layer(s): not a conv encoder)"
    n = 0
    for t in [*encoder.parameters(), *encoder.buffers()]:
        if t.dim() in (4, 5):
            fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
            t.data = t.data.contiguous(memory_format=fmt)
            n += 1
    encoder.register_forward_pre_hook(_clip_to_channels_last)
    return f"{n} conv weight(s) and the input clip channels-last"


class SSLMethod(pl.LightningModule):
    """Base of every self-supervised method.

    Subclasses set ``self.encoder`` (the network evaluation uses; ``feature_dim`` attribute) and
    implement :meth:`ssl_step`. ``num_classes`` > 0 adds an online linear probe on the detached
    features of the first view: a learning signal per epoch, never a gradient into the encoder.
    """

    encoder: nn.Module
    #: the training view (by name) that ``self.encoder`` sees; ``fit`` checks it against the encoder's
    #: ``num_frames`` / ``img_size`` where the encoder declares them (None: not checked)
    encoder_view: str | None = None
    #: the ``__init__`` argument that is :attr:`encoder` (evaluation reads the encoder's spec from it)
    encoder_arg: ClassVar[str] = "encoder"
    #: the attributes that are encoders: what ``compile`` and ``channels_last`` apply to
    speed_modules: ClassVar[tuple[str, ...]] = ("encoder",)

    def __init__(self, optim: OptimConfig | None = None, num_classes: int = 0, probe_lr: float = 1e-2,
                 seed: int = 0, compile: bool | dict[str, Any] = False, channels_last: bool = False) -> None:
        """``compile``: ``torch.compile`` each encoder in place (``nn.Module.compile``: names unchanged); a
        dict gives torch.compile's options (``{mode: max-autotune}``). ``channels_last``: conv weights and
        the encoders' 5-D input clips in channels-last(-3d) memory format (a no-op for an encoder with at
        most one conv, i.e. a ViViT's patch embedding)."""
        super().__init__()
        if not isinstance(compile, bool | dict):
            raise VideosslError(f"compile must be true, false or a dict of torch.compile options, got {compile!r}")
        self.compile_encoders: bool | dict[str, Any] = compile
        self.channels_last = bool(channels_last)
        #: what each switch did (or why it did nothing), filled by :meth:`apply_speed_switches`
        self.speed_notes: dict[str, str] = {}
        self._switched = False
        self.seed = int(seed)
        self.optim = optim if optim is not None else OptimConfig()
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        self.num_classes = int(num_classes)
        self.probe_lr = float(probe_lr)
        self.online_probe: nn.Module | None = None
        self._grad_hooks: list = []

    @classmethod
    def encoder_parts(cls, init_args: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """The method's encoders by part name: ``{part: (dotted init-argument path, state-dict prefix)}`` (what
        ``videossl eval audio --run RUN --part P`` reads). Default: the evaluated encoder as ``video``."""
        return {"video": (cls.encoder_arg, "encoder.")}

    # -- randomness inside the model -----------------------------------------------------------
    def step_generator(self, stream: int = 0) -> torch.Generator:
        """A CPU generator seeded from (seed, rank, global step, stream) for random draws inside a step.

        Methods draw model-side randomness (e.g. RandConv kernels) from it rather than from the
        global RNG, so a run resumed from a checkpoint draws exactly what an uninterrupted run
        would (no RNG state to save), and ranks draw differently from each other.
        """
        rank = self.global_rank if self._trainer is not None else 0
        step = self.global_step if self._trainer is not None else 0
        g = torch.Generator()
        g.manual_seed(hash((self.seed, rank, step, stream)) & 0x7FFF_FFFF_FFFF_FFFF)
        return g

    # -- hooks for subclasses ------------------------------------------------------------------
    def ssl_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Return (loss, features for the online probe (B, D), extra scalars to log)."""
        raise NotImplementedError

    def eval_features(self, batch: dict[str, Any]) -> torch.Tensor:
        """Features of the encoder on the first view (what probes and kNN see)."""
        return self.encoder(to_clip(batch["views"][0]))

    # -- setup ---------------------------------------------------------------------------------
    def _build_probe(self) -> None:
        if self.num_classes > 0 and self.online_probe is None:
            dim = getattr(self.encoder, "feature_dim", None)
            if dim is None:
                raise VideosslError(f"{type(self.encoder).__name__} declares no feature_dim: the online probe needs it")
            # standardise the detached features first (BN without affine, as solo-learn / MAE probes do):
            # a plain linear layer at a fixed LR lags far behind features whose scale drifts in training
            self.online_probe = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, self.num_classes))

    def configure_model(self) -> None:  # called by Lightning before optimisers; idempotent
        self._build_probe()
        done = self._switched
        notes = self.apply_speed_switches()
        if notes and not done and (self._trainer is None or self.trainer.is_global_zero):
            print("videossl: speed switches: " + "; ".join(f"{k}: {v}" for k, v in notes.items()), file=sys.stderr)

    def apply_speed_switches(self) -> dict[str, str]:
        """Apply ``channels_last`` then ``compile`` to :attr:`speed_modules` (once; idempotent).

        Both act in place, so the module tree, parameter names and state-dict keys do not change.
        Returns :attr:`speed_notes`: per switch, what it did or why it was a no-op.
        """
        if self._switched:
            return self.speed_notes
        self._switched = True
        encoders = self._speed_encoders()
        if self.channels_last:
            self.speed_notes["channels_last"] = "; ".join(f"{n}: {to_channels_last(m)}" for n, m in encoders.items())
        if self.compile_encoders:
            opts = self.compile_encoders if isinstance(self.compile_encoders, dict) else {}
            for m in encoders.values():
                m.compile(**opts)
            self.speed_notes["compile"] = "torch.compile of " + ", ".join(encoders) + (f" with {opts}" if opts else "")
        return self.speed_notes

    def _speed_encoders(self) -> dict[str, nn.Module]:
        """:attr:`speed_modules` by name, those that are None left out and a ``ModuleDict`` (e.g. BraVe's
        ``broad_encoders``, one per broad modality) expanded into its members (``broad_encoders.audio``)."""
        out: dict[str, nn.Module] = {}
        for name in self.speed_modules:
            m = getattr(self, name, None)
            if isinstance(m, nn.ModuleDict):
                out.update({f"{name}.{k}": v for k, v in m.items()})
            elif m is not None:
                out[name] = m
        return out

    def global_batch_size(self) -> int:
        trainer = self._trainer
        per_device = getattr(getattr(trainer, "datamodule", None), "batch_size", None) if trainer else None
        if per_device is None:
            return self.optim.ref_batch_size or 1
        world = trainer.world_size if trainer else 1
        return int(per_device) * int(world) * int(trainer.accumulate_grad_batches if trainer else 1)

    def scaled_lr(self) -> float:
        if not self.optim.ref_batch_size:
            return self.optim.lr
        return self.optim.lr * self.global_batch_size() / self.optim.ref_batch_size

    def param_groups(self, lr: float) -> tuple[list[tuple[str, nn.Parameter]], list[dict[str, Any]]]:
        """What the optimiser trains: (named parameters that get the config's weight-decay and LR-multiplier
        groups, extra groups with their own settings). The online probe is added by the base.

        Override to give part of the model its own groups (e.g. a text tower at a lower LR); the
        default is every parameter except the online probe's.
        """
        return [(n, p) for n, p in self.named_parameters() if not n.startswith("online_probe.")], []

    def configure_optimizers(self):
        self._build_probe()
        self._install_grad_multipliers()
        lr = self.scaled_lr()
        params, extra = self.param_groups(lr)
        extra = list(extra)
        if self.online_probe is not None:
            extra.append({"params": list(self.online_probe.parameters()), "weight_decay": 0.0,
                          "lr": self.probe_lr, "fixed_lr": True})
        opt = build_optimizer(params, self.optim, lr, extra)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return {"optimizer": opt, "lr_scheduler": step_scheduler(opt, self.optim, total)}

    def _install_grad_multipliers(self) -> None:
        for h in self._grad_hooks:
            h.remove()
        self._grad_hooks = []
        for pattern, mult in self.optim.grad_multipliers.items():
            rx = re.compile(pattern)
            hit = [p for n, p in self.named_parameters() if rx.search(n) and p.requires_grad]
            if not hit:
                raise VideosslError(f"optim.grad_multipliers: pattern {pattern!r} matches no parameter")
            for p in hit:  # scale gradients before the optimiser (BraVe: predictor x10 before LARS)
                self._grad_hooks.append(p.register_hook(lambda g, m=float(mult): g * m))

    # -- steps ---------------------------------------------------------------------------------
    def _probe_loss(self, feats: torch.Tensor, labels: torch.Tensor, stage: str) -> torch.Tensor:
        logits = self.online_probe(feats.detach().float())
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        bs = labels.shape[0]
        self.log(f"{stage}/probe_loss", loss, on_step=stage == "train", on_epoch=True, batch_size=bs, sync_dist=stage != "train",
                 add_dataloader_idx=False)
        self.log(f"{stage}/probe_acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True,
                 add_dataloader_idx=False)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, feats, logs = self.ssl_step(batch)
        bs = batch["label"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        for k, v in logs.items():
            self.log(f"train/{k}", v, on_step=True, on_epoch=True, batch_size=bs)
        if self.online_probe is not None:
            loss = loss + self._probe_loss(feats, batch["label"], "train")
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False, prog_bar=False)
        return loss

    def shuffle_pairs(self, batch: dict[str, Any], perm: torch.Tensor) -> dict[str, Any] | None:
        """The batch with one side of every training pair permuted across samples by ``perm`` (the other side
        untouched), for the pairing check; None: the method has no pairs to shuffle (the check logs only the loss)."""
        return None

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 1:  # ``data.val_pairs``: the val split through the training views
            self._pairing_check(batch)
            return
        if self.online_probe is None:
            return
        keep = ~batch["duplicate"] if "duplicate" in batch else slice(None)
        feats = self.eval_features(batch)
        self._probe_loss(feats[keep], batch["label"][keep], "val")

    def setup(self, stage: str) -> None:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if getattr(dm, "val_pairs", False) and type(self).validation_step is not SSLMethod.validation_step:
            raise VideosslError(f"data.val_pairs: {type(self).__name__} has its own validation_step, which reads one "
                                "val loader only; the pairing check is for two-view methods on SSLMethod's (e.g. BraVe)")

    def _pairing_check(self, batch: dict[str, Any]) -> None:
        """The SSL loss on held-out videos with the true pairs, and with one side shifted by one sample.

        ``val/pair_gap`` = shuffled − true. A gap that is large on the training split but ~0 here means the
        views' agreement does not generalise: the encoders identify their training videos instead of learning
        what the views share (the failure session 9 found in BraVe V/A; ``tools/pairing_check.py`` is the
        offline twin). The shift (sample i paired with i − 1) is a derangement, unlike a random permutation.
        """
        bs = int(batch["label"].shape[0])
        log = {"on_step": False, "on_epoch": True, "batch_size": bs, "sync_dist": True, "add_dataloader_idx": False}
        loss = self.ssl_step(batch)[0]
        self.log("val/ssl_loss", loss, **log)
        shuffled = self.shuffle_pairs(batch, torch.roll(torch.arange(bs), 1)) if bs > 1 else None
        if shuffled is None:
            return
        loss_shuffled = self.ssl_step(shuffled)[0]
        self.log("val/ssl_loss_shuffled", loss_shuffled, **log)
        self.log("val/pair_gap", loss_shuffled - loss, prog_bar=True, **log)

    def on_fit_end(self) -> None:
        """One line on the pairing check's last figures (``data.val_pairs``), with what they mean."""
        m = self.trainer.callback_metrics if self._trainer is not None else {}
        if "val/pair_gap" not in m or not self.trainer.is_global_zero:
            return
        gap, true = float(m["val/pair_gap"]), float(m["val/ssl_loss"])
        verdict = ("held-out pairs agree: what the views share generalises" if gap > 0.05 * max(abs(true), 1e-8) else
                   "held-out pairs agree no better than shuffled ones: the agreement does not generalise "
                   "(memorised training pairs, or nothing shared learnt)")
        print(f"pairing check (val split, last validation): SSL loss true pairs {true:.3f}, shuffled "
              f"{true + gap:.3f}, gap {gap:.3f}: {verdict}", flush=True)

    # -- checkpoints ---------------------------------------------------------------------------
    def encoder_state_dict(self, wrapped: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """The encoder's weights under the stable ``encoder.`` prefix (what evaluation loads).

        ``wrapped``: the module the strategy trains (``trainer.strategy.model``: this method inside its
        DDP / FSDP wrapper). When it is FSDP-sharded the full weights are gathered, which is collective:
        **every rank must call this**, and rank 0 gets the weights (the other ranks an empty dict).
        """
        root = self if wrapped is None else wrapped
        if is_sharded(root):
            return {k: v for k, v in full_state_dict(root).items() if k.startswith("encoder.")}
        return {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}

    def hparams_dict(self) -> dict[str, Any]:
        return {"optim": asdict(self.optim), "num_classes": self.num_classes}
