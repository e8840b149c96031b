"""Launch a recipe on a SLURM cluster: one task per GPU on N nodes, through submitit.

    videossl launch slurm --config recipes/brave/kinetics400.yaml --nodes 4 --gpus-per-node 8 --partition gpu
    videossl launch slurm --config recipes/brave/ucf101.yaml --nodes 2 --gpus-per-node 4 --dry-run

Each task runs ``videossl fit --config RECIPE --trainer.num_nodes N --trainer.devices G [overrides]``;
Lightning's SLURMEnvironment reads ranks and the master address from SLURM's variables, so the
recipe needs no cluster-specific values (use a recipe composing ``base/trainer/slurm.yaml`` or
``ddp.yaml``). Runs resume by themselves: a requeued or resubmitted job finds
``<run>/checkpoints/last.ckpt`` and continues. ``--dry-run`` writes the equivalent sbatch script
(``<run>/slurm/launch.sbatch``) and prints it instead of submitting.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from videossl.errors import VideosslError
from videossl.recipes import load_recipe

EPILOG = """\
examples:
  videossl launch slurm --config recipes/brave/kinetics400.yaml --nodes 4 --gpus-per-node 8 --partition gpu
  videossl launch slurm --config recipes/brave/ucf101.yaml --nodes 1 --gpus-per-node 4 --dry-run
  videossl launch slurm --config recipes/brave/ucf101.yaml --nodes 2 --gpus-per-node 8 -- --trainer.max_steps 1000
(arguments after `--` are passed to `videossl fit` unchanged)
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="recipe to run with `videossl fit`")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--cpus-per-task", type=int, default=10, help="CPU cores per GPU task (data workers + 1)")
    p.add_argument("--mem-gb", type=int, default=0, help="memory per node in GB (0: the partition's default)")
    p.add_argument("--time", type=int, default=24 * 60, help="time limit in minutes")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--qos", default=None)
    p.add_argument("--constraint", default=None)
    p.add_argument("--job-name", default=None, help="default: videossl-<run folder name>")
    p.add_argument("--dry-run", action="store_true", help="write and print the sbatch script; submit nothing")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="after `--`: extra `videossl fit` arguments")


def fit_command(args: argparse.Namespace) -> list[str]:
    extra = [a for a in args.overrides if a != "--"]
    return ["videossl", "fit", "--config", args.config, "--trainer.num_nodes", str(args.nodes),
            "--trainer.devices", str(args.gpus_per_node), *extra]


def run_dir(args: argparse.Namespace) -> Path:
    recipe = load_recipe(args.config)
    root = (recipe.get("trainer") or {}).get("default_root_dir") or "runs/default"
    extra = [a for a in args.overrides if a != "--"]
    for i, a in enumerate(extra):
        if a == "--trainer.default_root_dir" and i + 1 < len(extra):
            root = extra[i + 1]
    return Path(root)


def sbatch_script(args: argparse.Namespace, root: Path, name: str) -> str:
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={args.nodes}",
        f"#SBATCH --ntasks-per-node={args.gpus_per_node}",
        f"#SBATCH --gpus-per-node={args.gpus_per_node}",
        f"#SBATCH --cpus-per-task={args.cpus_per_task}",
        f"#SBATCH --time={args.time // 60:02d}:{args.time % 60:02d}:00",
        f"#SBATCH --output={root}/slurm/%j.out",
        "#SBATCH --signal=SIGUSR1@120   # Lightning's SLURMEnvironment checkpoints and requeues",
        "#SBATCH --requeue",
    ]
    for flag, value in (("partition", args.partition), ("account", args.account), ("qos", args.qos),
                        ("constraint", args.constraint)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    if args.mem_gb:
        lines.append(f"#SBATCH --mem={args.mem_gb}G")
    lines += ["", "export WANDB_MODE=${WANDB_MODE:-offline}", "srun " + shlex.join(fit_command(args)), ""]
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    if args.nodes < 1 or args.gpus_per_node < 1:
        raise VideosslError("--nodes and --gpus-per-node must be at least 1")
    root = run_dir(args)
    name = args.job_name or f"videossl-{root.name}"
    slurm_dir = root / "slurm"
    if args.dry_run:
        slurm_dir.mkdir(parents=True, exist_ok=True)
        path = slurm_dir / "launch.sbatch"
        path.write_text(sbatch_script(args, root, name))
        print(path.read_text())
        print(f"# written to {path}; submit with: sbatch {path}", file=sys.stderr)
        return 0
    import submitit

    executor = submitit.AutoExecutor(folder=str(slurm_dir))
    if executor.cluster != "slurm":
        raise VideosslError("no SLURM here (sbatch not found): use --dry-run to write the script, or run on a login node")
    params = dict(nodes=args.nodes, tasks_per_node=args.gpus_per_node, gpus_per_node=args.gpus_per_node,
                  cpus_per_task=args.cpus_per_task, timeout_min=args.time, name=name,
                  slurm_signal_delay_s=120)
    for key, value in (("slurm_partition", args.partition), ("slurm_account", args.account),
                       ("slurm_qos", args.qos), ("slurm_constraint", args.constraint)):
        if value:
            params[key] = value
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    executor.update_parameters(**params)
    job = executor.submit(submitit.helpers.CommandFunction(fit_command(args)))
    print(f"submitted job {job.job_id}: {args.nodes} node(s) x {args.gpus_per_node} GPU(s); logs in {slurm_dir}")
    return 0
