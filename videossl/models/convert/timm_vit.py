"""timm image ViTs (``timm.models.vision_transformer.VisionTransformer``) inflated into a ViViT.

The 2D patch embedding becomes the tubelet embedding (``mean`` or ``center`` inflation, see
:func:`~videossl.models.vivit.inflate_patch_weight`), the spatial position table and the class token
(with its position) are copied, the temporal table starts at zero, and the blocks map 1:1 (our blocks
*are* timm blocks). ViViT, arXiv:2103.15691 §3.4 ("initialisation from image models").

With zero temporal positions a static clip embeds as T' copies of the image's tokens. Without a class
token (``class_token=False, global_pool='avg'``), attention over T' equal copies of every token is the
image's attention, so the inflated model gives the image model's features *exactly* at any length. With
a class token it does so only for one tubelet step (clip length = tubelet length): beyond that the
patch keys outnumber the class key T' to 1 and the softmax weights differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.convert.common import Converted, Taker, finish, resize_tables
from videossl.models.vivit import inflate_patch_weight

__all__ = ["convert_timm_vit", "timm_vit_config"]

_ACTS = {"GELU": "gelu", "QuickGELU": "quick_gelu", "GELUTanh": "gelu_tanh"}


def timm_vit_config(model: nn.Module) -> dict[str, Any]:
    """The converter's config of a timm ``VisionTransformer`` instance (plain data; e.g. from
    ``timm.create_model(name, pretrained=False)``, which needs no download)."""
    if any(getattr(model, a, 0) for a in ("num_reg_tokens", "no_embed_class", "dynamic_img_size")):
        raise VideosslError("timm ViTs with register tokens, no_embed_class or dynamic_img_size are not supported")
    blk = model.blocks[0]
    if not isinstance(blk.attn.q_norm, nn.Identity) or getattr(model, "attn_pool", None) is not None:
        raise VideosslError("timm ViTs with qk_norm or attention pooling are not supported")
    act = blk.mlp.act
    name = type(act).__name__
    if name == "GELU" and getattr(act, "approximate", "none") == "tanh":
        name = "GELUTanh"
    if name not in _ACTS:
        raise VideosslError(f"timm activation {name} has no ViViT equivalent")
    fc_norm = not isinstance(model.fc_norm, nn.Identity)
    norm = model.fc_norm if fc_norm else model.norm
    return {
        "embed_dim": int(model.embed_dim), "depth": len(model.blocks), "num_heads": int(blk.attn.num_heads),
        "patch_size": int(model.patch_embed.patch_size[0]), "img_size": int(model.patch_embed.img_size[0]),
        "in_chans": int(model.patch_embed.proj.in_channels),
        "mlp_ratio": blk.mlp.fc1.out_features / blk.mlp.fc1.in_features,
        "class_token": model.cls_token is not None, "global_pool": str(model.global_pool), "fc_norm": fc_norm,
        "pre_norm": not isinstance(model.norm_pre, nn.Identity), "qkv_bias": blk.attn.qkv.bias is not None,
        "norm_eps": float(getattr(norm, "eps", 1e-6)), "act": _ACTS[name],
        "layer_scale": not isinstance(blk.ls1, nn.Identity),
    }


def image_stem(t: Taker, weight_key: str, bias_key: str | None, frames: int, tubelet_t: int, inflate: str,
               d: int) -> dict[str, torch.Tensor]:
    w = t.take(weight_key)
    bias = t.take(bias_key) if bias_key and t.has(bias_key) else torch.zeros(d)  # no bias = a zero bias, exactly
    if frames % tubelet_t:
        raise VideosslError(f"--frames {frames} is not divisible by the tubelet length {tubelet_t}")
    return {"patch_embed.weight": inflate_patch_weight(w, tubelet_t, inflate), "patch_embed.bias": bias,
            "pos_temporal": torch.zeros(1, frames // tubelet_t, d)}


def convert_timm_vit(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, frames: int = 16,
                     size: int | None = None, inflate: str = "mean", tubelet_t: int = 2) -> Converted:
    """A timm ViT's state dict (+ :func:`timm_vit_config`) → ViViT ``init_args`` and state dict."""
    c = dict(config)
    pool = {"token": "cls", "avg": "mean"}.get(c["global_pool"])
    if pool is None:
        raise VideosslError(f"timm global_pool {c['global_pool']!r} is not supported (token or avg)")
    d, p, grid = int(c["embed_dim"]), int(c["patch_size"]), int(c["img_size"]) // int(c["patch_size"])
    t = Taker(state_dict)
    ours = image_stem(t, "patch_embed.proj.weight", "patch_embed.proj.bias", frames, tubelet_t, inflate, d)
    pos = t.take("pos_embed")
    if c["class_token"]:
        ours["cls_token"] = t.take("cls_token")
        ours["pos_cls"], pos = pos[:, :1], pos[:, 1:]
    ours["pos_spatial"] = pos
    if c["pre_norm"]:
        ours["ln_pre.weight"], ours["ln_pre.bias"] = t.take("norm_pre.weight"), t.take("norm_pre.bias")
    for k in list(t.sd):
        if k.startswith("blocks."):
            ours[k] = t.take(k)
    norm = "fc_norm" if c["fc_norm"] else "norm"
    ours["norm.weight"], ours["norm.bias"] = t.take(f"{norm}.weight"), t.take(f"{norm}.bias")
    init_args = {
        "size": "tiny", "embed_dim": d, "depth": int(c["depth"]), "num_heads": int(c["num_heads"]),
        "mlp_ratio": float(c["mlp_ratio"]), "img_size": int(size or c["img_size"]), "num_frames": int(frames),
        "tubelet": [int(tubelet_t), p, p], "in_chans": int(c.get("in_chans", 3)), "cls_token": bool(c["class_token"]),
        "ln_pre": bool(c["pre_norm"]), "qkv_bias": bool(c["qkv_bias"]), "norm_eps": float(c["norm_eps"]),
        "act": c["act"], "init_values": 1e-5 if c["layer_scale"] else None, "pool": pool,
        "final_norm": "pooled" if c["fc_norm"] else "tokens",
    }
    resize_tables(ours, init_args, (frames // tubelet_t, grid, grid))
    return finish(t, ours, init_args, drop=("head.",), note=f"timm ViT inflated ({inflate}) to {frames} frames")
