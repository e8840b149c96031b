"""Frames/s of the streaming forward pass: stages on 2 processes (gloo, 1 thread each) vs 1 process
(2 threads, then 1 thread), same model, same machine, measured in the same run (ratio printed).

    python tools/bench_stream_dist.py --ticks 200 --width 64 --size 64 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from videossl.models.pipeline_dist import StageGroup
from videossl.models.pipelined import FrameCNN, PipelinedEncoder


def _pipe(a):
    torch.manual_seed(0)
    return PipelinedEncoder.from_sequential(FrameCNN(width=a.width, depth=a.depth)).eval()


def _worker(rank, world, port, a, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pipe = _pipe(a)
    frame = torch.rand(a.batch, 3, a.size, a.size)
    g = StageGroup(pipe, frame)
    st = g.init_state()
    for _ in range(a.depth * 2):
        g.step(frame, st)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(a.ticks):
        g.step(frame, st)
    dist.barrier()
    if rank == 0:
        q.put(a.ticks / (time.perf_counter() - t0))
    dist.destroy_process_group()


@torch.no_grad()
def one_process(a, threads):
    torch.set_num_threads(threads)
    pipe, frame = _pipe(a), torch.rand(a.batch, 3, a.size, a.size)
    st = pipe.init_state()
    for _ in range(a.depth * 2):
        pipe.step(frame, st)
    t0 = time.perf_counter()
    for _ in range(a.ticks):
        pipe.step(frame, st)
    return a.ticks / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fps1_2t, fps1_1t = one_process(a, 2), one_process(a, 1)
    q = mp.get_context("spawn").SimpleQueue()
    ctx = mp.start_processes(_worker, args=(2, port, a, q), nprocs=2, join=False, start_method="spawn")
    fps2 = q.get()
    while not ctx.join():
        pass
    print(json.dumps({"config": vars(a), "frames_per_s_1proc_2threads": fps1_2t, "frames_per_s_1proc_1thread": fps1_1t,
                      "frames_per_s_2proc_1thread_each": fps2, "ratio_vs_1proc_2threads": fps2 / fps1_2t,
                      "ratio_vs_1proc_1thread": fps2 / fps1_1t, "cpus": os.cpu_count(),
                      "load_avg_1min": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
