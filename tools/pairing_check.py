"""Does a two-view SSL run's agreement generalise, or did it memorise its training pairs?

For a trained BraVe run (any broad view), the SSL loss is computed on batches of the recipe's own training
views twice: with the true pairing, and with the broad side (the broad clip, or the spectrogram for audio)
shuffled across the batch. On the training split a low true loss against a shuffled one near 1 says the two
views agree per sample; on a held-out split (``--split test``) the same gap says the agreement *generalises*.
A gap on train and none on test is memorisation: with few videos and a broad view that shares no cheap
factor with the narrow one, the two encoders can learn to identify each training video (its colours, its
timbre) instead of what the views share (session 9: BraVe V/A on the 840-video synthetic set, true 0.16 vs
shuffled 0.99 on train, 1.07 vs 1.01 on test; BENCHMARKS.md, "Session 9: BraVe V/A").

    python tools/pairing_check.py --run runs/brave-synthetic-va --recipe recipes/brave/synthetic_va.yaml --split test
    python tools/pairing_check.py --run runs/brave-synthetic --recipe recipes/brave/synthetic.yaml --split train

During ``videossl fit``, ``--data.val_pairs true`` computes the held-out figures at every validation
(``val/ssl_loss``, ``val/ssl_loss_shuffled``, ``val/pair_gap`` in ``metrics.csv``, one line at the end of fit).

Extra arguments after ``--`` go to the recipe (e.g. ``-- --data.data_dir data/synth-audio``).
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from videossl.core.checkpoint import read_file
from videossl.lightning_cli import VideosslCLI
from videossl.train import compose_configs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run directory with checkpoints/last.ckpt")
    ap.add_argument("--recipe", required=True, help="the recipe the run was trained with")
    ap.add_argument("--split", default="test", help="the split whose videos are paired (default: test, held out)")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("rest", nargs="*", help="recipe overrides (after --)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        argv, _ = compose_configs(["--config", args.recipe, "--data.num_workers", "1",
                                   "--data.train_split", args.split, *args.rest], tmp)
        cli = VideosslCLI(argv, run=False)
    model, dm = cli.model, cli.datamodule
    state = read_file(f"{args.run}/checkpoints/last.ckpt")["state_dict"]
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise SystemExit(f"{args.run}: the checkpoint lacks {len(result.missing_keys)} of the recipe's keys "
                         f"(e.g. {result.missing_keys[:3]}): is --recipe the run's recipe?")
    model.eval()
    dm.setup("fit")
    true, shuffled, n = 0.0, 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(dm.train_dataloader()):
            if i == args.batches:
                break
            true += float(model.ssl_step(batch)[0])
            shuffled += float(model.ssl_step(model.shuffle_pairs(batch, torch.randperm(len(batch["label"]))))[0])
            n += 1
    print(f"{args.run} on split {args.split!r} ({n} batches of the recipe's training views, eval mode): "
          f"SSL loss true pairs {true / n:.3f}, broad side shuffled {shuffled / n:.3f} "
          f"(gap {(shuffled - true) / n:.3f}: " + ("the pairing matters" if shuffled - true > 0.05 * n else
                                                    "no better than a random pairing") + ")")


if __name__ == "__main__":
    main()
