"""What every converter shares: taking reference weights by name, and the completeness check.

A converter reads a reference state dict through a :class:`Taker` (``take(key)`` marks the key used)
and builds our state dict; :func:`finish` then builds the :class:`~videossl.models.vivit.ViViT` of the
``init_args`` (on the meta device: no memory, no init cost) and refuses the conversion with a
:class:`VideosslError` naming every reference weight left unused, every ViViT weight left unset and
every shape that does not fit. Reference weights that are not part of an encoder (a classification head,
the VideoMAE decoder, the V-JEPA 2 predictor, CLIP's text tower) are *dropped* by name (``drop``
prefixes) and listed in the result, never silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from videossl.errors import VideosslError
from videossl.models.vivit import ViViT, resize_spatial_table, resize_temporal_table

__all__ = ["Converted", "Taker", "finish", "hf_activation", "resize_tables"]


class Converted(NamedTuple):
    """A conversion: ``init_args`` of :class:`ViViT`, our ``state_dict``, the reference keys dropped
    (not part of an encoder) and a short ``note`` of what was done."""

    init_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    dropped: list[str]
    note: str = ""


class Taker:
    """Reference weights by name; remembers which were used."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor], strip: Sequence[str] = ()) -> None:
        sd = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
        for prefix in strip:  # e.g. "videomae." of a *ForPreTraining checkpoint
            if any(k.startswith(prefix) for k in sd):
                sd = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
                break
        self.sd = sd
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.sd

    def take(self, key: str) -> torch.Tensor:
        if key not in self.sd:
            near = sorted(k for k in self.sd if k.split(".")[0] == key.split(".")[0])[:5]
            raise VideosslError(f"reference weight {key!r} not found (keys with the same head: {near or 'none'}); "
                                "is this the right --from format?")
        self.used.add(key)
        return self.sd[key].detach().float().clone()

    def take_any(self, *keys: str) -> torch.Tensor | None:
        """The first of ``keys`` present (layouts that renamed a weight), or None."""
        for k in keys:
            if k in self.sd:
                return self.take(k)
        return None

    def unused(self, drop: Sequence[str]) -> tuple[list[str], list[str]]:
        """(unused keys, dropped keys): keys under a ``drop`` prefix are dropped, the rest unused."""
        rest = sorted(k for k in self.sd if k not in self.used)
        dropped = [k for k in rest if k.startswith(tuple(drop))]
        return [k for k in rest if not k.startswith(tuple(drop))], dropped


def hf_activation(name: str) -> str:
    """A transformers ``hidden_act`` name → our ``act``."""
    table = {"gelu": "gelu", "gelu_fast": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
             "quick_gelu": "quick_gelu"}
    if name not in table:
        raise VideosslError(f"activation {name!r} has no ViViT equivalent (known: {', '.join(table)})")
    return table[name]


def resize_tables(sd: dict[str, torch.Tensor], init_args: dict[str, Any], grid: tuple[int, int, int]) -> None:
    """Resize learned tables from the reference grid (T', H', W') to the one of ``init_args`` in place
    (``--frames`` / ``--size``): linear in time, bicubic in space (as :meth:`ViViT.load_pretrained`)."""
    t0, h0, w0 = grid
    tub = init_args["tubelet"]
    size = init_args["img_size"]
    new = (init_args["num_frames"] // tub[0], size // tub[1], size // tub[2])
    if "pos_temporal" in sd:
        sd["pos_temporal"] = resize_temporal_table(sd["pos_temporal"], new[0])
    if "pos_spatial" in sd:
        sd["pos_spatial"] = resize_spatial_table(sd["pos_spatial"], (h0, w0), new[1:])
    if "pos_joint" in sd:
        d = sd["pos_joint"].shape[-1]
        steps = sd["pos_joint"].reshape(t0, h0 * w0, d)
        steps = torch.cat([resize_spatial_table(s[None], (h0, w0), new[1:]) for s in steps])  # (T0, S', D)
        steps = resize_temporal_table(steps.permute(1, 0, 2), new[0]).permute(1, 0, 2)
        sd["pos_joint"] = steps.reshape(1, -1, d)


def finish(taker: Taker, ours: dict[str, torch.Tensor], init_args: dict[str, Any], drop: Sequence[str] = (),
           note: str = "") -> Converted:
    """Check completeness both ways and shapes; return the :class:`Converted` or raise with the lists."""
    with torch.device("meta"):
        model = ViViT(**init_args)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unused, dropped = taker.unused(drop)
    unset = sorted(k for k in expected if k not in ours)
    extra = sorted(k for k in ours if k not in expected)
    bad = [f"{k} {tuple(v.shape)} vs {expected[k]}" for k, v in ours.items() if k in expected and tuple(v.shape) != expected[k]]
    if unused or unset or extra or bad:
        parts = []
        if unused:
            parts.append(f"{len(unused)} reference weight(s) unused: {unused}")
        if unset:
            parts.append(f"{len(unset)} ViViT weight(s) not set: {unset}")
        if extra:
            parts.append(f"{len(extra)} converted weight(s) the ViViT does not have: {extra}")
        if bad:
            parts.append(f"{len(bad)} shape mismatch(es) (converted vs ViViT): {bad}")
        raise VideosslError("incomplete conversion: " + "; ".join(parts))
    return Converted(dict(init_args), {k: v.contiguous() for k, v in ours.items()}, dropped, note)

