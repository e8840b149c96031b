"""The batch contract between the reader and every consumer (methods, evaluation, benchmarks).

A batch is a dict: ``views`` (list of (B, T, 3, S, S) tensors, one per view output, in the order of
the view specs, each spec's copies / clips / crops in turn), ``view_names`` (the spec name of each
output), ``augment`` (per output: the photometric parameters the device still has to apply, or
``None``; see ``VideoDataModule.on_after_batch_transfer``), ``valid`` / ``indices`` per output,
``label``, ``caption``, ``key``, ``shard``, ``duplicate``, ``padded``, ``looped``, ``skipped`` and
any ground-truth extras. Consumers ask for a view by name (:func:`view`) and turn it into a float clip with :func:`to_clip`.

With an audio spec (``VideoShardDataset(audio=...)``, :mod:`videossl.data.audio`) a batch also holds
``spectrogram``: (B, C, frames, n_mels) float32, the log-mel spectrogram of the sound under the window of
the view ``audio.view`` (C = ``audio.channels``, ``frames = ceil(samples / hop)``), and ``has_audio``:
(B,) bool, False where the video had no audio stream and the spectrogram is silence (all zeros;
``audio.missing: silence``). Without an audio spec neither key is present.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from videossl.data.shards.format import load_npy, load_npz
from videossl.errors import VideosslError

__all__ = ["collate", "to_clip", "view", "view_indices", "view_valid"]


def decode_member(ext: str, data: bytes) -> Any:
    if ext.endswith("npz"):
        return {k: torch.from_numpy(v) for k, v in load_npz(data).items()}
    if ext.endswith("npy"):
        return torch.from_numpy(load_npy(data))
    if ext.endswith("json"):
        return json.loads(data)
    return data


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a list of samples: views → list of (B, T, 3, S, S); masks/indices → (B, T); GT → stacked if possible."""
    out: dict[str, Any] = {
        "key": [s["key"] for s in samples],
        "shard": [s["shard"] for s in samples],
        "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
        "caption": [s.get("caption", "") for s in samples],
        "duplicate": torch.tensor([s["duplicate"] for s in samples], dtype=torch.bool),
        "padded": torch.tensor([s["padded"] for s in samples], dtype=torch.bool),
        "looped": torch.tensor([s["looped"] for s in samples], dtype=torch.bool),
        "views": [torch.stack(v) for v in zip(*(s["views"] for s in samples), strict=True)],
        "view_names": list(samples[0].get("view_names") or []),
        # per output: the photometric parameters still to apply on the device (augment_on: device), else None
        "augment": [None if p[0] is None else {k: torch.stack([q[k] for q in p]) for k in p[0]}
                    for p in zip(*(s.get("augment") or [None] * len(s["views"]) for s in samples), strict=True)],
        "valid": [torch.stack(v) for v in zip(*(s["valid"] for s in samples), strict=True)],
        "indices": [torch.stack(v) for v in zip(*(s["indices"] for s in samples), strict=True)],
    }
    if "spectrogram" in samples[0]:
        specs = [s["spectrogram"] for s in samples]
        if any(t.shape != specs[0].shape for t in specs):
            shapes = sorted({tuple(t.shape) for t in specs})
            raise VideosslError(
                f"the audio windows of one batch differ in length ({shapes}): a stride-based view covers more seconds "
                "of a video at a lower frame rate; re-encode the shards to one rate (make-shards --fps), give the view "
                "target_fps, or set audio.seconds")
        out["spectrogram"] = torch.stack(specs)
        out["has_audio"] = torch.tensor([bool(s["has_audio"]) for s in samples], dtype=torch.bool)
    for k in samples[0].get("extras", {}):
        vals = [s["extras"][k] for s in samples]
        try:
            out[k] = torch.utils.data.default_collate(vals)
        except (RuntimeError, TypeError):
            out[k] = vals
    return out


def to_clip(view: torch.Tensor) -> torch.Tensor:
    """A batch of views from the pipeline (B, T, C, H, W), uint8 or float → float (B, C, T, H, W)."""
    if view.dtype == torch.uint8:
        view = view.float().div_(255.0)
    return view.permute(0, 2, 1, 3, 4).contiguous()


def view_indices(batch: dict[str, Any], name: str) -> list[int]:
    """Positions in ``batch["views"]`` of every output of the view spec ``name``."""
    return [i for i, n in enumerate(batch.get("view_names") or []) if n == name]


def _position(batch: dict[str, Any], name: str, k: int) -> int:
    where = view_indices(batch, name)
    if k >= len(where):
        have = sorted(set(batch.get("view_names") or []))
        raise VideosslError(f"the batch has {len(where)} output(s) of a view named {name!r} (asked for #{k}); "
                            f"its views are {have}: name the data's views as the method expects")
    return where[k]


def view(batch: dict[str, Any], name: str, k: int = 0) -> torch.Tensor:
    """The ``k``-th output (copy / clip / crop) of the view named ``name``: (B, T, 3, S, S)."""
    return batch["views"][_position(batch, name, k)]


def view_valid(batch: dict[str, Any], name: str, k: int = 0) -> torch.Tensor | None:
    """The (B, T) validity mask of that output (False on the long-video sampler's padding)."""
    valid = batch.get("valid")
    return None if valid is None else valid[_position(batch, name, k)]
