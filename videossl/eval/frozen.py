"""Frozen-feature evaluation: the eval recipe (views, splits, probe, kNN) and the features of both splits.

Shared by the linear probe (:mod:`videossl.eval.linear`) and weighted kNN (:mod:`videossl.eval.knn`).
The train split may be read ``train_passes`` times with its own ``train_views`` (BraVe's protocol:
10 random augmented clips per video; Recasens et al., 2021, "Broaden Your Views for
Self-Supervised Video Learning"); the test split uses the eval ``views`` (clips × crops).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from videossl.data.loader import ViewSpec
from videossl.data.shards.format import load_manifest
from videossl.errors import VideosslError
from videossl.eval.features import extract_features
from videossl.eval.options import check_split_template, format_split, output_base_name, parse_splits
from videossl.eval.runs import WeightsInfo, check_views, encoders_to_evaluate, no_weights_lines, resolve_encoder

__all__ = ["EvalConfig", "KNNConfig", "ProbeConfig", "check_classes", "extract_splits", "view_lines"]


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


def check_classes(train, test, classes: list[str], data_dir: str) -> None:
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


@dataclass
class FrozenEval:
    """What every frozen-feature command (linear, kNN) resolves before evaluating: the config, the
    splits to run, the encoder spec and weights, the encoders to evaluate and the output folder."""

    raw: dict[str, Any]
    cfg: EvalConfig
    splits: list[str] | None
    spec: dict[str, Any]
    ckpt: Path | None
    encoders: list
    weights: WeightsInfo | None
    out_dir: Path

    @property
    def ckpt_hash(self) -> str | None:
        return self.weights.sha256 if self.weights else None

    def weights_lines(self) -> list[str]:
        """The protocol block's lines on the pretrained weights (source, conversion, checkpoint + hash, keys)."""
        return self.weights.lines() if self.weights else no_weights_lines()

    def runs(self) -> list[tuple[str | None, EvalConfig, Path]]:
        """(split or None, the config with that split's data_dir, its output folder), one per evaluation."""
        if not self.splits:
            return [(None, EvalConfig.from_dict({**self.raw, "data_dir": format_split(self.cfg.data_dir, self.cfg.split)}),
                     self.out_dir)]
        return [(s, EvalConfig.from_dict({**self.raw, "data_dir": format_split(self.cfg.data_dir, s), "split": s}),
                 self.out_dir / f"split{s}") for s in self.splits]


def prepare_frozen_eval(args, raw: dict[str, Any], kind: str, console) -> FrozenEval:
    """Resolve ``--splits``, ``--run/--ckpt/--encoder``, the random-init baseline and ``--out`` for ``kind``."""
    cfg = EvalConfig.from_dict(raw)
    splits = parse_splits(args.splits)
    check_split_template(cfg.data_dir, splits)
    spec, ckpt = resolve_encoder(args, cfg.encoder, need_weights=not args.random_only)
    encoders, weights = encoders_to_evaluate(args, spec, ckpt, console)
    check_views(encoders[0][1], cfg.views + (cfg.train_views or []), console)
    run = Path(args.run) if args.run else None
    base_name = output_base_name(cfg.data_dir, cfg.split, splits)
    out_dir = Path(args.out) if args.out else ((run or Path("runs")) / "eval" / f"{kind}-{base_name}")
    return FrozenEval(raw, cfg, splits, spec, weights.path if weights else ckpt, encoders, weights, out_dir)
