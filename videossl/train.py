"""`videossl fit | validate | test`: Lightning's CLI over composed recipes.

    videossl fit --config recipes/brave/synthetic.yaml
    videossl fit --config recipes/brave/ucf101.yaml --print_config
    videossl fit --config recipes/brave/synthetic.yaml --trainer.max_epochs 3 --data.init_args.batch_size 16

Every value of a recipe can be overridden on the command line (LightningCLI / jsonargparse
syntax). A recipe's ``compose:`` fragments are merged first (see :mod:`videossl.recipes`).

Runs are resumable: the run folder is ``trainer.default_root_dir``; checkpoints go to
``<run>/checkpoints`` (``last.ckpt`` every ``checkpoint_every`` steps and at each epoch end),
metrics to ``<run>/metrics.csv``. Re-running the same command continues from ``last.ckpt``
(model, optimiser, scheduler, AMP scaler, epoch/step, data position), unless ``--ckpt_path`` says
otherwise or ``--fresh`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from videossl.errors import VideosslError
from videossl.lightning_cli import VideosslCLI
from videossl.recipes import deep_merge, load_recipe, write_resolved

SUBCOMMANDS = ("fit", "validate", "test")


def compose_configs(argv: list[str], tmpdir: str) -> tuple[list[str], dict[str, Any]]:
    """Replace each ``--config RECIPE`` by a resolved (composed) file; return the merged view too."""

    out, merged, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" or a.startswith("--config="):
            path = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else None)
            if path is None:
                raise VideosslError("--config needs a recipe path")
            recipe = load_recipe(path)
            merged = deep_merge(merged, recipe)
            resolved = write_resolved(recipe, Path(tmpdir) / f"recipe{i}.yaml")
            out += ["--config", str(resolved)]
            i += 1 if "=" in a else 2
            continue
        out.append(a)
        i += 1
    return out, merged


def _override(argv: list[str], key: str) -> str | None:
    for i, a in enumerate(argv):
        if a == f"--{key}" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(f"--{key}="):
            return a.split("=", 1)[1]
    return None


def latest_checkpoint(root: Path) -> Path | None:
    """The newest of ``<run>/checkpoints/last.ckpt`` and Lightning's SLURM requeue checkpoints."""
    # a folder: FSDP's "sharded" checkpoint (recipes/base/trainer/fsdp.yaml writes "full" ones, files)
    found = [p for p in [root / "checkpoints" / "last.ckpt", *root.glob("hpc_ckpt_*.ckpt")] if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_lightning(subcommand: str, argv: list[str]) -> int:
    import warnings

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # sys.argv stays as it is on purpose: Lightning's DDP launcher re-runs it for the other ranks
    warnings.filterwarnings("ignore", ".*LightningCLI's args parameter is intended to run from within Python.*")
    warnings.filterwarnings("ignore", ".*`IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", ".*isinstance.treespec, LeafSpec.*")
    fresh = "--fresh" in argv
    argv = [a for a in argv if a != "--fresh"]
    resumed = False
    with tempfile.TemporaryDirectory(prefix="videossl-recipe-") as tmp:
        args, merged = compose_configs(argv, tmp)
        if subcommand == "fit" and not fresh and _override(args, "ckpt_path") is None and "--print_config" not in " ".join(args):
            root = _override(args, "trainer.default_root_dir") or (merged.get("trainer") or {}).get("default_root_dir")
            last = latest_checkpoint(Path(root)) if root else None
            if last is not None:
                print(f"videossl: resuming from {last} (use --fresh to start over)", file=sys.stderr)
                args += ["--ckpt_path", str(last)]
                resumed = True
        if _override(args, "ckpt_path") is not None and _override(args, "weights_only") is None:
            args += ["--weights_only", "true"]  # checkpoints hold tensors and plain types only
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        try:
            VideosslCLI(args=[subcommand, *args])
        except argparse.ArgumentError as e:  # bad or misspelt key, bad value: one line, naming it
            raise VideosslError(f"{str(e).strip().splitlines()[0]} (see `videossl {subcommand} --help`)") from None
        except MisconfigurationException as e:
            hint = " (this run resumed from its last.ckpt: add --fresh to start over)" if resumed else ""
            raise VideosslError(f"{str(e).strip().splitlines()[0]}{hint}") from None
    return 0


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        raise VideosslError(f"usage: videossl {{{','.join(SUBCOMMANDS)}}} --config RECIPE [overrides]")
    return run_lightning(argv[0], argv[1:])


os.environ.setdefault("WANDB_MODE", "offline")
