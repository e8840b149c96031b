"""Benchmark a recipe's training step: steps/s, clips/s, peak memory and an MFU estimate.

The model is built from the recipe exactly as `videossl fit` builds it; the batch is random
video of the recipe's view shapes (uint8, like the pipeline's output), so the figure is the model
step alone (the data pipeline has its own benchmark, `videossl bench data`) and needs no dataset.
In the same run it times a plain-torch reference: forward + backward of the method's encoder(s)
alone on the same views with plain SGD, and prints the method step's ratio against it. FLOPs are
counted with torch.utils.flop_counter; MFU = achieved FLOP/s / the device's peak (bf16 dense
peak of H100 SXM by default on CUDA; pass --peak-tflops for other devices).

``--switches plain,bf16,tf32,channels_last,fused_adamw,compile,all`` also times the method step as
`videossl fit` runs it (the recipe's optimiser from ``configure_optimizers``) once per speed switch,
each against the plain step (fp32, TF32 off, no switch) measured in the same run, and records what
each switch changed (autocast dtype, TF32 flags, channels-last weights, compiled encoders, fused
AdamW). bf16, tf32 and fused_adamw need CUDA: on the CPU they are reported as skipped, not faked; a
switch that changes nothing (channels_last on a ViViT) is reported as a no-op, not timed. All the copies
are built and warmed first, then timed in ``--rounds`` interleaved rounds (the median counts).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch

from videossl.core.precision import set_tf32, tf32_state
from videossl.data.audio import as_audio_spec, silence
from videossl.data.loader.batch import to_clip
from videossl.errors import VideosslError
from videossl.lightning_cli import VideosslCLI
from videossl.train import compose_configs

EPILOG = """\
examples:
  videossl bench train --config recipes/brave/kinetics400.yaml --device cuda --batch-size 32 --steps 20
  videossl bench train --config recipes/brave/synthetic.yaml --device cpu --steps 3
  videossl bench train --config recipes/brave/kinetics400.yaml --switches plain,bf16,tf32,channels_last,fused_adamw,compile,all
"""

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
#: the speed switches, each timed alone against "plain"; "all" = every one that applies
SWITCHES = ("plain", "bf16", "tf32", "channels_last", "fused_adamw", "compile", "all")
CUDA_ONLY = ("bf16", "tf32", "fused_adamw")



def _ssl_step_fn(model, batch, autocast, opt):
    """One training step of ``model`` on ``batch`` as ``fit`` runs it (``ssl_step``, backward, optimiser)."""

    def step():
        with autocast:
            loss, _, _ = model.ssl_step(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step

def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="training recipe")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-size", type=int, default=None, help="per-device batch (default: the recipe's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    p.add_argument("--switches", default="", help=f"comma-separated speed switches to time against the plain step in "
                   f"the same run: {','.join(SWITCHES)} (default: none)")
    p.add_argument("--rounds", type=int, default=3, help="--switches: interleaved rounds of --steps steps per switch "
                   "(the median round counts)")


def build(config: str, batch_size: int | None):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args, merged = compose_configs(["--config", config], tmp)
        cli = VideosslCLI(args=args, run=False)
    data = merged.get("data") or {}
    views = data.get("train_views") or []
    bs = batch_size or int(data.get("batch_size") or 8)
    return cli.model, views, bs, data.get("audio")


def random_batch(views, batch_size: int, device, audio: dict | None = None, fps: float = 25.0) -> dict:
    """Random uint8 views of the recipe's shapes; with ``audio`` (the recipe's ``data.audio``) also a random
    log-mel spectrogram of the window the reader would cut (the named view's ``frames × stride / fps`` seconds,
    or ``audio.seconds``) and ``has_audio``."""
    if not views:
        raise VideosslError("the recipe has no data.train_views: cannot shape a batch")
    out, names = [], []
    for v in views:
        n = v.get("copies", 1)
        for _ in range(n):
            out.append(torch.randint(0, 256, (batch_size, v["frames"], 3, v["size"], v["size"]), dtype=torch.uint8,
                                     device=device))
            names.append(v.get("name", "clip"))
    batch = {"views": out, "view_names": names, "label": torch.zeros(batch_size, dtype=torch.long, device=device),
             "caption": [""] * batch_size}
    spec = as_audio_spec(audio)
    if spec is not None:
        if spec.seconds is not None:
            seconds = spec.seconds
        else:
            named = [v for v in views if v.get("name") == spec.view]
            if not named:
                raise VideosslError(f"data.audio.view {spec.view!r} names no train view ({', '.join(names)})")
            seconds = named[0]["frames"] * named[0].get("stride", 1) / fps
        shape = silence(spec, seconds).shape
        batch["spectrogram"] = torch.rand((batch_size, *shape), device=device) * 8.0  # log(1 + 1e4 mel) range
        batch["has_audio"] = torch.ones(batch_size, dtype=torch.bool, device=device)
    return batch


def reference_inputs(model, batch: dict) -> tuple[list, list[torch.Tensor]]:
    """The method's encoders and each one's input, computed once from ``batch`` (what the plain-torch
    reference step feeds them): the encoder on the first view; each BraVe broad backbone on its modality's
    input (``BraVe.branches``: the broad clip as frame differences, flow, the spectrogram, ...)."""
    encoders, inputs = [model.encoder], [to_clip(batch["views"][0])]
    if hasattr(model, "branches"):
        clip = to_clip(batch["views"][min(1, len(batch["views"]) - 1)])
        with torch.no_grad():
            for br in model.branches():
                encoders.append(br.encoder)
                inputs.append(model.broad_input(clip, batch, br.modality))
    return encoders, inputs


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(step, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def count_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def parse_switches(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in SWITCHES]
    if bad:
        raise VideosslError(f"--switches: unknown {', '.join(bad)} (choose from {', '.join(SWITCHES)})")
    if names and "plain" not in names:
        names.insert(0, "plain")  # every ratio is against the plain step of the same run
    return sorted(dict.fromkeys(names), key=SWITCHES.index)


def _wanted(name: str) -> set[str]:
    return set(SWITCHES[1:-1]) if name == "all" else ({name} - {"plain"})


def prepare_switch(base, name: str, views, bs: int, device: torch.device, audio: dict | None = None) -> dict:
    """A copy of the method with switch ``name`` on (or all of them), its optimiser as ``fit`` builds it
    (``configure_optimizers``: the recipe's) and its step; or why the switch is skipped."""
    wanted, skipped = _wanted(name), []
    if device.type != "cuda":
        skipped += [f"{k} (needs CUDA)" for k in CUDA_ONLY if k in wanted]
        wanted -= set(CUDA_ONLY)
    if "fused_adamw" in wanted and base.optim.name != "adamw":
        skipped.append(f"fused_adamw (the recipe's optimiser is {base.optim.name})")
        wanted.discard("fused_adamw")
    if name != "plain" and not wanted:
        return {"status": "skipped: " + "; ".join(skipped)}
    m = copy.deepcopy(base)
    m.compile_encoders, m.channels_last = "compile" in wanted, "channels_last" in wanted
    m.optim = dataclasses.replace(m.optim, fused="fused_adamw" in wanted)
    notes = dict(m.apply_speed_switches())
    if wanted == {"channels_last"} and all("no-op" in part for part in notes["channels_last"].split("; ")):
        return {"status": f"skipped: {notes['channels_last']}"}  # nothing changed: timing it would measure noise
    m.to(device).train()
    opt = m.configure_optimizers()["optimizer"]
    batch = random_batch(views, bs, device, audio)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in wanted)

    step = _ssl_step_fn(m, batch, autocast, opt)

    return {"status": "ok", "applied": sorted(wanted, key=SWITCHES.index), "skipped": skipped, "step": step,
            "method": m, "optimizer": opt, "notes": notes}


def _tf32_for(p: dict, device: torch.device) -> None:
    if device.type == "cuda":
        set_tf32("tf32" in p["applied"])


def run_switches(base, names: list[str], views, bs: int, device: torch.device, steps: int, warmup: int,
                 rounds: int = 1, audio: dict | None = None) -> dict:
    """Each switch's step timed against the plain step of the same run. All the switched copies are built
    and warmed first (peak memory: each one's own, measured in its warm-up), then timed in ``rounds``
    interleaved rounds of ``steps`` steps (the median round counts), so drift in the machine's speed
    (clocks, other load) falls on every switch alike."""
    before, cuda = tf32_state(), device.type == "cuda"
    res: dict[str, dict] = {}
    try:
        for n in names:
            base_alloc = torch.cuda.memory_allocated() if cuda else 0
            p = prepare_switch(base, n, views, bs, device, audio)
            if p["status"] == "ok":
                _tf32_for(p, device)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                try:
                    time_steps(p["step"], 1, max(warmup - 1, 0), device)
                except Exception as e:  # e.g. inductor without a C compiler: say so, keep the other switches
                    p = {"status": f"failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}
                else:
                    p["peak_mem_gib"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**30 if cuda else None
                    p["rounds"], p["tf32_flags"] = [], tf32_state() if cuda else None
            res[n] = p
        ok = [n for n in names if res[n]["status"] == "ok"]
        for _ in range(max(rounds, 1)):
            for n in ok:
                _tf32_for(res[n], device)
                res[n]["rounds"].append(time_steps(res[n]["step"], steps, 0, device))
        for n in ok:
            p = res[n]
            m, opt = p.pop("method"), p.pop("optimizer")
            p.pop("step")
            sec = sorted(p["rounds"])[len(p["rounds"]) // 2]
            p.update(sec_per_step=sec, steps_per_s=1 / sec, clips_per_s=bs / sec, did={
                "autocast": "bf16" if "bf16" in p["applied"] else None,
                "tf32": p.pop("tf32_flags"),
                "fused_adamw": bool(opt.defaults.get("fused")) if "fused" in opt.defaults else None,
                "channels_last": p.pop("notes").get("channels_last"),
                "compiled": [k for k in m.speed_modules
                             if getattr(getattr(m, k, None), "_compiled_call_impl", None) is not None],
                "optimizer": type(opt).__name__,
            })
    finally:
        if cuda:
            torch.set_float32_matmul_precision("high" if before["matmul"] else "highest")
            torch.backends.cudnn.allow_tf32 = before["cudnn"]
        torch._dynamo.reset()
    plain = res.get("plain", {}).get("sec_per_step")
    for r in res.values():
        if r["status"] == "ok" and plain:
            r["speedup_vs_plain"] = plain / r["sec_per_step"]
    return res


def _did_text(r: dict) -> str:
    d, bits = r.get("did") or {}, []
    if d.get("autocast"):
        bits.append("autocast bf16")
    if d.get("tf32") and any(d["tf32"].values()):
        bits.append("TF32 on")
    if d.get("fused_adamw"):
        bits.append("fused AdamW")
    if d.get("channels_last"):
        bits.append(d["channels_last"])
    if d.get("compiled"):
        bits.append("compiled " + ", ".join(d["compiled"]))
    bits += [f"skipped {s}" for s in r.get("skipped", [])]
    return "; ".join(bits) or ("-" if r["status"] == "ok" else r["status"])


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VideosslError("--device cuda but no CUDA device is available")
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    switches = parse_switches(args.switches)
    model, views, bs, audio = build(args.config, args.batch_size)
    model.compile_encoders, model.channels_last = False, False  # the rows below are plain; switches: --switches
    base = copy.deepcopy(model) if switches else None
    model.to(device).train()
    batch = random_batch(views, bs, device, audio)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    method_step = _ssl_step_fn(model, batch, autocast, opt)

    encoders, inputs = reference_inputs(model, batch)
    ref_params = [p for e in encoders for p in e.parameters()]
    ref_opt = torch.optim.SGD(ref_params, lr=1e-4, momentum=0.9)

    def reference_step():
        with autocast:
            loss = sum(enc(x).float().pow(2).mean() for enc, x in zip(encoders, inputs, strict=True))
        loss.backward()
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)

    results = {}
    for name, step in (("method step", method_step), ("plain-torch encoders", reference_step)):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sec = time_steps(step, args.steps, args.warmup, device)
        flops = count_flops(step)
        peak_mem = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        peak = args.peak_tflops
        if peak is None and device.type == "cuda":
            gpu = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu), None)
        results[name] = {
            "sec_per_step": sec,
            "steps_per_s": 1 / sec,
            "clips_per_s": bs / sec,
            "tflop_per_step": flops / 1e12,
            "achieved_tflops": flops / sec / 1e12,
            "mfu": (flops / sec / 1e12) / peak if peak else None,
            "peak_mem_gib": peak_mem,
        }
    ref = results["plain-torch encoders"]
    for r in results.values():
        r["ratio_vs_reference"] = ref["sec_per_step"] / r["sec_per_step"]
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    table = Table(title=f"{args.config} on {dev}, batch {bs}/device, {precision}")
    for col in ("step", "steps/s", "clips/s", "TFLOP/step", "TFLOP/s", "MFU", "peak GiB", "x reference"):
        table.add_column(col, justify="right" if col != "step" else "left")
    for name, r in results.items():
        table.add_row(name, f"{r['steps_per_s']:.2f}", f"{r['clips_per_s']:.1f}", f"{r['tflop_per_step']:.3f}",
                      f"{r['achieved_tflops']:.2f}", "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
                      "-" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}", f"{r['ratio_vs_reference']:.2f}")
    Console().print(table)
    report = {"config": args.config, "device": dev, "batch_size": bs, "precision": precision, "results": results}
    if switches:
        model = opt = ref_opt = batch = None  # free the rows' model before the switch runs (one at a time)
        sw = run_switches(base, switches, views, bs, device, args.steps, args.warmup, args.rounds, audio)
        t2 = Table(title="speed switches: the method step as fit runs it (recipe optimiser), vs plain (fp32) in this run")
        for col in ("switch", "steps/s", "clips/s", "peak GiB", "x plain", "what it did"):
            t2.add_column(col, justify="left" if col in ("switch", "what it did") else "right")
        for name, r in sw.items():
            ok = r["status"] == "ok"
            t2.add_row(name, f"{r['steps_per_s']:.2f}" if ok else "-", f"{r['clips_per_s']:.1f}" if ok else "-",
                       "-" if not ok or r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.1f}",
                       f"{r['speedup_vs_plain']:.2f}" if ok and "speedup_vs_plain" in r else "-", _did_text(r))
        Console().print(t2)
        report["switches"] = sw
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
