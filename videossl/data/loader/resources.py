"""Host-RAM estimate of a loader (batches in flight, decoded frames, shuffle buffers), checked before it starts."""

from __future__ import annotations

import os
from collections.abc import Sequence

from videossl.data.loader.views import ViewSpec
from videossl.errors import VideosslError

__all__ = ["check_ram", "ram_estimate"]


def _host_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ram_estimate(
    views: Sequence[ViewSpec],
    batch_size: int,
    num_workers: int,
    prefetch_factor: int = 2,
    shuffle_buffer: int = 0,
    avg_sample_bytes: float = 0.0,
    source_hw: tuple[int, int] | None = None,
    audio_bytes: float = 0.0,
) -> dict[str, float]:
    """Host RAM held by the loader: workers × prefetch × batch × (Σ_views(outputs × T × H × W × 3 × dtype)
    + ``audio_bytes``, a sample's spectrogram), plus each worker's decoded frames and encoded shuffle buffer."""
    w = max(num_workers, 1)
    in_flight = w * (prefetch_factor if num_workers > 0 else 1)
    batch = batch_size * (sum(v.out_bytes() for v in views) + audio_bytes)
    frames = 0.0
    if source_hw:
        frames = max(1, num_workers) * sum(v.frames * v.copies * v.num_clips for v in views) * source_hw[0] * source_hw[1] * 3
    shuffle = max(1, num_workers) * shuffle_buffer * avg_sample_bytes
    total = in_flight * batch + frames + shuffle
    return {"batches_bytes": in_flight * batch, "frames_bytes": frames, "shuffle_bytes": shuffle, "total_bytes": total,
            "batch_bytes": batch}


def check_ram(estimate: dict[str, float], fraction: float, what: str = "data loader", host_bytes: int | None = None) -> str:
    host = host_bytes or _host_ram_bytes()
    gb = 2**30
    msg = (
        f"{what}: host RAM estimate {estimate['total_bytes'] / gb:.2f} GiB "
        f"(batches in flight {estimate['batches_bytes'] / gb:.2f} GiB, one batch {estimate['batch_bytes'] / 2**20:.1f} MiB, "
        f"decoded frames {estimate['frames_bytes'] / gb:.2f} GiB, shuffle buffers {estimate['shuffle_bytes'] / gb:.2f} GiB) "
        f"of {host / gb:.1f} GiB host RAM (limit {fraction:.0%})"
    )
    if estimate["total_bytes"] > fraction * host:
        raise VideosslError(msg + ": too much; lower batch_size, num_workers, prefetch_factor, frames or size")
    return msg
