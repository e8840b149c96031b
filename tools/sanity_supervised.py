"""Sanity check of an encoder's capacity on a shard set: train it supervised on the labels.

If an encoder cannot fit the motion classes with labels in a given budget, no self-supervised
objective will make it do so in that budget. Writes the encoder's weights under the `encoder.`
prefix so that `videossl eval linear --ckpt OUT --encoder SPEC` can probe it.

    python tools/sanity_supervised.py --data data/synth --epochs 12 --out /tmp/sup_encoder.pt
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.batch import to_clip
from videossl.models import Small3D


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synth")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-scale", type=float, default=0.3, help="random resized crop: smallest area fraction")
    p.add_argument("--out", default="/tmp/sup_encoder.pt")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    enc = Small3D(args.width)
    ds = VideoShardDataset(args.data, [ViewSpec(name="clip", sampler="random", frames=args.frames, stride=1,
                                                size=args.size, augment={"flip_p": 0.0, "blur_p": 0.0, "hue": 0.1,
                                                                         "scale": (args.min_scale, 1.0), "ratio": (0.8, 1.25)})],
                           split="train", batch_size=args.batch_size, train=True, rank=0, world_size=1, seed=args.seed)
    head = torch.nn.Linear(enc.feature_dim, len(ds.source.classes))
    opt = torch.optim.AdamW([*enc.parameters(), *head.parameters()], args.lr)
    start = time.time()
    for epoch in range(args.epochs):
        hits, n = 0, 0
        for batch in make_loader(ds, num_workers=2):
            logits = head(enc(to_clip(batch["views"][0])))
            loss = F.cross_entropy(logits, batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            hits += int((logits.argmax(1) == batch["label"]).sum())
            n += len(batch["label"])
        print(f"epoch {epoch}: loss {loss.item():.3f}, train accuracy {hits / n:.3f}, {time.time() - start:.0f} s")
    torch.save({f"encoder.{k}": v for k, v in enc.state_dict().items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
