"""Frames/s of the streaming forward pass: stages on 2 processes (gloo, 1 thread each) vs 1 process
(2 threads, then 1 thread), same model, same machine, measured in the same run, ``--repeats`` times
interleaved (median and every figure printed, with the ratio against the faster one-process setting).

    python tools/bench_stream_dist.py --ticks 300 --width 64 --size 64 --batch 1 --depth 5

Batch 1 is the streaming setting (one video, a frame per tick, lowest latency); at larger batches intra-op
threading splits each convolution well and the two-thread process is the one to beat.

Stage groups: ``balanced`` (default) minimises the larger group's FLOPs (:func:`balanced_groups` on
``stage_costs``; a tick lasts as long as its slowest group), ``even`` splits the stage count in half.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from videossl.models.pipeline_dist import StageGroup, balanced_groups, split_groups
from videossl.models.pipelined import FrameCNN, PipelinedEncoder


def _pipe(a):
    torch.manual_seed(0)
    return PipelinedEncoder.from_sequential(FrameCNN(width=a.width, depth=a.depth)).eval()


def _frame(a):
    return torch.rand(a.batch, 3, a.size, a.size)


def groups_for(a, costs):
    return split_groups(a.depth, 2) if a.groups == "even" else balanced_groups(costs, 2)


def _worker(rank, world, port, a, groups, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pipe, frame = _pipe(a), _frame(a)
    g = StageGroup(pipe, frame, groups)
    st = g.init_state()
    for _ in range(a.depth * 2 + 10):
        g.step(frame, st)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(a.ticks):
        g.step(frame, st)
    dist.barrier()
    if rank == 0:
        q.put(a.ticks / (time.perf_counter() - t0))
    dist.destroy_process_group()


def two_processes(a, groups):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = mp.get_context("spawn").SimpleQueue()
    ctx = mp.start_processes(_worker, args=(2, port, a, groups, q), nprocs=2, join=False, start_method="spawn")
    fps = q.get()
    while not ctx.join():
        pass
    return fps


@torch.no_grad()
def one_process(a, threads):
    torch.set_num_threads(threads)
    pipe, frame = _pipe(a), _frame(a)
    st = pipe.init_state()
    for _ in range(a.depth * 2 + 10):
        pipe.step(frame, st)
    t0 = time.perf_counter()
    for _ in range(a.ticks):
        pipe.step(frame, st)
    return a.ticks / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=300)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--groups", choices=("balanced", "even"), default="balanced")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    costs = _pipe(a).stage_costs(_frame(a))
    groups = groups_for(a, costs)
    runs = {"1proc_2threads": [], "1proc_1thread": [], "2proc_1thread_each": []}
    for _ in range(a.repeats):
        runs["1proc_2threads"].append(one_process(a, 2))
        runs["1proc_1thread"].append(one_process(a, 1))
        runs["2proc_1thread_each"].append(two_processes(a, groups))
    med = {k: statistics.median(v) for k, v in runs.items()}
    best1 = max(med["1proc_2threads"], med["1proc_1thread"])
    print(json.dumps({"config": vars(a), "groups": groups,
                      "group_gflop": [round(sum(costs[i] for i in g) / 1e9, 3) for g in groups],
                      "frames_per_s_median": med, "frames_per_s_runs": runs,
                      "ratio_vs_1proc_2threads": med["2proc_1thread_each"] / med["1proc_2threads"],
                      "ratio_vs_1proc_1thread": med["2proc_1thread_each"] / med["1proc_1thread"],
                      "ratio_vs_best_1proc": med["2proc_1thread_each"] / best1, "cpus": os.cpu_count(),
                      "load_avg_1min": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
