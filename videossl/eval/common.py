"""Pieces shared by the ``videossl eval`` commands: which encoder, which weights, which splits.

Encoder architecture: ``--encoder JSON`` > the eval config's ``encoder:`` > the run's
``config.yaml`` (``model.init_args.encoder`` or ``narrow_encoder``: BraVe's narrow backbone).
Weights: ``--ckpt`` (a Lightning checkpoint, an ``encoder.pt``, or any state dict; read with
``weights_only=True``) > ``<run>/encoder.pt``. Keys are selected by ``--prefix`` (default
``encoder.``, the videossl convention; ``""`` for a plain backbone state dict) and renamed by
``--key-map`` (JSON ``{"old_prefix": "new_prefix"}``). Any missing key is an error; unexpected
keys are listed.

Splits: a ``data_dir`` holding ``{split}`` (``data/ucf101-s{split}``) is formatted with the
config's ``split`` (default 1) or, with ``--splits 1,2,3``, evaluated once per split and
summarised by the mean and standard deviation over the splits (UCF101 / HMDB51 protocol).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from videossl.core.checkpoint import load_state
from videossl.errors import VideosslError
from videossl.recipes import load_recipe


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate ``{class_path, init_args}`` (nested specs too) with jsonargparse, as LightningCLI does."""
    from jsonargparse import ArgumentParser

    if not isinstance(spec, dict) or "class_path" not in spec:
        raise VideosslError(f"an encoder spec is a mapping with class_path (and init_args), got {spec!r}")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "module", required=True)
    try:
        cfg = parser.parse_object({"module": spec})
        return parser.instantiate_classes(cfg).module
    except Exception as e:  # jsonargparse reports bad class paths / args with its own types
        raise VideosslError(f"cannot build encoder from {spec}: {str(e).splitlines()[0]}") from None


def encoder_spec_from_run(run: Path) -> dict[str, Any]:
    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise VideosslError(f"{run} has no config.yaml: is it a `videossl fit` run folder?")
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    init = (cfg.get("model") or {}).get("init_args") or {}
    for key in ("encoder", "narrow_encoder"):
        if isinstance(init.get(key), dict):
            return init[key]
    raise VideosslError(f"cannot find the encoder in {cfg_path} (looked for model.init_args.encoder / narrow_encoder)")


def load_weights(encoder: nn.Module, path: Path, prefix: str = "encoder.",
                 key_map: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Load ``path`` into ``encoder``; a missing key is an error (one line), unexpected keys are returned."""
    report = load_state(encoder, path, prefix=prefix, key_map=key_map, allow_missing=False,
                        hint="check the encoder architecture (--encoder / the run's config), --prefix and --key-map")
    return {"missing": report.missing, "unexpected": report.unexpected}


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


# ----------------------------------------------------------------------------------- CLI helpers
def add_encoder_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="a `videossl fit` run folder: encoder from config.yaml, weights from encoder.pt")
    p.add_argument("--ckpt", default=None, help="weights: Lightning checkpoint, encoder.pt or a plain state dict")
    p.add_argument("--encoder", default=None, help="encoder spec as JSON {class_path, init_args} (overrides the run's)")
    p.add_argument("--prefix", default="encoder.", help="keep checkpoint keys with this prefix (stripped); '' for a plain state dict")
    p.add_argument("--key-map", default=None, help='JSON {"old_prefix": "new_prefix"} renames applied after --prefix')
    p.add_argument("--splits", default=None,
                   help="comma-separated official splits (e.g. 1,2,3): data_dir's {split} is filled per split and the mean is reported")
    p.add_argument("--data-dir", default=None,
                   help="shard set to evaluate on (overrides the recipe's data_dir; may hold {split})")


def add_baseline_arguments(p: argparse.ArgumentParser, kind: str) -> None:
    """The options every frozen-feature evaluation shares (linear, kNN)."""
    p.add_argument("--compare-random", action="store_true", help="also evaluate the same encoder randomly initialised")
    p.add_argument("--random-only", action="store_true", help="evaluate only the randomly initialised encoder")
    p.add_argument("--out", default=None, help=f"output folder (default: <run>/eval/{kind}-<data name>)")
    p.add_argument("--device", default=default_device())
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")


def load_eval_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The eval recipe of ``args.config`` (composed), with ``--data-dir`` applied."""

    raw = load_recipe(args.config)
    if getattr(args, "data_dir", None):
        raw = {**raw, "data_dir": args.data_dir}
    return raw


def parse_key_map(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        km = json.loads(text)
    except json.JSONDecodeError as e:
        raise VideosslError(f"--key-map is not valid JSON: {e}") from None
    if not isinstance(km, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in km.items()):
        raise VideosslError('--key-map must be a JSON object of prefix renames, e.g. {"backbone.": ""}')
    return km


def resolve_encoder(args: argparse.Namespace, cfg_encoder: dict[str, Any] | None,
                    need_weights: bool = True) -> tuple[dict[str, Any], Path | None]:
    """(encoder spec, checkpoint path or None) from ``--encoder/--run/--ckpt`` and the eval config."""
    run = Path(args.run) if args.run else None
    if run is not None and not run.is_dir():
        raise VideosslError(f"run folder {run} does not exist")
    if args.encoder:
        try:
            spec = json.loads(args.encoder)
        except json.JSONDecodeError as e:
            raise VideosslError(f"--encoder is not valid JSON: {e}") from None
    elif cfg_encoder:
        spec = cfg_encoder
    elif run is not None:
        spec = encoder_spec_from_run(run)
    else:
        raise VideosslError("no encoder: give --run, --encoder or an `encoder:` in the eval config")
    ckpt = Path(args.ckpt) if args.ckpt else (run / "encoder.pt" if run is not None else None)
    if need_weights:
        if ckpt is None:
            raise VideosslError("no weights: give --run or --ckpt (or --random-only)")
        if not ckpt.is_file():
            raise VideosslError(f"checkpoint {ckpt} does not exist")
    return spec, ckpt


def parse_splits(text: str | None) -> list[str] | None:
    if not text:
        return None
    out = [s.strip() for s in text.split(",") if s.strip()]
    if not out:
        raise VideosslError("--splits needs at least one split, e.g. --splits 1,2,3")
    return out


def format_split(data_dir: str, split: Any) -> str:
    if "{split}" in data_dir:
        if split is None:
            raise VideosslError(f"data_dir {data_dir!r} holds {{split}}: set `split:` in the config or give --splits")
        return data_dir.replace("{split}", str(split))
    return data_dir


def check_split_template(data_dir: str, splits: list[str] | None) -> None:
    if splits and "{split}" not in data_dir:
        raise VideosslError(
            f"--splits needs a data_dir with a {{split}} placeholder (e.g. data/ucf101-s{{split}}), got {data_dir!r}"
        )


def mean_over_splits(per_split: dict[str, dict[str, Any]], keys=("top1", "top5", "mean_class_accuracy")) -> dict[str, Any]:
    """{encoder name: {metric: {mean, std, values}}} over the splits' ``results`` lists."""
    by_name: dict[str, dict[str, list[float]]] = {}
    for payload in per_split.values():
        for r in payload["results"]:
            for k in keys:
                v = r.get(k)
                if v is not None:
                    by_name.setdefault(r["name"], {}).setdefault(k, []).append(float(v))
    out: dict[str, Any] = {}
    for name, metrics in by_name.items():
        out[name] = {}
        for k, vals in metrics.items():
            m = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            out[name][k] = {"mean": m, "std": sd, "values": vals}
    return out


def write_split_summary(out_dir: Path, title: str, per_split: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json + report.md of a multi-split run (links to each split's own report)."""
    mean = mean_over_splits(per_split)
    first = next(iter(per_split.values()))
    payload = {"kind": first.get("kind"), "splits": list(per_split), "mean": mean,
               "protocol": first.get("protocol", []),
               "per_split": {s: str(Path(f"split{s}") / "results.json") for s in per_split},
               "results": [{"name": n, **{k: v["mean"] for k, v in m.items()}, "std": {k: v["std"] for k, v in m.items()}}
                           for n, m in mean.items()],
               "chance": first.get("chance")}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = report_header(f"{title}: mean over splits {', '.join(per_split)}", payload["protocol"], "Results (top-1 %)")
    lines += ["| encoder | " + " | ".join(f"split {s}" for s in per_split) + " | mean ± std |",
              "|---|" + "---|" * (len(per_split) + 1)]
    for name, m in mean.items():
        t = m["top1"]
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in t["values"])
                     + f" | {100 * t['mean']:.1f} ± {100 * t['std']:.1f} |")
    lines += ["", "Per-split reports: " + ", ".join(f"[split {s}](split{s}/report.md)" for s in per_split)]
    write_markdown(out_dir, lines)
    return payload


def report_header(title: str, protocol: list[str], results_heading: str = "Results") -> list[str]:
    """The opening of every evaluation report: title, the protocol as a list, then the results heading."""
    return [f"# {title}", "", "## Protocol", ""] + [f"- {x}" for x in protocol] + ["", f"## {results_heading}", ""]


def write_markdown(out_dir: Path, lines: list[str]) -> Path:
    """Write ``lines`` as ``out_dir/report.md``; returns its path."""
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def report_console(stderr: bool = False):
    """A rich console for result tables: the terminal's width on a TTY, 160 columns when piped or
    logged (rich's default of 80 would truncate the table's names)."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
