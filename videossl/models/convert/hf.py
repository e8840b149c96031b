"""Hugging Face ``transformers`` video encoders → ViViT: VideoMAE, V-JEPA 2 and ViViT.

Each takes the model's state dict (the base model's, or a ``*ForPreTraining`` /
``*ForVideoClassification`` one: the ``videomae.`` / ``vjepa2.`` / ``vivit.`` prefix is stripped and the
heads are dropped and listed) and its ``config.json`` as a dict.

* **VideoMAE** (arXiv:2203.12602 §3.3): 2×16×16 tubelets, *fixed* 1-D sin-cos positions of the
  time-major token index (``pos_embed="sincos"``, nothing stored), query and value biases but no key
  bias (ours: a zero key bias, exactly), LayerNorm eps ``1e-12`` by default, and with
  ``use_mean_pooling`` no final norm on the tokens (an ``fc_norm`` after pooling in the classifier,
  ours ``final_norm="pooled"``). Older checkpoints hold ``q_bias`` / ``v_bias``, newer ones
  ``query.bias`` / ``value.bias``: both are read. VideoMAE V2 (arXiv:2303.16727) has the same
  encoder; its checkpoints through ``transformers`` use this layout.
* **V-JEPA 2** (arXiv:2506.09985 §2.1): no additive positions; 3D RoPE inside attention
  (``pos_embed="rope3d"``, see :func:`~videossl.models.vivit.rope3d_rotate`), separate q/k/v
  projections (packed into ``qkv``), a final LayerNorm. The predictor is not part of the encoder (dropped).
* **ViViT** (arXiv:2103.15691 §3.3, model 1): a class token and one *joint* learned table over
  (CLS + T'·H'·W') tokens (``pos_embed="joint"``), tanh-approximated GELU, the final norm on the tokens;
  the features are the class token (``pool="cls"``). The tanh pooler is a head (dropped).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from videossl.errors import VideosslError
from videossl.models.convert.common import Converted, Taker, finish, hf_activation, resize_tables

__all__ = ["convert_hf_videomae", "convert_hf_vivit", "convert_hf_vjepa2"]

_MLP_BLOCK = ("norm1", "norm2", "mlp.fc1", "mlp.fc2", "attn.proj")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check_type(config: Mapping[str, Any], want: str) -> None:
    got = config.get("model_type", want)
    if got != want:
        raise VideosslError(f"config.json says model_type {got!r}, expected {want!r}: pick the matching --from")


def _linear(t: Taker, ours: dict, src: str, dst: str, bias: bool = True) -> None:
    ours[f"{dst}.weight"] = t.take(f"{src}.weight")
    if bias:
        ours[f"{dst}.bias"] = t.take(f"{src}.bias")


def _qkv(t: Taker, ours: dict, i: int, q: str, k: str, v: str, biases: tuple) -> None:
    ours[f"blocks.{i}.attn.qkv.weight"] = torch.cat([t.take(f"{q}.weight"), t.take(f"{k}.weight"), t.take(f"{v}.weight")])
    if biases is not None:
        ours[f"blocks.{i}.attn.qkv.bias"] = torch.cat(biases)


def _common_args(c: Mapping[str, Any], frames: int | None, size: int | None, tubelet: tuple[int, int, int],
                 img: int, default_frames: int) -> dict[str, Any]:
    d = int(c["hidden_size"])
    ratio = c["intermediate_size"] / d if "intermediate_size" in c else float(c.get("mlp_ratio", 4.0))
    return {"size": "tiny", "embed_dim": d, "depth": int(c["num_hidden_layers"]), "num_heads": int(c["num_attention_heads"]),
            "mlp_ratio": float(ratio), "img_size": int(size or img), "num_frames": int(frames or default_frames),
            "tubelet": list(tubelet), "in_chans": int(c.get("num_channels", c.get("in_chans", 3))),
            "norm_eps": float(c.get("layer_norm_eps", 1e-12)), "act": hf_activation(c.get("hidden_act", "gelu"))}


def convert_hf_videomae(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, frames: int | None = None,
                        size: int | None = None, **_: Any) -> Converted:
    """``VideoMAEModel`` (or ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification``) → ViViT."""
    c = dict(config)
    _check_type(c, "videomae")
    p = _pair(c.get("patch_size", 16))
    tub = (int(c.get("tubelet_size", 2)), *p)
    t = Taker(state_dict, strip=("videomae.",))
    ours: dict[str, torch.Tensor] = {}
    _linear(t, ours, "embeddings.patch_embeddings.projection", "patch_embed")
    qv_bias = bool(c.get("qv_bias", c.get("qkv_bias", True)))
    depth = int(c["num_hidden_layers"])
    for i in range(depth):
        s = f"encoder.layer.{i}"
        a = f"{s}.attention.attention"
        biases = None
        if qv_bias:
            qb = t.take_any(f"{a}.q_bias", f"{a}.query.bias")
            vb = t.take_any(f"{a}.v_bias", f"{a}.value.bias")
            if qb is None or vb is None:
                raise VideosslError(f"VideoMAE layer {i}: no query/value bias (q_bias or query.bias) although qv_bias is set")
            biases = (qb, torch.zeros_like(qb), vb)  # VideoMAE has no key bias: zero is exact
        _qkv(t, ours, i, f"{a}.query", f"{a}.key", f"{a}.value", biases)
        for src, dst in ((f"{s}.layernorm_before", "norm1"), (f"{s}.attention.output.dense", "attn.proj"),
                         (f"{s}.layernorm_after", "norm2"), (f"{s}.intermediate.dense", "mlp.fc1"),
                         (f"{s}.output.dense", "mlp.fc2")):
            _linear(t, ours, src, f"blocks.{i}.{dst}")
    final = "none"
    if t.has("layernorm.weight"):  # use_mean_pooling=False: a final norm on the tokens
        _linear(t, ours, "layernorm", "norm")
        final = "tokens"
    elif t.has("fc_norm.weight"):  # the classifier's norm after mean pooling
        _linear(t, ours, "fc_norm", "norm")
        final = "pooled"
    init_args = _common_args(c, frames, size, tub, _pair(c.get("image_size", 224))[0], int(c.get("num_frames", 16)))
    init_args.update(pos_embed="sincos", qkv_bias=qv_bias, pool="mean", final_norm=final)
    if final == "pooled":
        init_args["norm_eps"] = 1e-5  # the classifier's fc_norm is a default nn.LayerNorm
    drop = ("decoder.", "encoder_to_decoder.", "mask_token", "classifier.")
    return finish(t, ours, init_args, drop=drop, note="VideoMAE: fixed sin-cos positions, zero key bias")


def convert_hf_vjepa2(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, frames: int | None = None,
                      size: int | None = None, **_: Any) -> Converted:
    """``VJEPA2Model`` (or ``VJEPA2ForVideoClassification``) → ViViT with 3D RoPE; the predictor is dropped."""
    c = dict(config)
    _check_type(c, "vjepa2")
    p = int(c.get("patch_size", 16))
    tub = (int(c.get("tubelet_size", 2)), p, p)
    if int(c.get("crop_size", 256)) != int(size or c.get("crop_size", 256)):
        raise VideosslError("V-JEPA 2 numbers its RoPE rows by the configured crop_size: convert at that --size")
    t = Taker(state_dict, strip=("vjepa2.",))
    ours: dict[str, torch.Tensor] = {}
    _linear(t, ours, "encoder.embeddings.patch_embeddings.proj", "patch_embed")
    qkv_bias = bool(c.get("qkv_bias", True))
    for i in range(int(c["num_hidden_layers"])):
        s = f"encoder.layer.{i}"
        a = f"{s}.attention"
        biases = tuple(t.take(f"{a}.{n}.bias") for n in ("query", "key", "value")) if qkv_bias else None
        _qkv(t, ours, i, f"{a}.query", f"{a}.key", f"{a}.value", biases)
        for src, dst in (("norm1", "norm1"), ("attention.proj", "attn.proj"), ("norm2", "norm2"),
                         ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            _linear(t, ours, f"{s}.{src}", f"blocks.{i}.{dst}")
    _linear(t, ours, "encoder.layernorm", "norm")
    init_args = _common_args(c, frames, size, tub, int(c.get("crop_size", 256)), int(c.get("frames_per_clip", 64)))
    init_args.update(pos_embed="rope3d", qkv_bias=qkv_bias, pool="mean", final_norm="tokens",
                     mlp_ratio=float(c.get("mlp_ratio", 4.0)), norm_eps=float(c.get("layer_norm_eps", 1e-6)))
    return finish(t, ours, init_args, drop=("predictor.", "pooler.", "classifier."), note="V-JEPA 2: 3D RoPE")


# current transformers names first, then the older BERT-style ones
_VIVIT_LAYER = (("layernorm_before", "norm1", ("layernorm_before",)),
                ("attention.o_proj", "attn.proj", ("attention.output.dense",)),
                ("layernorm_after", "norm2", ("layernorm_after",)),
                ("mlp.fc1", "mlp.fc1", ("intermediate.dense",)),
                ("mlp.fc2", "mlp.fc2", ("output.dense",)))


def convert_hf_vivit(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, frames: int | None = None,
                     size: int | None = None, **_: Any) -> Converted:
    """``VivitModel`` (or ``VivitForVideoClassification``) → ViViT with a class token and a joint table."""
    c = dict(config)
    _check_type(c, "vivit")
    tub = tuple(int(v) for v in c.get("tubelet_size", (2, 16, 16)))
    t = Taker(state_dict, strip=("vivit.",))
    ours: dict[str, torch.Tensor] = {"cls_token": t.take("embeddings.cls_token")}
    pos = t.take("embeddings.position_embeddings")
    ours["pos_cls"], ours["pos_joint"] = pos[:, :1], pos[:, 1:]
    _linear(t, ours, "embeddings.patch_embeddings.projection", "patch_embed")
    qkv_bias = bool(c.get("qkv_bias", True))
    new = any(k.startswith("layers.") for k in t.sd)
    for i in range(int(c["num_hidden_layers"])):
        if new:
            s, q, k, v = f"layers.{i}", *(f"layers.{i}.attention.{n}_proj" for n in "qkv")
        else:
            s = f"encoder.layer.{i}"
            q, k, v = (f"{s}.attention.attention.{n}" for n in ("query", "key", "value"))
        biases = tuple(t.take(f"{n}.bias") for n in (q, k, v)) if qkv_bias else None
        _qkv(t, ours, i, q, k, v, biases)
        for src_new, dst, (src_old,) in _VIVIT_LAYER:
            _linear(t, ours, f"{s}.{src_new if new else src_old}", f"blocks.{i}.{dst}")
    _linear(t, ours, "layernorm", "norm")
    img = _pair(c.get("image_size", 224))[0]
    init_args = _common_args(c, frames, size, tub, img, int(c.get("num_frames", 32)))
    init_args.update(pos_embed="joint", cls_token=True, qkv_bias=qkv_bias, pool="cls", final_norm="tokens",
                     norm_eps=float(c.get("layer_norm_eps", 1e-6)), act=hf_activation(c.get("hidden_act", "gelu_fast")))
    resize_tables(ours, init_args, (int(c.get("num_frames", 32)) // tub[0], img // tub[1], img // tub[2]))
    return finish(t, ours, init_args, drop=("pooler.", "classifier."), note="ViViT: joint table, class token")
