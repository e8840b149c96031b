"""Memory and throughput of a full ViViT training step per (frames × mask ratio) cell.

Each cell builds the encoder at the cell's clip length, then times one *full training step*
(forward with token dropping, a mean-pooled contrastive-style loss, backward, AdamW) at batch
``--batch``: median step time over ``--steps`` after ``--warmup`` warm-up steps, clips/s,
kept tokens per clip, and on CUDA the peak ``max_memory_allocated`` / ``max_memory_reserved``
after resetting the peak. On CPU, ``--cpu-memory`` runs every measurement in its own spawned process and
reports its peak RSS growth over a step (``mem_mib``: the highest RSS sampled every 0.5 ms during the
timed steps minus the RSS after the warm-up, with glibc returning freed blocks >= 64 KiB to the OS:
activations and gradients, measured, not estimated).
Beside every cell, the same run measures a *plain-torch reference*: the
same token count through ``nn.TransformerEncoder`` layers of the same width/depth/heads (no
tubelet conv, no masking code, PyTorch's own fused attention path), so the ratio ours/reference
isolates the encoder's overhead. An out-of-memory cell is recorded as ``OOM``.

Prints a table (and writes ``encoder_bench.csv``, ``encoder_bench.md`` and ``encoder_bench.png``:
memory — or step time on CPU — vs frames, one line per mask ratio) to ``--out``. Checks reported:
memory falls as masking rises; tokens match ``round((1 - r) · N)``.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models.vivit import num_kept, vivit

__all__ = ["add_cli_arguments", "run_cli", "bench_cell"]

EPILOG = """\
Examples:
  videossl bench encoder --model vivit-b --frames 16,32,64,128,256 --mask 0,0.5,0.75
  videossl bench encoder --model vivit-s --frames 16,128 --mask 0,0.75 --trainable-blocks 4
  videossl bench encoder --model vivit-tiny --device cpu --size 64 --frames 8,16,32 --mask 0,0.75 --steps 2   # CI smoke
  videossl bench encoder --model vivit-tiny --device cpu --size 64 --frames 16,32,64,128,256 --mask 0,0.5,0.75 --cpu-memory
"""


def _parse_list(s: str, cast) -> list:
    try:
        return [cast(x) for x in str(s).split(",") if x.strip()]
    except ValueError:
        raise VideosslError(f"cannot parse {s!r} as a comma-separated list") from None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Reference(nn.Module):
    """Plain torch: N tokens → nn.TransformerEncoder (pre-norm, GELU) → mean → (B, D)."""

    def __init__(self, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.enc(tokens).mean(1)


def _time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


class _RssPeak:
    """The highest RSS seen while the block runs, sampled every ``interval`` s by a thread (``ru_maxrss``
    would also count peaks from before the block, e.g. imports in the child)."""

    def __init__(self, interval: float = 5e-4) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib())
            time.sleep(self.interval)

    def __enter__(self) -> _RssPeak:
        self.peak = _rss_kib()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kib())


def _cpu_cell_child(kwargs: dict[str, Any], conn) -> None:
    """Child process: one cell measured alone (its peak RSS is its own)."""
    try:
        torch.set_num_threads(int(kwargs.pop("threads")))
        conn.send(bench_cell(**kwargs))
    except BaseException as e:  # report, never hang the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def bench_cell_isolated(model_name: str, frames: int, mask: float, **kw: Any) -> dict[str, Any]:
    """:func:`bench_cell` on CPU in fresh processes (ours, then the reference), each with its peak RSS growth."""
    ctx = mp.get_context("spawn")
    row: dict[str, Any] = {}
    # glibc returns blocks >= 64 KiB to the OS when freed (and keeps that threshold fixed), so the RSS
    # follows the live tensors and its peak is the step's, not the allocator's earlier high-water mark
    old = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    try:
        _run_parts(ctx, row, model_name, frames, mask, kw)
    finally:
        if old is None:
            os.environ.pop("MALLOC_MMAP_THRESHOLD_", None)
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = old
    return row


def _run_parts(ctx, row: dict[str, Any], model_name: str, frames: int, mask: float, kw: dict[str, Any]) -> None:
    for part in ("ours", "ref"):
        if part == "ref" and not kw.get("reference", True):
            break
        args = {**kw, "model_name": model_name, "frames": frames, "mask": mask, "part": part,
                "threads": torch.get_num_threads(), "device": torch.device("cpu")}
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_cpu_cell_child, args=(args, child))
        proc.start()
        child.close()
        try:
            res = parent.recv()
        except EOFError:  # the child died (killed for memory, a crash) before it could report
            proc.join()
            raise VideosslError(f"bench cell {frames} frames, mask {mask}: its process exited with code {proc.exitcode} "
                                "without a result (out of memory?)") from None
        proc.join()
        if "error" in res:
            raise VideosslError(f"bench cell {frames} frames, mask {mask}: {res['error']}")
        row.update(res if part == "ours" else {k: v for k, v in res.items() if k.startswith("ref_")})


def bench_cell(model_name: str, frames: int, mask: float, *, size: int, batch: int, steps: int, warmup: int,
               device: torch.device, dtype: torch.dtype | None, trainable_blocks: int | None, grad_ckpt: bool,
               reference: bool = True, part: str = "both", **overrides: Any) -> dict[str, Any]:
    """One (frames, mask) cell; ``part``: ``ours`` / ``ref`` / ``both`` (which steps to measure)."""

    row: dict[str, Any] = {"model": model_name, "frames": frames, "mask": mask, "batch": batch}
    enc = vivit(model_name, img_size=size, num_frames=frames, mask_ratio=mask, trainable_blocks=trainable_blocks,
                grad_checkpointing=grad_ckpt, **overrides).to(device).train()
    n_tokens = (frames // enc.tubelet[0]) * enc.grid[0] * enc.grid[1]
    row["tokens"] = n_tokens
    row["kept"] = num_kept(n_tokens, mask) if mask > 0 else n_tokens
    params = [p for p in enc.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.randn(batch, 3, frames, size, size, device=device)

    def autocast():
        if dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=dtype)

    seen: dict[str, int] = {}

    def step():
        with autocast():
            y, kept = enc(x, return_kept=True)
        seen["tokens"] = kept.num_tokens
        loss = y.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def measure(fn, prefix: str) -> None:
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            alone = part != "both" and device.type == "cpu"
            if alone:  # alone in its process: after the warm-up (optimiser state allocated), the RSS growth
                for _ in range(max(warmup, 2)):  # to the peak is the step's own memory
                    fn()
                rss0 = _rss_kib()
                with _RssPeak() as peak:
                    t = _time_steps(fn, steps, 0, device)
                row[f"{prefix}mem_mib"] = max(peak.peak - rss0, 0) / 1024
            else:
                t = _time_steps(fn, steps, warmup, device)
            row[f"{prefix}step_s"] = t
            row[f"{prefix}clips_s"] = batch / t
            if device.type == "cuda":
                row[f"{prefix}mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                row[f"{prefix}reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
        except torch.OutOfMemoryError:
            row[f"{prefix}step_s"] = "OOM"
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    if part in ("both", "ours"):
        measure(step, "")
        row["seen_tokens"] = seen.get("tokens", 0)
        if row["seen_tokens"] and row["seen_tokens"] != row["kept"]:
            raise VideosslError(f"token count check failed: transformer saw {row['seen_tokens']}, expected {row['kept']}")
    if reference and part in ("both", "ref"):
        dim, depth, heads = enc.embed_dim, enc.depth, enc.blocks[0].attn.num_heads
        del enc, opt, params  # the reference is measured without our model's memory
        ref = _Reference(dim, depth, heads).to(device).train()
        ropt = torch.optim.AdamW(ref.parameters(), lr=1e-4)
        tok = torch.randn(batch, row["kept"], dim, device=device)

        def rstep():
            with autocast():
                y = ref(tok)
            y.float().pow(2).mean().backward()
            ropt.step()
            ropt.zero_grad(set_to_none=True)

        measure(rstep, "ref_")
    return row


def _fmt(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v) if v is not None else "-"


def _plot(rows: list[dict[str, Any]], path: Path, key: str, ylabel: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for mask in sorted({r["mask"] for r in rows}):
        pts = [(r["frames"], r[key]) for r in rows if r["mask"] == mask and isinstance(r.get(key), float)]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"mask {mask:g}")
        ref = [(r["frames"], r["ref_" + key]) for r in rows if r["mask"] == mask and isinstance(r.get("ref_" + key), float)]
        if ref:
            ax.plot(*zip(*ref, strict=True), linestyle=":", marker=".", label=f"torch reference, mask {mask:g}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("frames")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{rows[0]['model']}: training step per clip length")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vivit-b", help="vivit-tiny | vivit-s | vivit-b | vivit-l")
    p.add_argument("--frames", default="16,32,64,128,256", help="comma-separated clip lengths")
    p.add_argument("--mask", default="0,0.5,0.75", help="comma-separated token-drop ratios")
    p.add_argument("--size", type=int, default=224, help="frame size (px)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10, help="timed steps per cell (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--trainable-blocks", type=int, default=None, help="train only the last k blocks")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--depth", type=int, default=None, help="override the model depth (CPU smoke tests)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="autocast dtype (CUDA; CPU runs fp32)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-reference", action="store_true", help="skip the plain-torch reference step")
    p.add_argument("--cpu-memory", action="store_true",
                   help="CPU: measure each cell in its own process and report its peak RSS growth (mem_mib)")
    p.add_argument("--out", default="bench-encoder", help="folder for csv / md / png")


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VideosslError("--device cuda but CUDA is not available: use --device cpu")
    frames = _parse_list(args.frames, int)
    masks = _parse_list(args.mask, float)
    dtype = None if device.type == "cpu" or args.dtype == "fp32" else {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    extra = {"depth": args.depth} if args.depth else {}
    rows = []
    cpu_mem = device.type == "cpu" and args.cpu_memory
    cell = bench_cell_isolated if cpu_mem else bench_cell
    for f in frames:
        for m in masks:
            rows.append(cell(args.model, f, m, size=args.size, batch=args.batch, steps=args.steps, warmup=args.warmup,
                                   device=device, dtype=dtype, trainable_blocks=args.trainable_blocks,
                                   grad_ckpt=args.grad_checkpointing, reference=not args.no_reference, **extra))
    cuda = device.type == "cuda"
    mem = ["mem_gib", "reserved_gib"] if cuda else (["mem_mib"] if cpu_mem else [])
    cols = ["frames", "mask", "tokens", "kept", "step_s", "clips_s"] + mem
    if not args.no_reference:
        cols += ["ref_step_s", "ref_clips_s"] + (["ref_mem_gib"] if cuda else (["ref_mem_mib"] if cpu_mem else []))
    env = (f"{args.model} {args.size}px batch {args.batch}, {device}"
           + (f" ({torch.cuda.get_device_name(device)})" if cuda else "") + f", torch {torch.__version__}, "
           + (f"autocast {args.dtype}" if dtype else "fp32")
           + (f", last {args.trainable_blocks} blocks trainable" if args.trainable_blocks else "")
           + (", grad checkpointing" if args.grad_checkpointing else "")
           + (", CPU memory = peak RSS growth, one process per measurement" if cpu_mem else ""))
    table = Table(title=f"bench encoder: {env}")
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(*[_fmt(r.get(c), 3 if c.endswith("_s") else 2) for c in cols])
    Console().print(table)
    notes = []
    keys = ["mem_gib"] if cuda else (["mem_mib", "step_s"] if cpu_mem else ["step_s"])
    for key in keys:
        for f in frames:
            vals = [r.get(key) for r in rows if r["frames"] == f]
            if all(isinstance(v, float) for v in vals) and len(vals) > 1:
                falls = all(a > b for a, b in zip(vals, vals[1:], strict=False)) if masks == sorted(masks) else None
                notes.append(f"{f} frames: {key} {'falls' if falls else 'does NOT fall'} as masking rises "
                             f"({vals[0]:.3g} -> {vals[-1]:.3g}, x{vals[0] / vals[-1]:.2f} unmasked / most masked)")
    key = keys[0]
    for n in notes:
        print(n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "encoder_bench.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    md = [f"`videossl bench encoder` — {env}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(_fmt(r.get(c), 3 if c.endswith("_s") else 2) for c in cols) + " |" for r in rows]
    (out / "encoder_bench.md").write_text("\n".join(md + [""] + notes) + "\n")
    png = _plot(rows, out / "encoder_bench.png", key,
                {"mem_gib": "peak memory (GiB)", "mem_mib": "peak RSS growth (MiB)"}.get(key, "step time (s)"))
    print(f"wrote {out / 'encoder_bench.csv'}, {out / 'encoder_bench.md'}" + (f", {png}" if png else ""))
    return 0
