"""Label bound for the long-video stage 2 (#19): its model trained *with labels* on the long synthetic set.

The model of a stage-2 run folder (its config.yaml: stage 1's weights through ``init_from``, the same trainable
parts, the same token dropping in training) gets a linear head on its pooled encoder output and is trained with
cross-entropy on a label that needs the order of the events: ``pair`` = the event-order label (first event,
last event: 64 classes), ``first`` = the first event's class (8 classes). Held-out accuracy is measured
unmasked on the test splits. If stage 2 cannot fit these labels *with* labels in a budget, no video–text
objective will make its pooled features carry them in that budget.

    python tools/sanity_supervised_long.py --run runs/long-video-stage2-synthetic --steps 672 --target pair
    python tools/sanity_supervised_long.py --run runs/long-video-stage2-synthetic --steps 672 --target first

The run folder only supplies the model's config; its trained weights are not used.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.batch import to_clip
from videossl.eval.runs import build_method, run_config

TARGETS = {"pair": 64, "first": 8}


def _target(label: torch.Tensor, target: str) -> torch.Tensor:
    return label if target == "pair" else label // 8  # the long preset's label is first * 8 + last


def _encode(enc, batch):
    v = batch["valid"][0]
    return enc(to_clip(batch["views"][0]), valid=None if bool(v.all()) else v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a stage-2 `videossl fit` run folder (its config.yaml is used)")
    p.add_argument("--data", default="data/synth-long-3200", help="training shards (the train split)")
    p.add_argument("--eval-data", nargs="+", default=["data/synth-long", "data/synth-long-3200"],
                   help="shard sets whose test split is scored")
    p.add_argument("--target", choices=sorted(TARGETS), default="pair")
    p.add_argument("--steps", type=int, default=672)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="peak LR (one-cycle, 10 %% warm-up), AdamW, wd 0.05")
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--fps", type=float, default=0.5)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    cfg, _ = run_config(Path(args.run))
    enc = build_method(cfg, where=f"{args.run}/config.yaml").encoder
    head = torch.nn.Linear(enc.feature_dim, TARGETS[args.target])
    params = [q for q in enc.parameters() if q.requires_grad] + list(head.parameters())
    print(f"trainable: {sum(q.numel() for q in params)} parameters (encoder and head)")
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    augment = {"flip_p": 0.0, "scale": (0.6, 1.0), "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}
    view = ViewSpec(name="clip", sampler="long", frames=args.frames, target_fps=args.fps, size=args.size,
                    random_start=False, augment=augment)
    ds = VideoShardDataset(args.data, [view], split="train", batch_size=args.batch_size, train=True, rank=0,
                           world_size=1, seed=args.seed)
    step, start, losses = 0, time.time(), []
    enc.train()
    while step < args.steps:
        for batch in make_loader(ds, num_workers=1):
            loss = F.cross_entropy(head(_encode(enc, batch)), _target(batch["label"], args.target))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if step % 50 == 0:
                print(f"step {step}: loss (mean of the last 50) {sum(losses[-50:]) / 50:.3f}, {time.time() - start:.0f} s",
                      flush=True)
            if step >= args.steps:
                break
    enc.eval()
    chance = 100.0 / TARGETS[args.target]
    for root in args.eval_data:
        view = ViewSpec(name="clip", sampler="long", frames=args.frames, target_fps=args.fps, size=args.size, train=False)
        test = VideoShardDataset(root, [view], split="test", batch_size=args.batch_size, train=False, rank=0, world_size=1)
        hits = n = 0
        with torch.no_grad():
            for batch in make_loader(test, num_workers=1):
                pred = head(_encode(enc, batch)).argmax(1)
                hits += int((pred == _target(batch["label"], args.target)).sum())
                n += len(pred)
        print(f"{root} test: {args.target} accuracy {100 * hits / max(n, 1):.1f} % of {n} videos (chance {chance:.1f} %)")


if __name__ == "__main__":
    main()
