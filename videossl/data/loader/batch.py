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

__all__ = ["INLINE_BYTES", "collate", "for_ipc", "to_clip", "view", "view_frames", "view_indices", "view_valid"]

#: tensors up to this size cross the DataLoader's worker -> main pipe by value (see :func:`for_ipc`)
INLINE_BYTES = 64 * 1024


def decode_member(ext: str, data: bytes) -> Any:
    if ext.endswith("npz"):
        return {k: torch.from_numpy(v) for k, v in load_npz(data).items()}
    if ext.endswith("npy"):
        return torch.from_numpy(load_npy(data))
    if ext.endswith("json"):
        return json.loads(data)
    return data


def _from_numpy(array, order: tuple[int, ...] | None) -> torch.Tensor:
    t = torch.from_numpy(array)
    return t if order is None else t.permute(order)


class _Inline:
    """A small CPU tensor pickled by value: unpickled as ``torch.from_numpy`` of its array, in its memory layout
    when it is dense (e.g. channels-last frames stay channels-last), else C-contiguous (see :func:`for_ipc`)."""

    __slots__ = ("array", "order")

    def __init__(self, tensor: torch.Tensor):
        self.array, self.order = tensor.numpy(), None
        if tensor.dim() > 1 and not tensor.is_contiguous():
            perm = sorted(range(tensor.dim()), key=lambda d: (-tensor.stride(d), d))  # outermost dimension first
            inner = tensor.permute(perm)
            if inner.is_contiguous():  # dense in another dimension order: send it in that order
                self.array, self.order = inner.numpy(), tuple(perm.index(d) for d in range(tensor.dim()))

    def __reduce__(self):
        return _from_numpy, (self.array, self.order)


_NUMPY_DTYPES = {torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.float32,
                 torch.float64}


def for_ipc(obj: Any, max_bytes: int = INLINE_BYTES) -> Any:
    """``obj`` (a batch) with every CPU tensor of at most ``max_bytes`` wrapped to cross a process boundary *by
    value*: it unpickles as an equal tensor (same dtype, shape, values and, when dense, strides).

    A DataLoader worker sends every tensor through its own shared-memory segment, and the main process fetches
    each segment's file descriptor over a socket from the worker: ~0.2 ms of CPU per tensor on the two sides,
    ~3 ms for the ~17 small tensors of a batch (labels, masks, frame indices, the device augmentation's
    parameters), against a few microseconds for their bytes in the pipe. Views and other large tensors keep
    the shared memory. Applied by :class:`~videossl.data.loader.VideoShardDataset` in DataLoader workers only.
    """
    if isinstance(obj, torch.Tensor):
        small = obj.device.type == "cpu" and obj.dtype in _NUMPY_DTYPES and obj.numel() * obj.element_size() <= max_bytes
        return _Inline(obj) if small and not obj.requires_grad else obj
    if isinstance(obj, dict):
        return {k: for_ipc(v, max_bytes) for k, v in obj.items()}
    if isinstance(obj, list):
        return [for_ipc(v, max_bytes) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(for_ipc(v, max_bytes) for v in obj)
    return obj


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
    if "event_starts" in samples[0]:  # (B, K_max), padded with -1
        starts = [s.get("event_starts", torch.empty(0, dtype=torch.long)) for s in samples]
        out["event_starts"] = torch.nn.utils.rnn.pad_sequence(starts, batch_first=True, padding_value=-1)
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


def view_frames(batch: dict[str, Any], name: str, k: int = 0) -> torch.Tensor:
    """The (B, T) source frame index of every frame of that output (``batch["indices"]``)."""
    return batch["indices"][_position(batch, name, k)]


def view_valid(batch: dict[str, Any], name: str, k: int = 0) -> torch.Tensor | None:
    """The (B, T) validity mask of that output (False on the long-video sampler's padding)."""
    valid = batch.get("valid")
    return None if valid is None else valid[_position(batch, name, k)]
