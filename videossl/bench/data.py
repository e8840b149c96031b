"""Data-pipeline benchmark: the recipe's training pipeline vs raw decoding of the same frames vs a naive loader.

Measured in one run, in this order :

1. **pipeline**: clips/s (and frames/s) of the recipe's *train* views through
   :class:`~videossl.data.loader.VideoShardDataset` + ``make_loader`` (tar read, JSON, decode
   once, sample, augment, collate, DataLoader IPC) for each ``--workers`` count (0 = in the main
   process), total and per worker. Timing starts when the first batch of a run arrives (worker
   start-up and the first shard open are not counted); epochs are chained with persistent workers
   until ``--clips`` clips have been timed. Two augmentation placements (``--augment``):

   - ``cpu``: the recipe's views exactly as configured: the whole augmentation (random resized
     crop, flip, colour jitter, grayscale, blur, normalise) runs in the CPU workers;
   - ``gpu-split``: what ``fit --data.augment_on device`` runs in its workers: decode, sample, draw every
     augmentation parameter, random-resized crop + flip and collate *uint8* clips; the photometric part
     (jitter, grayscale, blur, solarize, float conversion, normalise) is left to
     :class:`~videossl.data.loader.transforms.DevicePhotometric` on the device after the transfer, and is
     *not* timed here (it is not CPU work).

2. **raw decode**: the decoder alone (``open_video`` → ``get_frames`` → close, same backend and
   threads), in this process, on *exactly* the frames the pipeline decoded: the keys and the union
   of frame indices of every sample the first pipeline run produced, from the same encoded bytes
   (read from the shards before the clock starts).

3. **naive**: what many research repos do: open the bytes with PyAV, decode the *whole* video to
   RGB, stack, then index the same frames. At most ``--naive-clips`` clips (it is slow).

Ratios: each pipeline row is followed at once by the raw decoder on exactly that row's samples
and frames (the load of a shared machine drifts; adjacent runs keep the ratio honest), and is
compared with it twice: by wall clock (``vs raw``: clips/s over clips/s; ``per worker``: divided
by the workers count) and by CPU time (``CPU: raw/this``: the raw decoder's CPU ms per clip over
the pipeline's, where the pipeline's CPU time is the main process's plus its DataLoader workers',
read from ``/proc``; it is what the pipeline costs whatever else the machine runs). ``vs naive``
likewise against the naive loader. The goal (spec §10): pipeline >= 0.9x raw on 1 worker.
Frames/s counts the distinct decoded frames a sample needs (the union over its views), the same
number in every row.

Memory: host RSS (main process + DataLoader workers) is sampled every ``--rss-every`` clips during
each pipeline run, and a ``--leak-clips`` (500) open/decode/close loop on one sample reports its RSS
growth (:func:`videossl.data.decoding.measure_rss_growth`).

``--json PATH`` writes every figure as JSON (``-`` prints it on stdout after the tables).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videossl.data.decoding import available_backends, measure_rss_growth, open_video
from videossl.data.loader import VideoShardDataset, ViewSpec, make_loader
from videossl.data.loader.datamodule import default_train_views
from videossl.errors import VideosslError
from videossl.recipes import load_recipe

EPILOG = """\
examples:
  # synthetic set (videossl data synth --out data/synth), 0/1/2 workers, both augmentation placements
  videossl bench data --config recipes/brave/synthetic.yaml --clips 400
  # re-encoded real set (python tools/make_bench_real_set.py --out data/bench-real)
  videossl bench data --config recipes/bench/real_clip.yaml --clips 200 --workers 0 1 2
  # only the GPU-split placement, 1 worker, figures as JSON
  videossl bench data --config recipes/brave/synthetic.yaml --augment gpu-split --workers 1 --json bench.json
  # another shard set with a recipe's views
  videossl bench data --config recipes/brave/ucf101.yaml --data-dir data/ucf101-s1 --batch-size 8
"""

PLACEMENTS = ("cpu", "gpu-split")


# ----------------------------------------------------------------------------------------- helpers
def _rss_mb(pid: int | None = None) -> float:
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _cpu_s(pids: Sequence[int]) -> float:
    return time.process_time() + sum(_proc_cpu_s(p) for p in pids)


def _worker_pids(it: Any) -> list[int]:
    return [w.pid for w in getattr(it, "_workers", []) if getattr(w, "pid", None)]


def build_dataset(data: dict[str, Any], split: str, views: Sequence[Any], batch_size: int | None,
                  augment_on: str = "workers") -> Any:
    if "data_dir" not in data:
        raise VideosslError("the recipe has no data.data_dir: give --data-dir")
    return VideoShardDataset(
        data["data_dir"],
        list(views) if views else default_train_views(),
        split=split,
        batch_size=int(batch_size or data.get("batch_size", 8)),
        train=True,
        placement=data.get("placement", "inside_random"),
        decoder=data.get("decoder", "auto"),
        shuffle_buffer=int(data.get("shuffle_buffer", 64)),
        seed=int(data.get("seed", 0)),
        rank=0,
        world_size=1,
        num_classes=data.get("num_classes"),
        extras=data.get("extras") or (),
        decoder_threads=int(data.get("decoder_threads", 1)),
        augment_on=augment_on,
        decode_downscale=bool(data.get("decode_downscale", False)),
    )


def _sample_unions(batch: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    out = []
    for b, key in enumerate(batch["key"]):
        idx = np.concatenate([v[b].numpy().reshape(-1) for v in batch["indices"]])
        out.append((batch["shard"][b], key, np.unique(idx)))
    return out


# ---------------------------------------------------------------------------------------- pipeline
def time_pipeline(ds: Any, workers: int, clips: int, rss_every: int, prefetch_factor: int = 2) -> dict[str, Any]:
    """Run the loader until ``clips`` clips have been timed (after the first batch); rates and RSS."""

    loader = make_loader(ds, num_workers=workers, prefetch_factor=prefetch_factor, persistent_workers=workers > 0)
    samples: list[tuple[str, str, np.ndarray]] = []
    rss: list[dict[str, float]] = []
    timed = frames = 0
    t0 = None
    next_rss = 0
    started = time.perf_counter()
    while timed < clips:
        it = iter(loader)
        got = False
        for batch in it:
            got = True
            unions = _sample_unions(batch)
            inner = getattr(it, "_it", None)
            pids = _worker_pids(inner if inner is not None else it)
            if t0 is None:  # warm-up batch: not timed
                t0 = time.perf_counter()
                first_wait = t0 - started
                c0 = _cpu_s(pids)
                samples += unions
                continue
            samples += unions
            timed += len(unions)
            frames += sum(len(u) for _, _, u in unions)
            if timed >= next_rss:
                w = [_rss_mb(p) for p in pids]
                rss.append({"clips": timed, "main_mb": _rss_mb(), "workers_mb": float(sum(w)) if w else 0.0})
                next_rss += rss_every
            if timed >= clips:
                cpu = _cpu_s(pids) - c0
                break
        if not got:
            raise VideosslError("the loader yielded no batch")
    dt = time.perf_counter() - t0
    del it, loader
    gc.collect()
    per = max(workers, 1)
    return {
        "workers": workers,
        "clips": timed,
        "seconds": dt,
        "clips_per_s": timed / dt,
        "frames_per_s": frames / dt,
        "clips_per_s_per_worker": timed / dt / per,
        "ms_per_clip_per_worker": 1000 * dt * per / timed,
        "startup_s": first_wait,
        "cpu_s": cpu,
        "cpu_ms_per_clip": 1000 * cpu / timed,
        "rss": rss,
        "samples": samples,
    }


# ------------------------------------------------------------------------------------- baselines
def read_members(urls: Sequence[str], wanted: set[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """(shard, key) → encoded ``.mp4`` bytes for the wanted samples (read before any clock starts)."""
    import webdataset as wds

    out: dict[tuple[str, str], bytes] = {}
    shards = {s for s, _ in wanted}
    for url in urls:
        name = os.path.basename(url)
        if name not in shards:
            continue
        for raw in wds.tariterators.tarfile_samples([{"url": url}]):
            k = (name, raw["__key__"])
            if k in wanted and "mp4" in raw:
                out[k] = raw["mp4"]
    return out


def time_raw(items: list[tuple[bytes, np.ndarray]], backend: str, threads: int) -> dict[str, Any]:
    for data, idx in items[:2]:  # warm-up (library init)
        with open_video(data, backend, num_threads=threads) as r:
            r.get_frames(idx)
    frames = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for data, idx in items:
        with open_video(data, backend, num_threads=threads) as r:
            frames += r.get_frames(idx).shape[0]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"clips": len(items), "seconds": dt, "clips_per_s": len(items) / dt, "frames_per_s": frames / dt,
            "cpu_ms_per_clip": 1000 * cpu / len(items)}


def naive_decode(data: bytes, idx: np.ndarray) -> torch.Tensor:
    """Decode the whole video with PyAV, stack all frames as RGB, then index (the common research-repo way)."""
    import av

    with av.open(io.BytesIO(data)) as c:
        all_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    video = torch.from_numpy(np.stack(all_frames))
    return video[torch.from_numpy(np.minimum(idx, len(all_frames) - 1))]


def time_naive(items: list[tuple[bytes, np.ndarray]]) -> dict[str, Any]:
    naive_decode(*items[0])
    frames = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for data, idx in items:
        frames += naive_decode(data, idx).shape[0]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"clips": len(items), "seconds": dt, "clips_per_s": len(items) / dt, "frames_per_s": frames / dt,
            "cpu_ms_per_clip": 1000 * cpu / len(items)}


# -------------------------------------------------------------------------------------------- run
def run_bench(
    config: str | os.PathLike,
    split: str = "train",
    clips: int = 200,
    workers: Sequence[int] = (0, 1, 2),
    augment: Sequence[str] = PLACEMENTS,
    naive_clips: int = 50,
    leak_clips: int = 500,
    rss_every: int = 50,
    data_dir: str | None = None,
    batch_size: int | None = None,
    decoder: str | None = None,
    torch_threads: int = 1,
    prefetch_factor: int = 2,
    decode_downscale: bool = False,
) -> dict[str, Any]:

    if clips < 1:
        raise VideosslError(f"--clips must be >= 1, got {clips}")
    if any(w < 0 for w in workers) or not workers:
        raise VideosslError(f"--workers must be counts >= 0, got {list(workers)}")
    recipe = load_recipe(config)
    data = dict(recipe.get("data") or {})
    data = dict(data.get("init_args", data))
    if data_dir:
        data["data_dir"] = data_dir
    if decoder:
        data["decoder"] = decoder
    if decode_downscale:
        data["decode_downscale"] = True
    torch.set_num_threads(torch_threads)
    views = [ViewSpec(**v) if isinstance(v, dict) else v for v in (data.get("train_views") or [])]
    if not views:

        views = default_train_views()
    result: dict[str, Any] = {
        "config": str(config),
        "data_dir": str(data.get("data_dir")),
        "split": split,
        "views": [dataclasses.asdict(v) for v in views],
        "decode_downscale": bool(data.get("decode_downscale", False)),
        "torch_threads": torch_threads,
        "cpu_count": os.cpu_count(),
        "pipeline": [],
    }
    ds = None
    samples: list[tuple[str, str, np.ndarray]] | None = None
    blobs: dict[tuple[str, str], bytes] = {}

    def items_of(smp: list[tuple[str, str, np.ndarray]]) -> list[tuple[bytes, np.ndarray]]:
        missing = {(s, k) for s, k, _ in smp} - blobs.keys()
        if missing:
            blobs.update(read_members(ds.source.urls, missing))
        return [(blobs[(s, k)], u) for s, k, u in smp if (s, k) in blobs][:clips]

    backend = "?"
    for place in augment:
        # gpu-split is what `fit --data.augment_on device` runs in its workers (all parameters drawn, crop + flip)
        ds = build_dataset(data, split, views, batch_size, augment_on="workers" if place == "cpu" else "device")
        backend = ds.decoder  # "auto" stays auto: the raw baseline decodes exactly as the pipeline does
        for w in workers:
            r = time_pipeline(ds, w, clips, rss_every, prefetch_factor)
            smp = r.pop("samples")
            samples = samples or smp
            # the raw decoder on exactly this run's samples and frames, right after it (the load of a
            # shared machine drifts; adjacent measurements keep the ratio honest)
            its = items_of(smp)
            if not its:
                raise VideosslError("no encoded sample could be read back for the raw-decode baseline")
            r["raw_adjacent"] = time_raw(its, backend, ds.decoder_threads)
            r["augment"] = place
            result["pipeline"].append(r)
            print(
                f"pipeline [{place}] {w} worker(s): {r['clips_per_s']:.1f} clips/s ({r['clips']} clips); "
                f"raw decode of the same frames: {r['raw_adjacent']['clips_per_s']:.1f} clips/s",
                file=sys.stderr, flush=True,
            )
    assert ds is not None and samples is not None
    auto = (available_backends() or ["none"])[0]  # what `auto` tries first (torchcodec where it loads)
    result["decoder"] = backend if backend != "auto" else f"auto ({auto})"
    result["batch_size"] = ds.batch_size
    items = items_of(samples)
    raw = time_raw(items, backend, ds.decoder_threads)
    result["raw"] = raw
    print(f"raw decode: {raw['clips_per_s']:.1f} clips/s", file=sys.stderr, flush=True)
    nv = time_naive(items[: max(1, naive_clips)])
    result["naive"] = nv
    print(f"naive PyAV: {nv['clips_per_s']:.1f} clips/s", file=sys.stderr, flush=True)
    for r in result["pipeline"]:
        ra = r["raw_adjacent"]
        r["vs_raw"] = r["clips_per_s"] / ra["clips_per_s"]
        r["per_worker_vs_raw"] = r["clips_per_s_per_worker"] / ra["clips_per_s"]
        r["vs_naive"] = r["clips_per_s"] / nv["clips_per_s"]
        r["cpu_vs_raw"] = ra["cpu_ms_per_clip"] / r["cpu_ms_per_clip"]
        r["cpu_vs_naive"] = nv["cpu_ms_per_clip"] / r["cpu_ms_per_clip"]
    if leak_clips > 0:
        data0, idx0 = items[0]
        result["leak"] = measure_rss_growth(data0, backend, iterations=leak_clips, indices=idx0)
    result["mean_frames_per_clip"] = float(np.mean([len(u) for _, u in items]))
    return result


def print_report(res: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = console or Console(width=None if sys.stdout.isatty() else 200)
    views = ", ".join(f"{v['name']} {v['frames']}x{v['stride']}@{v['size']}" for v in res["views"])
    t = Table(
        title=f"videossl bench data: {res['config']} ({res['data_dir']}, split {res['split']}; views {views}; "
        f"batch {res['batch_size']}; decoder {res['decoder']}; {res['cpu_count']} CPUs)",
    )
    cols = ("loader", "augment", "workers", "clips/s", "frames/s", "clips/s/worker", "vs raw", "per worker vs raw",
            "vs naive", "CPU ms/clip", "CPU: raw/this", "CPU: naive/this")
    for col in cols:
        t.add_column(col, justify="left" if col in ("loader", "augment") else "right")
    raw, nv = res["raw"], res["naive"]
    for r in res["pipeline"]:
        t.add_row(
            "pipeline", r["augment"], str(r["workers"]), f"{r['clips_per_s']:.1f}", f"{r['frames_per_s']:.0f}",
            f"{r['clips_per_s_per_worker']:.1f}", f"{r['vs_raw']:.2f}x", f"{r['per_worker_vs_raw']:.2f}x",
            f"{r['vs_naive']:.2f}x", f"{r['cpu_ms_per_clip']:.1f}", f"{r['cpu_vs_raw']:.2f}x", f"{r['cpu_vs_naive']:.2f}x",
        )
        ra = r["raw_adjacent"]
        t.add_row("  raw decode, same frames", "-", "main", f"{ra['clips_per_s']:.1f}", f"{ra['frames_per_s']:.0f}",
                  f"{ra['clips_per_s']:.1f}", "1.00x", "1.00x", f"{ra['clips_per_s'] / nv['clips_per_s']:.2f}x",
                  f"{ra['cpu_ms_per_clip']:.1f}", "1.00x", f"{nv['cpu_ms_per_clip'] / ra['cpu_ms_per_clip']:.2f}x")
    t.add_row("raw decode (first run's clips)", "-", "main", f"{raw['clips_per_s']:.1f}", f"{raw['frames_per_s']:.0f}",
              f"{raw['clips_per_s']:.1f}", "1.00x", "1.00x", f"{raw['clips_per_s'] / nv['clips_per_s']:.2f}x",
              f"{raw['cpu_ms_per_clip']:.1f}", "1.00x", f"{nv['cpu_ms_per_clip'] / raw['cpu_ms_per_clip']:.2f}x")
    t.add_row("naive PyAV (whole video)", "-", "main", f"{nv['clips_per_s']:.1f}", f"{nv['frames_per_s']:.0f}",
              f"{nv['clips_per_s']:.1f}", f"{nv['clips_per_s'] / raw['clips_per_s']:.2f}x",
              f"{nv['clips_per_s'] / raw['clips_per_s']:.2f}x", "1.00x", f"{nv['cpu_ms_per_clip']:.1f}",
              f"{raw['cpu_ms_per_clip'] / nv['cpu_ms_per_clip']:.2f}x", "1.00x")
    con.print(t)
    m = Table(title="host RSS over time (MiB; main process + DataLoader workers; forked workers share pages with "
                    "the main process, so the total over-counts; the JSON has every sample)")
    for col in ("augment", "workers", "after clips", "main", "workers", "total"):
        m.add_column(col, justify="right")
    for r in res["pipeline"]:
        pts = r["rss"]
        keep = sorted({0, len(pts) // 3, 2 * len(pts) // 3, len(pts) - 1}) if len(pts) > 4 else range(len(pts))
        for s in (pts[i] for i in keep):
            m.add_row(r["augment"], str(r["workers"]), str(s["clips"]), f"{s['main_mb']:.0f}", f"{s['workers_mb']:.0f}",
                      f"{s['main_mb'] + s['workers_mb']:.0f}")
    con.print(m)
    if "leak" in res:
        lk = res["leak"]
        con.print(
            f"decode loop ({int(lk['iterations'])} clips, {res['decoder']}, one sample): RSS {lk['rss_start_mb']:.0f} → "
            f"{lk['rss_end_mb']:.0f} MiB, growth {lk['growth_mb']:+.1f} MiB ({lk['per_iter_kb']:+.2f} KiB/clip)"
        )


# -------------------------------------------------------------------------------------------- CLI
def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="recipe YAML whose data section (train views, data_dir) is measured")
    p.add_argument("--split", default="train", help="shard split to read")
    p.add_argument("--clips", type=int, default=200, help="clips timed per pipeline run (and for the raw baseline)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts to measure")
    p.add_argument("--augment", nargs="+", choices=PLACEMENTS, default=list(PLACEMENTS),
                   help="cpu: the recipe's whole augmentation in the workers; gpu-split: workers crop+flip to uint8, "
                   "the photometric part is left to BatchVideoAugment on the device (not timed)")
    p.add_argument("--naive-clips", type=int, default=50, help="clips for the naive whole-video PyAV loader")
    p.add_argument("--leak-clips", type=int, default=500, help="iterations of the RSS-growth decode loop (0: skip)")
    p.add_argument("--rss-every", type=int, default=50, help="sample host RSS every N clips")
    p.add_argument("--data-dir", default=None, help="override the recipe's data.data_dir")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's data.batch_size")
    p.add_argument("--decoder", default=None, help="override the recipe's decoder (auto|decord|pyav|torchcodec)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads in the main process")
    p.add_argument("--prefetch-factor", type=int, default=2)
    p.add_argument("--decode-downscale", action="store_true",
                   help="decode frames scaled down when every view allows it (data.decode_downscale)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON ('-': stdout)")


def run_cli(args: argparse.Namespace) -> int:
    res = run_bench(
        args.config, split=args.split, clips=args.clips, workers=args.workers, augment=args.augment,
        naive_clips=args.naive_clips, leak_clips=args.leak_clips, rss_every=args.rss_every, data_dir=args.data_dir,
        batch_size=args.batch_size, decoder=args.decoder, torch_threads=args.torch_threads,
        prefetch_factor=args.prefetch_factor,
        decode_downscale=args.decode_downscale,
    )
    print_report(res)
    if args.json:
        text = json.dumps(res, indent=2, default=float)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_data", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(p)
    try:
        return run_cli(p.parse_args(argv))
    except VideosslError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
