"""The ``videossl`` command.

One entry point with subcommands; each subcommand lives next to the code it drives and exposes
``add_cli_arguments(parser)`` and ``run_cli(args) -> int``. This file only wires them together and
turns user errors (:class:`~videossl.errors.VideosslError`) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from videossl import __version__
from videossl.errors import VideosslError

# (group, name, module, one-line help). A module is imported only when its command runs, so
# `videossl --help` stays fast and a broken optional piece cannot break the others.
COMMANDS: list[tuple[str, str, str, str]] = [
    ("data", "synth", "videossl.data.shards.synth_cli", "generate the embedded synthetic motion dataset (with ground truth)"),
    ("data", "make-shards", "videossl.data.shards.make", "turn a UCF101/HMDB51/Kinetics/folder/CSV tree into shards"),
    ("data", "make-long", "videossl.data.make_long", "stitch K clips of different classes into pseudo-long videos"),
    ("data", "inspect", "videossl.data.inspect", "print what a shard set holds (counts, video params, skipped)"),
    ("data", "verify", "videossl.data.verify",
     "decode every sample as training will: unreadable samples, backend disagreements, --write-exclude"),
    ("data", "preview", "videossl.data.preview", "write a contact sheet of videos with masks, flow and tracks"),
    ("eval", "linear", "videossl.eval.commands.linear",
     "linear probe of a frozen encoder (vs random init), with report and plots"),
    ("eval", "knn", "videossl.eval.commands.knn", "weighted kNN (k 200/20, T 0.07) and NN retrieval of a frozen encoder"),
    ("eval", "finetune", "videossl.eval.commands.finetune",
     "fine-tune an encoder end to end (layer decay, mixup/cutmix), multi-view test"),
    ("eval", "compare", "videossl.eval.commands.compare", "several eval results.json side by side (Markdown + table)"),
    ("eval", "flow", "videossl.eval.commands.flow",
     "forecast-flow EPE, next-frame PSNR/SSIM and label propagation vs ground truth, PNG panels"),
    ("eval", "tap", "videossl.eval.commands.tap",
     "tracking any point (TAP-Vid AJ / delta_avg / OA): baselines and a frozen-feature correspondence probe, overlays"),
    ("eval", "zeroshot", "videossl.eval.commands.zeroshot",
     "zero-shot classification by class prompts and text-video retrieval R@1/5/10"),
    ("eval", "audio", "videossl.eval.commands.audio",
     "linear probe / SVM of a frozen audio backbone (BraVe V/A) on a shard set with sound or ESC-50's 5 folds"),
    ("eval", "long", "videossl.eval.commands.long",
     "long videos: segments + mean/attention pooling vs one long encoder (order zero-shot, retrieval, order probe)"),
    ("eval", "online", "videossl.eval.commands.online",
     "streaming model: per-frame predictions with delay, accuracy per frame index, FLOPs/frame, frames/s vs sequential"),
    ("bench", "data", "videossl.bench.data", "clips/s of the data pipeline vs raw decoding vs a naive loader, RSS"),
    ("bench", "train", "videossl.bench.train", "steps/s, clips/s, peak memory and MFU of a recipe's training step"),
    ("bench", "encoder", "videossl.bench.encoder", "ViViT training-step peak memory and clips/s per frames x mask ratio"),
    ("launch", "slurm", "videossl.launch", "submit a recipe to SLURM (submitit) or write its sbatch script"),
]

# (name, module, one-line help): commands outside any group, e.g. `videossl convert --from ...`
STANDALONE: list[tuple[str, str, str]] = [
    ("convert", "videossl.convert_cli",
     "convert timm / OpenCLIP / Hugging Face (VideoMAE, V-JEPA 2, ViViT) weights into a ViViT encoder file"),
]

LIGHTNING = ("fit", "validate", "test")

GROUP_HELP = {
    "data": "make, inspect and preview WebDataset shard sets of encoded video",
    "eval": "evaluate frozen encoders: linear probe, calibration, selective prediction",
    "bench": "benchmarks that print ratios against a baseline measured in the same run",
    "launch": "run recipes on clusters (SLURM, multi-node)",
}

EPILOG = """\
Training (LightningCLI over composed recipes; every value can be overridden):
  videossl fit --config recipes/brave/synthetic.yaml
  videossl fit --config recipes/brave/ucf101.yaml --print_config
  videossl {fit,validate,test} --help

Typical data session (CPU, no download):
  videossl data synth --out data/synth          # 480 labelled motion videos + ground truth
  videossl data inspect data/synth              # counts per split and class
  videossl data preview data/synth --out preview.png

Every subcommand has its own --help, e.g. `videossl data synth --help`.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _add_command(sub, name: str, module: str, help_: str) -> None:
    mod = importlib.import_module(module)
    doc = (mod.__doc__ or help_).strip()
    p = sub.add_parser(name, help=help_, description=doc, formatter_class=_Formatter, epilog=getattr(mod, "EPILOG", None))
    mod.add_cli_arguments(p)
    p.set_defaults(_run=mod.run_cli)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videossl",
        description="videossl: self-supervised video representation learning — data, pretraining, evaluation.",
        formatter_class=_Formatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"videossl {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="COMMAND")
    for name in LIGHTNING:  # listed for --help; dispatched to LightningCLI in main()
        groups.add_parser(name, help=f"{name} a recipe with LightningCLI (videossl {name} --help)", add_help=False)
    subs: dict[str, argparse._SubParsersAction] = {}
    # Only import the modules of the command being run (or all of them for --help listings).
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = argv[:2]
    for name, module, help_ in STANDALONE:
        if wanted[:1] == [name]:
            _add_command(groups, name, module, help_)
        else:
            groups.add_parser(name, help=help_, add_help=False)
    for group, name, module, help_ in COMMANDS:
        if group not in subs:
            gp = groups.add_parser(group, help=GROUP_HELP.get(group, ""), description=GROUP_HELP.get(group, ""),
                                   formatter_class=_Formatter)
            subs[group] = gp.add_subparsers(dest="command", metavar="SUBCOMMAND")
            gp.set_defaults(_parser=gp)
        if wanted[:1] == [group] and (len(wanted) < 2 or wanted[1] in (name, "-h", "--help")):
            _add_command(subs[group], name, module, help_)
        else:
            subs[group].add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in LIGHTNING:  # LightningCLI parses these itself
        try:
            from videossl.train import run_lightning

            return run_lightning(argv[0], argv[1:])
        except VideosslError as e:
            print(f"videossl: error: {e}", file=sys.stderr)
            return 2
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        (getattr(args, "_parser", None) or parser).print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except VideosslError as e:
        print(f"videossl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("videossl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
