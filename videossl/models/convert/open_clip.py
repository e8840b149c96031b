"""OpenCLIP image towers (``open_clip.transformer.VisionTransformer``, ``model.visual``) inflated into a ViViT.

As the timm converter (same inflation, same exactness statement), plus CLIP's parts (arXiv:2103.00020
§2.4): the class embedding, ``ln_pre`` before the blocks, ``ln_post`` on the tokens (or on the pooled
vector with ``final_ln_after_pool``) and the bias-free image projection ``proj`` (our ``proj``, which
makes ``feature_dim`` the projection width). Blocks: ``nn.MultiheadAttention``'s packed ``in_proj``
is timm's ``qkv`` (same q, k, v order), ``out_proj`` is ``attn.proj``, ``c_fc`` / ``c_proj`` are ``fc1`` / ``fc2``.
A full CLIP state dict is accepted: the text tower (everything outside ``visual.``) is dropped and listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.convert.common import Converted, Taker, finish, resize_tables
from videossl.models.convert.timm_vit import image_stem

__all__ = ["convert_open_clip", "open_clip_config"]

_BLOCK = {"ln_1": "norm1", "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
          "attn.out_proj": "attn.proj", "ls_1": "ls1", "ln_2": "norm2", "mlp.c_fc": "mlp.fc1",
          "mlp.c_proj": "mlp.fc2", "ls_2": "ls2"}


def open_clip_config(visual: nn.Module) -> dict[str, Any]:
    """The converter's config of an OpenCLIP ``VisionTransformer`` (``model.visual`` of
    ``open_clip.create_model(name)``, which builds with random weights when ``pretrained`` is not given)."""
    if getattr(visual, "attn_pool", None) is not None or not hasattr(visual, "transformer"):
        raise VideosslError("OpenCLIP towers with attentional pooling (CoCa) or non-ViT towers are not supported")
    blk = visual.transformer.resblocks[0]
    act = type(blk.mlp.gelu).__name__
    acts = {"QuickGELU": "quick_gelu", "GELU": "gelu"}
    if act not in acts:
        raise VideosslError(f"OpenCLIP activation {act} has no ViViT equivalent")
    return {
        "width": int(visual.class_embedding.shape[0]), "layers": len(visual.transformer.resblocks),
        "heads": int(blk.attn.num_heads), "patch_size": int(visual.patch_size[0]), "image_size": int(visual.image_size[0]),
        "mlp_ratio": blk.mlp.c_fc.out_features / blk.mlp.c_fc.in_features, "pool_type": str(visual.pool_type),
        "final_ln_after_pool": bool(visual.final_ln_after_pool), "ln_pre": not isinstance(visual.ln_pre, nn.Identity),
        "act": acts[act], "norm_eps": float(visual.ln_post.eps), "layer_scale": not isinstance(blk.ls_1, nn.Identity),
        "output_dim": None if visual.proj is None else int(visual.proj.shape[1]),
    }


def convert_open_clip(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, frames: int = 16,
                      size: int | None = None, inflate: str = "mean", tubelet_t: int = 2) -> Converted:
    """An OpenCLIP image tower's state dict (``visual.*`` or the tower's own) + :func:`open_clip_config` → ViViT."""
    c = dict(config)
    pool = {"tok": "cls", "avg": "mean"}.get(c["pool_type"])
    if pool is None:
        raise VideosslError(f"OpenCLIP pool_type {c['pool_type']!r} is not supported (tok or avg)")
    whole = any(k.startswith("visual.") for k in state_dict)
    t = Taker(state_dict)
    v = "visual." if whole else ""
    d, p = int(c["width"]), int(c["patch_size"])
    grid = int(c["image_size"]) // p
    ours = image_stem(t, f"{v}conv1.weight", f"{v}conv1.bias", frames, tubelet_t, inflate, d)
    ours["cls_token"] = t.take(f"{v}class_embedding").reshape(1, 1, d)
    pos = t.take(f"{v}positional_embedding")[None]
    ours["pos_cls"], ours["pos_spatial"] = pos[:, :1], pos[:, 1:]
    if c["ln_pre"]:
        ours["ln_pre.weight"], ours["ln_pre.bias"] = t.take(f"{v}ln_pre.weight"), t.take(f"{v}ln_pre.bias")
    head = f"{v}transformer.resblocks."
    for k in [k for k in t.sd if k.startswith(head)]:
        i, rest = k[len(head):].split(".", 1)
        for old, new in _BLOCK.items():
            if rest == old or rest.startswith(old + "."):
                ours[f"blocks.{i}.{new}{rest[len(old):]}"] = t.take(k)
                break
    ours["norm.weight"], ours["norm.bias"] = t.take(f"{v}ln_post.weight"), t.take(f"{v}ln_post.bias")
    if c["output_dim"]:
        ours["proj.weight"] = t.take(f"{v}proj").t().contiguous()
    init_args = {
        "size": "tiny", "embed_dim": d, "depth": int(c["layers"]), "num_heads": int(c["heads"]),
        "mlp_ratio": float(c["mlp_ratio"]), "img_size": int(size or c["image_size"]), "num_frames": int(frames),
        "tubelet": [int(tubelet_t), p, p], "cls_token": True, "ln_pre": bool(c["ln_pre"]), "qkv_bias": True,
        "norm_eps": float(c["norm_eps"]), "act": c["act"], "init_values": 1e-5 if c["layer_scale"] else None,
        "pool": pool, "final_norm": "pooled" if c["final_ln_after_pool"] else "tokens",
        "proj_dim": int(c["output_dim"]) if c["output_dim"] else None,
    }
    resize_tables(ours, init_args, (frames // tubelet_t, grid, grid))
    drop = tuple(k for k in t.sd if not k.startswith("visual.")) if whole else ()  # a whole CLIP: the text tower
    return finish(t, ours, init_args, drop=drop, note=f"OpenCLIP image tower inflated ({inflate}) to {frames} frames")
