"""Linear evaluation of a frozen encoder: features → linear probe (softmax or SVM) → report.

    videossl eval linear --config recipes/eval/linear/synthetic.yaml --run runs/brave-synthetic --compare-random

The protocol (encoder, views, splits, probe) is fixed in the eval recipe and printed with every
number. ``--run`` takes the encoder's architecture from the training run's ``config.yaml`` and its
weights from ``encoder.pt`` (or ``--ckpt`` a Lightning checkpoint / state dict, loaded with
``weights_only=True``; missing/unexpected keys are reported). ``--compare-random`` also evaluates
the same architecture randomly initialised, the baseline every self-supervised number needs.
Outputs (``--out``, default ``<run>/eval/linear-<data>``): ``results.json``, ``report.md`` and,
per encoder, plots of per-class accuracy, the reliability diagram and the risk–coverage curve.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from videossl.errors import VideosslError

EPILOG = """\
examples:
  videossl eval linear --config recipes/eval/linear/synthetic.yaml --run runs/brave-synthetic --compare-random
  videossl eval linear --config recipes/eval/linear/ucf101.yaml --ckpt runs/brave-ucf101/checkpoints/last.ckpt \\
      --encoder '{"class_path": "videossl.models.TSMResNet", "init_args": {"depth": 50}}'
"""


@dataclass
class ProbeConfig:
    kind: str = "softmax"  # softmax | svm
    optimizer: str = "lbfgs"  # softmax: lbfgs | sgd | adam
    epochs: int = 200
    lr: float = 0.1
    weight_decay: float = 1e-4
    batch_size: int = 256
    svm_c: float = 1e-4
    aggregate: str = "mean_logits"  # mean_logits | mean_features | mean_softmax
    tau: float = 0.8  # abstention threshold on max-softmax confidence
    seed: int = 0


@dataclass
class EvalConfig:
    data_dir: str = "data/synth"
    train_split: str = "train"
    test_split: str = "test"
    views: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "clip", "sampler": "uniform", "frames": 8, "stride": 1, "size": 48, "train": False,
         "num_clips": 1, "crops": 1}])
    batch_size: int = 16
    num_workers: int = 0
    decoder: str = "auto"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    encoder: dict[str, Any] | None = None
    pretrain: str = ""  # free text for the report (pretraining data / epochs)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalConfig:
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise VideosslError(f"unknown key(s) in eval config: {', '.join(bad)} (valid: {', '.join(sorted(known))})")
        probe = d.pop("probe", {}) or {}
        pbad = sorted(set(probe) - set(ProbeConfig.__dataclass_fields__))
        if pbad:
            raise VideosslError(f"unknown key(s) in probe config: {', '.join(pbad)}")
        return cls(probe=ProbeConfig(**probe), **d)


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate ``{class_path, init_args}`` (nested specs too) with jsonargparse, as LightningCLI does."""
    from jsonargparse import ArgumentParser

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
    cfg = yaml.safe_load(cfg_path.read_text())
    init = ((cfg.get("model") or {}).get("init_args") or {})
    for key in ("encoder", "narrow_encoder"):
        if isinstance(init.get(key), dict):
            return init[key]
    raise VideosslError(f"cannot find the encoder in {cfg_path} (looked for model.init_args.encoder / narrow_encoder)")


def load_weights(encoder: nn.Module, path: Path) -> dict[str, list[str]]:
    from videossl.models.encoders import load_encoder_state

    missing, unexpected = load_encoder_state(encoder, str(path), prefix="encoder.")
    if missing:
        raise VideosslError(
            f"{path} does not fit the encoder: {len(missing)} missing key(s), e.g. {missing[:3]} "
            f"(unexpected: {unexpected[:3]}); check the encoder architecture in the eval config / run"
        )
    return {"missing": list(missing), "unexpected": list(unexpected)}


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def evaluate_encoder(encoder: nn.Module, cfg: EvalConfig, out_dir: Path, name: str, cache_dir: Path | None,
                     device: str = "cpu") -> dict[str, Any]:
    from videossl.data.pipeline import ViewSpec
    from videossl.eval import calibration as cal
    from videossl.eval.features import extract_features
    from videossl.eval.plots import plot_per_class_accuracy, plot_reliability_diagram, plot_risk_coverage
    from videossl.eval.probe import evaluate_probe, train_linear_probe, train_linear_svm

    views = [ViewSpec(**v) for v in cfg.views]
    kw = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, decoder=cfg.decoder, device=device,
              cache_dir=cache_dir)
    t0 = time.perf_counter()
    train = extract_features(encoder, cfg.data_dir, cfg.train_split, views, **kw)
    test = extract_features(encoder, cfg.data_dir, cfg.test_split, views, **kw)
    t_feat = time.perf_counter() - t0
    classes = json.loads((Path(cfg.data_dir) / "manifest.json").read_text())["classes"]
    p = cfg.probe
    if p.kind == "svm":
        probe = train_linear_svm(train.feats, train.labels, len(classes), C=p.svm_c)
    elif p.kind == "softmax":
        probe = train_linear_probe(train.feats, train.labels, len(classes), epochs=p.epochs, lr=p.lr,
                                   weight_decay=p.weight_decay, batch_size=p.batch_size, optimizer=p.optimizer,
                                   seed=p.seed)
    else:
        raise VideosslError(f"probe.kind must be 'softmax' or 'svm', got {p.kind!r}")
    res = evaluate_probe(probe, test.feats, test.labels, test.video_ids, views_per_video=test.views_per_video,
                         how=p.aggregate)
    scores = res.scores if p.kind == "softmax" else res.scores  # SVM decision values: softmax is a monotone score
    conf = cal.max_softmax(scores)
    correct = scores.argmax(1) == res.labels
    rel = cal.reliability_data(conf, correct)
    rc = cal.risk_coverage_curve(conf, correct)
    at_tau = cal.selective_at_threshold(conf, correct, p.tau)
    plots = {
        "per_class": str(plot_per_class_accuracy(res.per_class, out_dir / f"{name}-per_class.png", class_names=classes,
                                                 title=f"{name}: per-class accuracy")),
        "reliability": str(plot_reliability_diagram(conf, correct, out_dir / f"{name}-reliability.png",
                                                    title=name)[0]),
        "risk_coverage": str(plot_risk_coverage(conf, correct, out_dir / f"{name}-risk_coverage.png", tau=p.tau,
                                                title=name)),
    }
    return {
        "name": name,
        "top1": res.top1,
        "top5": res.top5,
        "mean_class_accuracy": res.mean_class_accuracy,
        "per_class": {c: (None if a != a else float(a)) for c, a in zip(classes, res.per_class.tolist(), strict=True)},
        "ece": rel.ece,
        "auroc": cal.auroc(conf, correct),
        "aurc": rc.aurc,
        "e_aurc": rc.e_aurc,
        "tau": p.tau,
        "coverage_at_tau": at_tau.coverage,
        "risk_at_tau": at_tau.risk,
        "num_train_videos": train.num_videos,
        "num_test_videos": res.num_videos,
        "views_per_video": test.views_per_video,
        "feature_dim": int(train.feats.shape[1]),
        "seconds_features": round(t_feat, 1),
        "plots": plots,
    }


def protocol_lines(cfg: EvalConfig, spec: dict[str, Any], ckpt: str | None, ckpt_hash: str | None) -> list[str]:
    v = cfg.views[0]
    views = sum(x.get("num_clips", 1) * x.get("crops", 1) for x in cfg.views)
    p = cfg.probe
    probe = f"linear SVM, C={p.svm_c}" if p.kind == "svm" else \
        f"softmax, {p.optimizer}, {p.epochs} epochs, lr {p.lr}, wd {p.weight_decay}"
    return [
        f"backbone: {spec.get('class_path')} {json.dumps(spec.get('init_args', {}), sort_keys=True)}",
        f"frames x stride: {v.get('frames')} x {v.get('stride')}" + (f" @ {v['target_fps']} fps" if v.get("target_fps") else ""),
        f"resolution: {v.get('size')} (resize {v.get('resize') or v.get('size')})",
        f"views per video: {views} ({v.get('num_clips', 1)} clips x {v.get('crops', 1)} crops), aggregation {p.aggregate}",
        f"data: {cfg.data_dir}, train split '{cfg.train_split}', test split '{cfg.test_split}'",
        f"probe: {probe}; standardised features",
        f"pretraining: {cfg.pretrain or 'see run config'}",
        f"checkpoint: {ckpt or 'none'}" + (f" (sha256 {ckpt_hash})" if ckpt_hash else ""),
    ]


def write_report(out_dir: Path, results: list[dict[str, Any]], protocol: list[str]) -> Path:
    lines = ["# Linear evaluation", "", "## Protocol", ""] + [f"- {x}" for x in protocol] + ["", "## Results", ""]
    lines += ["| encoder | top-1 | top-5 | mean class acc | ECE | AURC | coverage@τ | risk@τ |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        top5 = f"{100 * r['top5']:.1f}" if r["top5"] is not None else "-"
        lines.append(f"| {r['name']} | {100 * r['top1']:.1f} | {top5} | {100 * r['mean_class_accuracy']:.1f} | "
                     f"{r['ece']:.3f} | {r['aurc']:.3f} | {r['coverage_at_tau']:.2f} (τ={r['tau']}) | {r['risk_at_tau']:.3f} |")
    lines += ["", "## Plots", ""]
    for r in results:
        for kind, path in r["plots"].items():
            lines.append(f"![{r['name']} {kind}]({Path(path).name})")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="eval recipe (YAML; may `compose:` fragments)")
    p.add_argument("--run", default=None, help="a `videossl fit` run folder: encoder from config.yaml, weights from encoder.pt")
    p.add_argument("--ckpt", default=None, help="weights: Lightning checkpoint or state dict with 'encoder.' keys")
    p.add_argument("--encoder", default=None, help="encoder spec as JSON {class_path, init_args} (overrides the run's)")
    p.add_argument("--compare-random", action="store_true", help="also evaluate the same encoder randomly initialised")
    p.add_argument("--random-only", action="store_true", help="evaluate only the randomly initialised encoder")
    p.add_argument("--out", default=None, help="output folder (default: <run>/eval/linear-<data name>)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init baseline")


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from videossl.recipes import load_recipe

    console = Console()
    cfg = EvalConfig.from_dict(load_recipe(args.config))
    run = Path(args.run) if args.run else None
    if args.encoder:
        spec = json.loads(args.encoder)
    elif cfg.encoder:
        spec = cfg.encoder
    elif run is not None:
        spec = encoder_spec_from_run(run)
    else:
        raise VideosslError("no encoder: give --run, --encoder or an `encoder:` in the eval config")
    ckpt = Path(args.ckpt) if args.ckpt else (run / "encoder.pt" if run is not None else None)
    if ckpt is not None and not ckpt.is_file() and not args.random_only:
        raise VideosslError(f"checkpoint {ckpt} does not exist")
    if ckpt is None and not args.random_only:
        raise VideosslError("no weights: give --run or --ckpt (or --random-only)")
    data_name = Path(cfg.data_dir).name
    out_dir = Path(args.out) if args.out else ((run or Path("runs")) / "eval" / f"linear-{data_name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_cache else out_dir / "cache"

    results = []
    ckpt_hash = None
    if not args.random_only:
        torch.manual_seed(args.seed)
        enc = build_from_spec(spec)
        keys = load_weights(enc, ckpt)
        if keys["unexpected"]:
            console.print(f"[yellow]note[/]: {len(keys['unexpected'])} unexpected key(s) ignored, e.g. {keys['unexpected'][:3]}")
        ckpt_hash = file_hash(ckpt)
        console.print(f"evaluating {ckpt} ...")
        results.append(evaluate_encoder(enc, cfg, out_dir, "pretrained", cache, args.device))
    if args.compare_random or args.random_only:
        torch.manual_seed(args.seed)
        enc = build_from_spec(spec)
        console.print("evaluating the same encoder, randomly initialised ...")
        results.append(evaluate_encoder(enc, cfg, out_dir, "random-init", cache, args.device))

    protocol = protocol_lines(cfg, spec, str(ckpt) if ckpt else None, ckpt_hash)
    table = Table(title=f"linear probe on {cfg.data_dir} [{cfg.test_split}]")
    for col in ("encoder", "top-1 %", "top-5 %", "mean class %", "ECE", "AURC", "cov@τ", "risk@τ"):
        table.add_column(col, justify="right" if col != "encoder" else "left")
    for r in results:
        table.add_row(r["name"], f"{100 * r['top1']:.1f}", "-" if r["top5"] is None else f"{100 * r['top5']:.1f}",
                      f"{100 * r['mean_class_accuracy']:.1f}", f"{r['ece']:.3f}", f"{r['aurc']:.3f}",
                      f"{r['coverage_at_tau']:.2f}", f"{r['risk_at_tau']:.3f}")
    console.print(table)
    for line in protocol:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    chance = 1 / len(results[0]["per_class"])
    console.print(f"  chance: {100 * chance:.1f} %")
    payload = {"protocol": protocol, "config": asdict(cfg), "encoder": spec, "checkpoint": str(ckpt) if ckpt else None,
               "checkpoint_sha256": ckpt_hash, "results": results, "chance": chance}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = write_report(out_dir, results, protocol)
    console.print(f"wrote {out_dir / 'results.json'} and {report}")
    return 0
