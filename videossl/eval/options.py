"""Command-line options and split handling shared by the ``videossl eval`` commands.

Splits: a ``data_dir`` holding ``{split}`` (``data/ucf101-s{split}``) is formatted with the
config's ``split`` (default 1) or, with ``--splits 1,2,3``, evaluated once per split and
summarised by the mean and standard deviation over the splits (the UCF101 / HMDB51 protocol of
Soomro et al., 2012 and Kuehne et al., 2011). Checkpoint keys are selected by ``--prefix`` (default
``encoder.``, the videossl convention; ``""`` for a plain backbone state dict) and renamed by
``--key-map`` (JSON ``{"old_prefix": "new_prefix"}``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from videossl.errors import VideosslError
from videossl.recipes import load_recipe


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="a `videossl fit` run folder: encoder from config.yaml, weights from encoder.pt")
    p.add_argument("--weights", "--ckpt", dest="ckpt", default=None,
                   help="weights: Lightning checkpoint, encoder.pt, an encoder file (`videossl convert`; builds its own "
                        "encoder), a plain state dict, or for a tv-* encoder a torchvision weight enum name "
                        "(KINETICS400_V1) found in the torch hub cache")
    p.add_argument("--encoder", default=None,
                   help="encoder: a registry name (tv-swin3d_t, tv-r3d_18, small3d, vivit, ...) or JSON "
                        "{class_path, init_args} (overrides the run's and an encoder file's)")
    p.add_argument("--prefix", default="encoder.",
                   help="keep checkpoint keys with this prefix (stripped); '' for a plain state dict")
    p.add_argument("--key-map", default=None, help='JSON {"old_prefix": "new_prefix"} renames applied after --prefix')
    p.add_argument("--splits", default=None,
                   help="comma-separated official splits (e.g. 1,2,3): data_dir's {split} is filled per split and "
                        "the mean is reported")
    p.add_argument("--data-dir", default=None,
                   help="shard set to evaluate on (overrides the recipe's data_dir; may hold {split})")


def add_baseline_arguments(p: argparse.ArgumentParser, kind: str) -> None:
    """The options every frozen-feature evaluation shares (linear, kNN)."""
    p.add_argument("--compare-random", action="store_true", help="also evaluate the same encoder randomly initialised")
    p.add_argument("--random-only", action="store_true", help="evaluate only the randomly initialised encoder")
    p.add_argument("--out", default=None, help=f"output folder (default: <run>/eval/{kind}-<data name>)")
    p.add_argument("--device", default=default_device())
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")


def load_eval_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The eval recipe of ``args.config`` (composed), with ``--data-dir`` applied."""

    raw = load_recipe(args.config)
    if getattr(args, "data_dir", None):
        raw = {**raw, "data_dir": args.data_dir}
    return raw


def parse_splits(text: str | None) -> list[str] | None:
    if not text:
        return None
    out = [s.strip() for s in text.split(",") if s.strip()]
    if not out:
        raise VideosslError("--splits needs at least one split, e.g. --splits 1,2,3")
    return out


def format_split(data_dir: str, split: Any) -> str:
    if "{split}" in data_dir:
        if split is None:
            raise VideosslError(f"data_dir {data_dir!r} holds {{split}}: set `split:` in the config or give --splits")
        return data_dir.replace("{split}", str(split))
    return data_dir


def check_split_template(data_dir: str, splits: list[str] | None) -> None:
    if splits and "{split}" not in data_dir:
        raise VideosslError(
            f"--splits needs a data_dir with a {{split}} placeholder (e.g. data/ucf101-s{{split}}), got {data_dir!r}"
        )


def output_base_name(data_dir: str, split: Any, splits: list[str] | None) -> str:
    """The data part of the default output folder name (``ucf101-ss`` for several splits)."""
    return Path(data_dir.replace("{split}", "s" if splits else str(split))).name
