"""Linear evaluation of a frozen encoder: features → linear probe (softmax or SVM) → report.

    videossl eval linear --config recipes/eval/linear/synthetic.yaml --run runs/brave-synthetic --compare-random

The protocol (encoder, views, splits, probe) is fixed in the eval recipe and printed with every
number. ``--run`` takes the encoder's architecture from the training run's ``config.yaml`` and its
weights from ``encoder.pt`` (or ``--ckpt`` a Lightning checkpoint / state dict, loaded with
``weights_only=True``; ``--prefix``/``--key-map`` for foreign state dicts; a missing key is an
error, unexpected keys are listed). ``--compare-random`` also evaluates the same architecture
randomly initialised, the baseline every self-supervised number needs. Outputs (``--out``, default
``<run>/eval/linear-<data>``): ``results.json``, ``report.md`` and, per encoder, plots of
per-class accuracy, the reliability diagram and the risk–coverage curve.

Probes: ``probe.kind: softmax`` (L-BFGS / SGD / AdamW on standardised features) or ``svm``
(BraVe's StandardScaler + LinearSVC(C), brave.md §9). BraVe's protocol
(``recipes/eval/linear/*_brave_svm.yaml``) also sets ``train_views`` (random augmented clips) and
``train_passes: 10``: the train split is read 10 times, one augmented clip per video per pass, and
the SVM is fitted on all 10 embeddings per video; the test split uses the eval ``views``
(10 clips × 3 crops) and the SVM decision values are averaged per video.

Selective prediction (other_seeds.md §6–7), per encoder, on the per-video test scores:
confidence κ = max-softmax (MSP; softmax of the SVM decision values for ``svm``), margin, and a
*learned* confidence head g(features) ∈ [0, 1]: ``probe.confidence_holdout`` of the *train*
videos are held out (by video), an auxiliary probe of the same kind is trained on the rest, and a
logistic regression of its correctness on the held-out videos' mean features is g; g is then
applied to the test videos' mean features (the test split is never used to fit anything). For each
κ: ECE (15 bins; MSP and g only, margin is not a probability), AUROC (correct vs wrong), AURC,
E-AURC, and the instructed abstention "answer iff κ ≥ τ" at ``probe.tau`` (coverage, risk) plus a
τ sweep (``probe.taus``) with the payoff +1 correct, −τ/(1−τ) wrong, 0 abstained, for which
answering is optimal exactly when P(correct) > τ.

UCF101/HMDB51: report split 1 and the mean of the 3 official splits. Recipes name
``data_dir: data/ucf101-s{split}``; ``--splits 1,2,3`` evaluates each split into
``OUT/split<N>/`` and writes the mean ± std over the splits to ``OUT/results.json``/``report.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videossl.data.loader import ViewSpec
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError
from videossl.eval import calibration as cal
from videossl.eval.calibration import held_out_split, selective_at_threshold, train_confidence_probe

# shared with the other eval commands; re-exported here for existing imports
from videossl.eval.common import (
    add_baseline_arguments,
    add_encoder_arguments,
    build_from_spec,
    check_split_template,
    encoder_spec_from_run,
    file_hash,
    format_split,
    load_eval_recipe,
    load_weights,
    parse_key_map,
    parse_splits,
    report_console,
    report_header,
    resolve_encoder,
    write_markdown,
    write_split_summary,
)
from videossl.eval.features import extract_features
from videossl.eval.plots import plot_per_class_accuracy, plot_reliability_diagram, plot_risk_coverage
from videossl.eval.probe import aggregate_views, evaluate_probe, train_linear_probe, train_linear_svm

__all__ = ["EvalConfig", "ProbeConfig", "KNNConfig", "build_from_spec", "encoder_spec_from_run", "load_weights",
           "file_hash", "evaluate_encoder", "learned_confidence", "confidence_metrics", "abstention_sweep",
           "extract_splits"]

EPILOG = """\
examples:
  videossl eval linear --config recipes/eval/linear/synthetic.yaml --run runs/brave-synthetic --compare-random
  videossl eval linear --config recipes/eval/linear/synthetic_brave_svm.yaml --run runs/brave-synthetic
  videossl eval linear --config recipes/eval/linear/ucf101.yaml --run runs/brave-ucf101 --splits 1,2,3
  videossl eval linear --config recipes/eval/linear/ucf101.yaml --ckpt runs/brave-ucf101/checkpoints/last.ckpt \\
      --encoder '{"class_path": "videossl.models.TSMResNet", "init_args": {"depth": 50}}'
  videossl eval linear --config recipes/eval/linear/hmdb51.yaml --ckpt r3d.pth --prefix '' \\
      --key-map '{"backbone.": ""}' --encoder '{"class_path": "videossl.models.VideoResNetEncoder"}'
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
    tau: float = 0.8  # instructed abstention threshold: answer iff confidence >= tau
    taus: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])  # abstention sweep
    confidence_holdout: float = 0.2  # fraction of train videos held out to fit the learned confidence head
    seed: int = 0


@dataclass
class KNNConfig:
    k: list[int] = field(default_factory=lambda: [200, 20])  # first = headline
    temperature: float = 0.07
    features: str = "mean_views"  # mean_views (mean feature over the test views) | views (vote per view, mean scores)
    retrieval_ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])


@dataclass
class EvalConfig:
    data_dir: str = "data/synth"
    split: int | str | None = None  # fills {split} in data_dir (official split 1-3); --splits overrides
    train_split: str = "train"
    test_split: str = "test"
    views: list[dict[str, Any]] = field(default_factory=lambda: [
        {"name": "clip", "sampler": "uniform", "frames": 8, "stride": 1, "size": 48, "train": False,
         "num_clips": 1, "crops": 1}])
    train_views: list[dict[str, Any]] | None = None  # default: ``views``; BraVe: one random augmented clip
    train_passes: int = 1  # BraVe: 10 (augmented embeddings per train video)
    batch_size: int = 16
    num_workers: int = 0
    decoder: str = "auto"
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    knn: KNNConfig = field(default_factory=KNNConfig)
    encoder: dict[str, Any] | None = None
    pretrain: str = ""  # free text for the report (pretraining data / epochs)
    name: str = ""  # dataset name for reports (default: the data folder's name)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalConfig:
        d = dict(d)
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known)
        if bad:
            raise VideosslError(f"unknown key(s) in eval config: {', '.join(bad)} (valid: {', '.join(sorted(known))})")
        sub = {}
        for key, klass in (("probe", ProbeConfig), ("knn", KNNConfig)):
            part = d.pop(key, {}) or {}
            pbad = sorted(set(part) - set(klass.__dataclass_fields__))
            if pbad:
                raise VideosslError(f"unknown key(s) in {key} config: {', '.join(pbad)} "
                                    f"(valid: {', '.join(sorted(klass.__dataclass_fields__))})")
            sub[key] = klass(**part)
        cfg = cls(**sub, **d)
        if cfg.train_passes < 1:
            raise VideosslError(f"train_passes must be >= 1, got {cfg.train_passes}")
        if cfg.probe.kind not in ("softmax", "svm"):
            raise VideosslError(f"probe.kind must be 'softmax' or 'svm', got {cfg.probe.kind!r}")
        return cfg

    @property
    def dataset_name(self) -> str:
        return self.name or Path(self.data_dir).name


def extract_splits(encoder: nn.Module, cfg: EvalConfig, cache_dir: Path | None, device: str = "cpu",
                   progress: bool = True):
    """(train FeatureSet, test FeatureSet, class names) of ``cfg`` (train: ``train_views`` × ``train_passes``)."""

    views = [ViewSpec(**v) for v in cfg.views]
    train_views = [ViewSpec(**v) for v in cfg.train_views] if cfg.train_views else views
    kw = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, decoder=cfg.decoder, device=device,
              cache_dir=cache_dir, progress=progress)
    train = extract_features(encoder, cfg.data_dir, cfg.train_split, train_views, passes=cfg.train_passes, **kw)
    test = extract_features(encoder, cfg.data_dir, cfg.test_split, views, **kw)
    classes = list(load_manifest(cfg.data_dir).get("classes") or [])
    if not classes:
        raise VideosslError(f"{cfg.data_dir}/manifest.json has no class list: a labelled shard set is needed")
    return train, test, classes


def _check_classes(train, test, classes: list[str], data_dir: str) -> None:
    """Labels outside the class list, or test classes with no training video: one clear error."""
    for name, fs in (("train", train), ("test", test)):
        lo, hi = int(fs.labels.min()), int(fs.labels.max())
        if lo < 0 or hi >= len(classes):
            raise VideosslError(f"{name} labels span [{lo}, {hi}] but {data_dir} has {len(classes)} classes "
                                "(unlabelled videos have label -1): use a labelled split")
    seen = set(train.labels.unique().tolist())
    unseen = sorted(set(test.labels.unique().tolist()) - seen)
    if unseen:
        names = [classes[i] for i in unseen]
        raise VideosslError(
            f"{len(unseen)} test class(es) never occur in the train split, so the probe has not seen them: "
            f"{names[:5]}{' ...' if len(names) > 5 else ''}; check the split files / class list of {data_dir}"
        )


def train_probe(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, p: ProbeConfig):

    if p.kind == "svm":
        return train_linear_svm(feats, labels, num_classes, C=p.svm_c)
    return train_linear_probe(feats, labels, num_classes, epochs=p.epochs, lr=p.lr, weight_decay=p.weight_decay,
                              batch_size=p.batch_size, optimizer=p.optimizer, seed=p.seed)


def learned_confidence(train, test_mean_feats: torch.Tensor, num_classes: int, p: ProbeConfig
                       ) -> tuple[torch.Tensor | None, str]:
    """g(test video mean features) ∈ [0, 1] (see the module docstring), or (None, why not)."""

    try:
        fit, held = held_out_split(train.video_ids, p.confidence_holdout, seed=p.seed)
        ids = train.video_ids
        aux = train_probe(train.feats[fit], train.labels[fit], num_classes, p)
        held_ids = [ids[i] for i in held.tolist()]
        res = evaluate_probe(aux, train.feats[held], train.labels[held], held_ids, how=p.aggregate,
                             allow_unseen_classes=True)
        correct = res.scores.argmax(1) == res.labels
        mean_f = aggregate_views(train.feats[held], held_ids, how="mean_features").values
        g = train_confidence_probe(mean_f, correct)
    except VideosslError as e:
        return None, str(e)
    n_held = len(set(held_ids))
    return g(test_mean_feats), (f"fitted on {n_held} held-out train videos "
                                f"({int(correct.sum())} correct / {int((~correct).sum())} wrong for the auxiliary probe)")


def confidence_metrics(conf: torch.Tensor, correct: torch.Tensor, tau: float, probability: bool) -> dict[str, Any]:

    rc = cal.risk_coverage_curve(conf, correct)
    at = cal.selective_at_threshold(conf, correct, tau)
    return {
        "ece": cal.expected_calibration_error(conf, correct) if probability else None,
        "auroc": cal.auroc(conf, correct),
        "aurc": rc.aurc,
        "e_aurc": rc.e_aurc,
        "coverage_at_tau": at.coverage,
        "risk_at_tau": at.risk,
    }


def abstention_sweep(conf: torch.Tensor, correct: torch.Tensor, taus) -> list[dict[str, float]]:
    """Answer iff κ ≥ τ; payoff +1 correct, −τ/(1−τ) wrong, 0 abstained (mean over all videos)."""

    out = []
    for tau in taus:
        if not 0 <= tau < 1:
            raise VideosslError(f"abstention thresholds must lie in [0, 1), got {tau}")
        pt = selective_at_threshold(conf, correct, tau)
        answered = conf >= tau
        n_right = int((answered & correct).sum())
        n_wrong = int((answered & ~correct).sum())
        payoff = (n_right - tau / (1 - tau) * n_wrong) / conf.shape[0]
        out.append({"tau": float(tau), "coverage": pt.coverage, "risk": pt.risk, "payoff": payoff})
    return out


def evaluate_encoder(encoder: nn.Module, cfg: EvalConfig, out_dir: Path, name: str, cache_dir: Path | None,
                     device: str = "cpu", progress: bool = True) -> dict[str, Any]:

    t0 = time.perf_counter()
    train, test, classes = extract_splits(encoder, cfg, cache_dir, device, progress)
    t_feat = time.perf_counter() - t0
    _check_classes(train, test, classes, cfg.data_dir)
    p = cfg.probe
    probe = train_probe(train.feats, train.labels, len(classes), p)
    res = evaluate_probe(probe, test.feats, test.labels, test.video_ids, views_per_video=test.views_per_video,
                         how=p.aggregate)
    scores = res.scores  # per video; SVM decision values: their softmax is a monotone confidence score
    correct = scores.argmax(1) == res.labels
    kappas: dict[str, torch.Tensor] = {"msp": cal.max_softmax(scores), "margin": cal.margin(scores)}
    test_mean = aggregate_views(test.feats, test.video_ids, how="mean_features")
    assert list(test_mean.video_ids) == list(res.video_ids)
    g, g_note = learned_confidence(train, test_mean.values, len(classes), p)
    if g is not None:
        kappas["learned"] = g
    conf_metrics = {k: confidence_metrics(v, correct, p.tau, probability=k != "margin") for k, v in kappas.items()}
    sweep = {k: abstention_sweep(kappas[k], correct, p.taus) for k in kappas if k != "margin"}
    conf = kappas["msp"]
    plots = {
        "per_class": str(plot_per_class_accuracy(res.per_class, out_dir / f"{name}-per_class.png", class_names=classes,
                                                 title=f"{name}: per-class accuracy")),
        "reliability": str(plot_reliability_diagram(conf, correct, out_dir / f"{name}-reliability.png",
                                                    title=name)[0]),
        "risk_coverage": str(plot_risk_coverage(conf, correct, out_dir / f"{name}-risk_coverage.png", tau=p.tau,
                                                title=name)),
    }
    msp = conf_metrics["msp"]
    return {
        "name": name,
        "top1": res.top1,
        "top5": res.top5,
        "mean_class_accuracy": res.mean_class_accuracy,
        "per_class": {c: (None if a != a else float(a)) for c, a in zip(classes, res.per_class.tolist(), strict=True)},
        "ece": msp["ece"],
        "auroc": msp["auroc"],
        "aurc": msp["aurc"],
        "e_aurc": msp["e_aurc"],
        "tau": p.tau,
        "coverage_at_tau": msp["coverage_at_tau"],
        "risk_at_tau": msp["risk_at_tau"],
        "confidence": conf_metrics,
        "learned_confidence": g_note,
        "abstention": sweep,
        "num_train_videos": len(dict.fromkeys(train.video_ids)),
        "num_test_videos": res.num_videos,
        "views_per_video": test.views_per_video,
        "train_rows_per_video": train.views_per_video,
        "feature_dim": int(train.feats.shape[1]),
        "seconds_features": round(t_feat, 1),
        "plots": plots,
    }


def view_lines(cfg: EvalConfig) -> list[str]:
    v = cfg.views[0]
    views = sum(x.get("num_clips", 1) * x.get("crops", 1) for x in cfg.views)
    out = [
        f"frames x stride: {v.get('frames')} x {v.get('stride')}" + (f" @ {v['target_fps']} fps" if v.get("target_fps") else ""),
        f"resolution: {v.get('size')} (resize {v.get('resize') or v.get('size')})",
        f"test views per video: {views} ({v.get('num_clips', 1)} clips x {v.get('crops', 1)} crops)",
    ]
    if cfg.train_views:
        tv = cfg.train_views[0]
        out.append(f"train views: {cfg.train_passes} pass(es) x {tv.get('sampler')} clip(s) of {tv.get('frames')} x "
                   f"{tv.get('stride')} at {tv.get('size')}{' (augmented)' if tv.get('train', True) else ''}")
    elif cfg.train_passes > 1:
        out.append(f"train views: {cfg.train_passes} passes of the test views")
    else:
        out.append("train views: the test views")
    return out


def protocol_lines(cfg: EvalConfig, spec: dict[str, Any], ckpt: str | None, ckpt_hash: str | None) -> list[str]:
    p = cfg.probe
    probe = f"linear SVM (one-vs-rest squared hinge), C={p.svm_c}" if p.kind == "svm" else \
        f"softmax, {p.optimizer}, {p.epochs} epochs, lr {p.lr}, wd {p.weight_decay}"
    return [
        f"backbone: {spec.get('class_path')} {json.dumps(spec.get('init_args', {}), sort_keys=True)}",
        "feature: the encoder's pooled output (before any SSL projector), frozen, eval mode",
        *view_lines(cfg),
        f"aggregation over views: {p.aggregate}",
        f"data: {cfg.data_dir}, train split '{cfg.train_split}', test split '{cfg.test_split}'",
        f"probe: {probe}; standardised features",
        f"confidence: MSP, margin, learned head ({p.confidence_holdout:.0%} of train videos held out); "
        f"abstain iff confidence < tau = {p.tau}",
        f"pretraining: {cfg.pretrain or 'see run config'}",
        f"checkpoint: {ckpt or 'none'}" + (f" (sha256 {ckpt_hash})" if ckpt_hash else ""),
    ]


def _f(x: Any, fmt: str = ".3f", scale: float = 1.0) -> str:
    return "-" if x is None or x != x else f"{scale * x:{fmt}}"


def write_report(out_dir: Path, results: list[dict[str, Any]], protocol: list[str], title: str = "Linear evaluation"
                 ) -> Path:
    lines = report_header(title, protocol)
    lines += ["| encoder | top-1 | top-5 | mean class acc | ECE | AURC | coverage@τ | risk@τ |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {_f(r['top1'], '.1f', 100)} | {_f(r['top5'], '.1f', 100)} | "
                     f"{_f(r['mean_class_accuracy'], '.1f', 100)} | {_f(r['ece'])} | {_f(r['aurc'])} | "
                     f"{_f(r['coverage_at_tau'], '.2f')} (τ={r['tau']}) | {_f(r['risk_at_tau'])} |")
    if any("confidence" in r for r in results):
        lines += ["", "## Selective prediction", "",
                  "Confidence κ per test video; abstain when κ < τ. ECE: 15 bins (not defined for the margin).", "",
                  "| encoder | κ | ECE | AUROC | AURC | E-AURC | coverage@τ | risk@τ |", "|---|---|---|---|---|---|---|---|"]
        for r in results:
            for k, m in r.get("confidence", {}).items():
                lines.append(f"| {r['name']} | {k} | {_f(m['ece'])} | {_f(m['auroc'])} | {_f(m['aurc'])} | "
                             f"{_f(m['e_aurc'])} | {_f(m['coverage_at_tau'], '.2f')} | {_f(m['risk_at_tau'])} |")
        for r in results:
            if "learned" not in r.get("confidence", {}):
                lines.append(f"\n{r['name']}: no learned confidence head ({r.get('learned_confidence')})")
        lines += ["", "Instructed abstention (payoff +1 correct, −τ/(1−τ) wrong, 0 abstained; answering pays iff "
                  "P(correct) > τ):", "", "| encoder | κ | τ | coverage | risk | payoff |", "|---|---|---|---|---|---|"]
        for r in results:
            for k, rows in r.get("abstention", {}).items():
                for row in rows:
                    lines.append(f"| {r['name']} | {k} | {row['tau']:g} | {row['coverage']:.2f} | "
                                 f"{_f(row['risk'])} | {row['payoff']:+.3f} |")
    lines += ["", "## Plots", ""]
    for r in results:
        for kind, path in r.get("plots", {}).items():
            lines.append(f"![{r['name']} {kind}]({Path(path).name})")
    return write_markdown(out_dir, lines)


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="eval recipe (YAML; may `compose:` fragments)")
    add_encoder_arguments(p)
    add_baseline_arguments(p, "linear")


def encoders_to_evaluate(args: argparse.Namespace, spec: dict[str, Any], ckpt: Path | None, console
                         ) -> tuple[list[tuple[str, nn.Module]], str | None]:
    """[(name, encoder)] for pretrained and/or random init, and the checkpoint hash."""
    out, ckpt_hash = [], None
    if not args.random_only:
        torch.manual_seed(args.seed)
        enc = build_from_spec(spec)
        keys = load_weights(enc, ckpt, prefix=args.prefix, key_map=parse_key_map(args.key_map))
        if keys["unexpected"]:
            console.print(f"[yellow]note[/]: {len(keys['unexpected'])} unexpected key(s) ignored, e.g. {keys['unexpected'][:3]}")
        ckpt_hash = file_hash(ckpt)
        out.append(("pretrained", enc))
    if args.compare_random or args.random_only:
        torch.manual_seed(args.seed)
        out.append(("random-init", build_from_spec(spec)))
    return out, ckpt_hash


def run_cli(args: argparse.Namespace) -> int:

    console = report_console()
    raw = load_eval_recipe(args)
    cfg = EvalConfig.from_dict(raw)
    splits = parse_splits(args.splits)
    check_split_template(cfg.data_dir, splits)
    spec, ckpt = resolve_encoder(args, cfg.encoder, need_weights=not args.random_only)
    encoders, ckpt_hash = encoders_to_evaluate(args, spec, ckpt, console)
    run = Path(args.run) if args.run else None
    base_name = Path(cfg.data_dir.replace("{split}", "s" if splits else str(cfg.split))).name
    out_dir = Path(args.out) if args.out else ((run or Path("runs")) / "eval" / f"linear-{base_name}")
    if not splits:
        one = EvalConfig.from_dict({**raw, "data_dir": format_split(cfg.data_dir, cfg.split)})
        run_one(args, one, spec, ckpt, ckpt_hash, encoders, out_dir, console)
        return 0
    per_split = {}
    for s in splits:
        one = EvalConfig.from_dict({**raw, "data_dir": format_split(cfg.data_dir, s), "split": s})
        console.print(f"[bold]split {s}[/]: {one.data_dir}")
        per_split[s] = run_one(args, one, spec, ckpt, ckpt_hash, encoders, out_dir / f"split{s}", console)
    summary = write_split_summary(out_dir, "Linear evaluation", per_split)
    for name, m in summary["mean"].items():
        console.print(f"  {name}: top-1 {100 * m['top1']['mean']:.1f} ± {100 * m['top1']['std']:.1f} % over splits {', '.join(splits)}")
    console.print(f"wrote {out_dir / 'results.json'} and {out_dir / 'report.md'}")
    return 0


def run_one(args, cfg: EvalConfig, spec, ckpt, ckpt_hash, encoders, out_dir: Path, console) -> dict[str, Any]:
    from rich.table import Table

    out_dir.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_cache else out_dir / "cache"
    results = []
    for name, enc in encoders:
        console.print(f"evaluating {name} ({ckpt if name == 'pretrained' else 'same architecture, random init'}) ...")
        results.append(evaluate_encoder(enc, cfg, out_dir, name, cache, args.device))
    protocol = protocol_lines(cfg, spec, str(ckpt) if ckpt and not args.random_only else None, ckpt_hash)
    table = Table(title=f"linear probe on {cfg.data_dir} [{cfg.test_split}]")
    for col in ("encoder", "top-1 %", "top-5 %", "mean class %", "ECE", "AURC", "AURC learned", "cov@τ", "risk@τ"):
        table.add_column(col, justify="right" if col != "encoder" else "left")
    for r in results:
        learned = r["confidence"].get("learned", {}).get("aurc")
        table.add_row(r["name"], _f(r["top1"], ".1f", 100), _f(r["top5"], ".1f", 100),
                      _f(r["mean_class_accuracy"], ".1f", 100), _f(r["ece"]), _f(r["aurc"]), _f(learned),
                      _f(r["coverage_at_tau"], ".2f"), _f(r["risk_at_tau"]))
    console.print(table)
    for line in protocol:
        console.print(f"  {line}", soft_wrap=True, highlight=False)
    chance = 1 / len(results[0]["per_class"])
    console.print(f"  chance: {100 * chance:.1f} %")
    payload = {"kind": "linear", "dataset": cfg.dataset_name, "split": cfg.split, "protocol": protocol,
               "config": asdict(cfg), "encoder": spec,
               "checkpoint": str(ckpt) if ckpt and not args.random_only else None,
               "checkpoint_sha256": ckpt_hash, "results": results, "chance": chance}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    report = write_report(out_dir, results, protocol)
    console.print(f"wrote {out_dir / 'results.json'} and {report}")
    return payload
