"""Short CPU comparison of the streaming recipes (recipes/streaming/*): BP, Sideways, Skip-Sideways and the
clip-model baseline, on the synthetic motion set, with every model built by the recipe itself.

    python tools/stream_compare.py --data data/synth --recipes bp sideways skip_sideways --seeds 0 1 --epochs 4

``--threads`` (default 1: the CPU is shared), ``--cache clips.pt`` (the cached clips, written once and read by
later invocations, so one recipe list per process sees the same clips), ``--lr`` (overrides the recipe's LR);
rows are appended to ``--out``.

Protocol (our own figures; no published numbers were retrieved for arXiv 2001.06232 / 2106.08318 / 1806.03863):
the recipes' data module is read once (one augmented pass over train, the eval view of val) and cached, so
every run sees the same clips; each run trains ``--epochs`` passes in a seeded order with AdamW at the
recipe's LR (constant; the recipe's cosine schedule is what `videossl fit` uses), through
``StreamingClassifier.train_clip``; val is scored with ``StreamingClassifier.online_accuracy`` (every tick
once the pipe is full; for the sequential clip model the clip's mean logit) and on the translate-left vs
translate-right pair (argmax over those two logits, at every scored tick, for every model), and on the same
pair with the position cue removed (``left_right_rev_acc``: every left / right clip forwards and backwards,
:meth:`StreamingClassifier.reversal_pair_accuracy`; a model that sees one frame at a time scores exactly 50 %).
``--reverse-p P`` trains with the time-reversal augmentation (each clip backwards with probability P, its label
the reversed class), overriding the recipe's ``reverse_p``.

``--classes 0 1`` trains and scores on those classes only (translate left / right: the task no single frame
decides), relabelled 0..K-1 in the order given, with a K-way classifier (not the recipe's 8-way one: a head with
classes that never occur collapses the RGB skip networks onto constant logits, measured in BENCHMARKS.md) and
``reversed_class`` restricted to them (the subset must be closed under reversal); ``--batch N`` regroups the kept
clips into batches of N (a subset of the cached batches of 16 leaves ~4 clips per step otherwise).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from videossl.core.checkpoint import read_file
from videossl.data.loader.batch import to_clip
from videossl.lightning_cli import VideosslCLI
from videossl.train import compose_configs


def build(recipe: str, data: str, overrides: list[str] = ()):
    with tempfile.TemporaryDirectory() as tmp:
        argv, _ = compose_configs(["--config", f"recipes/streaming/{recipe}.yaml", "--data.data_dir", data,
                                   "--data.num_workers", "1", *overrides], tmp)
        cli = VideosslCLI(argv, run=False)
    return cli.model, cli.datamodule


def cache(dm, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dm.setup("fit")
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    loader = loader[0] if isinstance(loader, list) else loader
    out = []
    for b in loader:
        keep = ~b["duplicate"]
        out.append((b["views"][0][keep], b["label"][keep]))
    return out


def restrict(clips: list[tuple[torch.Tensor, torch.Tensor]], classes: list[int],
             batch: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The clips whose label is in ``classes``, relabelled by position there, regrouped into batches of ``batch``
    (kept as they come when None); the last incomplete batch is kept."""
    new = torch.full((max(max(classes), *(int(y.max()) for _, y in clips)) + 1,), -1, dtype=torch.long)
    new[torch.as_tensor(classes)] = torch.arange(len(classes))
    kept = [(v[new[y] >= 0], new[y][new[y] >= 0]) for v, y in clips]
    kept = [(v, y) for v, y in kept if len(y)]
    if batch is None or not kept:
        return kept
    v, y = torch.cat([v for v, _ in kept]), torch.cat([y for _, y in kept])
    return [(v[i:i + batch], y[i:i + batch]) for i in range(0, len(y), batch)]


def subset_reversal(reversed_class: list[int], classes: list[int]) -> list[int]:
    """``reversed_class`` restricted to ``classes`` and relabelled by position there; the subset must be closed
    under reversal (e.g. [0, 1] with the synthetic set's [1, 0, 3, 2, ...] gives [1, 0])."""
    missing = sorted({reversed_class[c] for c in classes} - set(classes))
    if missing:
        raise SystemExit(f"--classes {classes} is not closed under time reversal (reversed_class "
                         f"{reversed_class}): add {missing}")
    return [classes.index(reversed_class[c]) for c in classes]


def subset_overrides(recipe: str, data: str, classes: list[int]) -> list[str]:
    """CLI overrides that give the recipe's model a ``len(classes)``-way head and the matching ``reversed_class``."""
    if len(set(classes)) != len(classes):
        raise SystemExit(f"--classes {classes}: each class once")
    out = ["--data.num_classes", str(len(classes))]
    rc = build(recipe, data)[0].reversed_class
    if rc is not None:
        out += ["--model.init_args.reversed_class", json.dumps(subset_reversal(rc, classes))]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/synth")
    ap.add_argument("--recipes", nargs="+", default=["bp", "sideways", "skip_sideways"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default="runs/stream-compare/results.json")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: a shared CPU)")
    ap.add_argument("--lr", type=float, default=None, help="override the recipe's LR")
    ap.add_argument("--reverse-p", type=float, default=None,
                    help="time-reversal augmentation probability (overrides the recipe's model.init_args.reverse_p)")
    ap.add_argument("--cache", default=None,
                    help="a .pt file holding the cached clips: read if it exists, else written (same clips across "
                         "invocations: one recipe per process)")
    ap.add_argument("--classes", nargs="+", type=int, default=None,
                    help="train and score on these class indices only, with a head of that size (e.g. 0 1: translate "
                         "left / right)")
    ap.add_argument("--batch", type=int, default=None, help="regroup the (kept) clips into batches of this size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    if args.cache and Path(args.cache).exists():
        train, val = read_file(args.cache)
    else:
        _, dm = build(args.recipes[0], args.data)
        train, val = cache(dm, "train"), cache(dm, "val")
        if args.cache:
            Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
            torch.save((train, val), args.cache)
    print(f"cached {sum(len(y) for _, y in train)} train / {sum(len(y) for _, y in val)} val clips "
          f"in {time.time() - t0:.0f} s", flush=True)
    classes = args.classes
    if classes is not None or args.batch is not None:
        keep = classes if classes is not None else list(range(1 + max(int(y.max()) for _, y in train + val)))
        train, val = restrict(train, keep, args.batch), restrict(val, keep, args.batch)
        print(f"kept {sum(len(y) for _, y in train)} train / {sum(len(y) for _, y in val)} val clips of classes "
              f"{keep}, {len(train)} train batches", flush=True)
    # translate left (0) / right (1) in the model's labels, where both are kept
    pair = (0, 1) if classes is None else ((classes.index(0), classes.index(1)) if {0, 1} <= set(classes) else None)
    rows = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else []
    for recipe in args.recipes:
        overrides = [] if classes is None else subset_overrides(recipe, args.data, classes)
        for seed in args.seeds:
            # the CLI seeds everything before it builds the model (seed_everything, default 0): pass the seed there,
            # or every seed gets the same initial weights (the case before session 13)
            model, _ = build(recipe, args.data, [*overrides, "--seed_everything", str(seed)])
            if args.reverse_p is not None:
                model.reverse_p = args.reverse_p
            model.train()
            lr = model.optim.lr if args.lr is None else args.lr
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=model.optim.weight_decay)
            g = torch.Generator().manual_seed(seed)
            g_rev = torch.Generator().manual_seed(1000 + seed)
            t1, cos = time.time(), []
            for _ in range(args.epochs):
                for i in torch.randperm(len(train), generator=g).tolist():
                    v, y = train[i]
                    x, y = model.train_inputs({"views": [v], "view_names": ["stream"], "label": y}, g_rev)
                    opt.zero_grad(set_to_none=True)
                    _, _, logs = model.train_clip(x, y, opt)
                    if logs:
                        cos.append(logs)
            train_s = time.time() - t1
            model.eval()
            n, acc, last, pair_ok, pair_n, rev_ok, rev_n = 0, 0.0, 0.0, 0, 0, 0, 0
            per_frame = torch.zeros(16)
            for v, y in val:
                x = model.clip_inputs({"views": [v], "view_names": ["stream"]})
                r = model.online_accuracy(x, y)
                acc += float(r["acc"]) * len(y)
                last += float(r["acc_last_tick"]) * len(y)
                per_frame += torch.nan_to_num(r["per_frame"][:16]) * len(y)
                n += len(y)
                if pair is None:
                    continue
                c, s_ = model.reversal_pair_accuracy(to_clip(v), y, pair)
                rev_ok, rev_n = rev_ok + c, rev_n + s_
                m = (y == pair[0]) | (y == pair[1])
                if m.any():
                    with torch.no_grad():
                        logits, _ = model.online_logits(x[m])
                    first, target = model.first_scored_tick(), (y[m] == pair[1]).long()
                    for t, lg in enumerate(logits):
                        if lg is not None and t >= first:
                            pair_ok += int((lg[:, list(pair)].argmax(1) == target).sum())
                            pair_n += int(m.sum())
            mean_cos = {k: sum(c[k] for c in cos) / len(cos) for k in cos[0]} if cos else {}
            row = {"recipe": recipe, "seed": seed, "epochs": args.epochs, "mode": model.mode, "clocks": model.encoder.clocks,
                   "skips": model.encoder.skips, "lagged_skips": model.encoder.lagged, "frame_input": model.frame_input,
                   "lr": lr, "online_acc": acc / n,
                   "last_tick_acc": last / n, "left_right_acc": pair_ok / max(pair_n, 1),
                   "left_right_rev_acc": rev_ok / max(rev_n, 1), "left_right_rev_n": rev_n,
                   "reverse_p": model.reverse_p, "classes": classes, "batch": args.batch,
                   "train_steps": args.epochs * len(train),
                   "per_frame_acc": [round(float(a) / n, 4) for a in per_frame], "train_s": round(train_s, 1),
                   "mean_grad_cos": mean_cos}
            rows.append(row)
            print(json.dumps(row), flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
