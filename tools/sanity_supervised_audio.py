"""Sanity check of the audio side of a V/A recipe: train its audio backbone supervised on the labels.

The recipe's own data module gives the training views and the broad window's log-mel spectrogram; the
recipe's broad audio backbone (a fresh copy) and a linear head are trained with cross-entropy for
``--steps`` steps, then scored on the same kind of views of a held-out split. If the audio backbone cannot
learn the classes with labels in a budget, BraVe's V/A cannot make it learn them there either; if it learns
them on the training split only, the set is too small for the sound (the network memorises each video's
timbre: BENCHMARKS.md, "Session 9: BraVe V/A").

    python tools/sanity_supervised_audio.py --recipe recipes/brave/synthetic_va.yaml --steps 630 \
        -- --data.data_dir data/synth-audio-9600
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time

import torch
import torch.nn.functional as F

from videossl.lightning_cli import VideosslCLI
from videossl.train import compose_configs


def build(recipe: str, split: str, rest: list[str]):
    with tempfile.TemporaryDirectory() as tmp:
        argv, _ = compose_configs(["--config", recipe, "--data.num_workers", "1", "--data.train_split", split, *rest], tmp)
        cli = VideosslCLI(argv, run=False)
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/brave/synthetic_va.yaml")
    ap.add_argument("--modality", default="audio", help="the broad branch whose backbone is trained")
    ap.add_argument("--steps", type=int, default=520)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("rest", nargs="*", help="recipe overrides (after --)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model, dm = build(args.recipe, "train", args.rest)
    branch = next((b for b in model.branches() if b.modality == args.modality), None)
    if branch is None:
        raise SystemExit(f"{args.recipe} has no broad branch {args.modality!r}: it has "
                         f"{[b.modality for b in model.branches()]}")
    encoder = copy.deepcopy(branch.encoder)  # the recipe's backbone as built: random init
    classes = len(dm.classes)
    head = torch.nn.Linear(encoder.feature_dim, classes)
    opt = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], args.lr)
    step, start = 0, time.time()
    while step < args.steps:
        hits = n = 0
        for batch in dm.train_dataloader():
            keep = ~batch["duplicate"]
            logits = head(encoder(batch["spectrogram"][keep]))
            loss = F.cross_entropy(logits, batch["label"][keep])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            hits += int((logits.argmax(1) == batch["label"][keep]).sum())
            n += int(keep.sum())
            if step >= args.steps:
                break
        print(f"step {step}: loss {loss.item():.3f}, train accuracy (this pass) {hits / max(n, 1):.3f}, "
              f"{time.time() - start:.0f} s", flush=True)
    encoder.eval()
    head.eval()
    _, dv = build(args.recipe, args.val_split, args.rest)
    hits = n = 0
    with torch.no_grad():
        for batch in dv.train_dataloader():
            keep = ~batch["duplicate"]
            hits += int((head(encoder(batch["spectrogram"][keep])).argmax(1) == batch["label"][keep]).sum())
            n += int(keep.sum())
    print(f"held-out accuracy on split {args.val_split!r}: {hits / max(n, 1):.3f} ({n} clips, the recipe's training "
          f"views; chance {1 / classes:.3f})")


if __name__ == "__main__":
    main()
