"""Stage groups on 2 gloo processes equal the single-process pipeline (arXiv 1806.03863 §3, arXiv 2001.06232 §3)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from videossl.models.pipeline_dist import StageGroup, split_groups
from videossl.models.pipelined import FrameCNN, PipelinedEncoder
from videossl.models.sideways import init_sideways, sideways_tick


def _model():
    torch.manual_seed(0)
    pipe = PipelinedEncoder.from_sequential(FrameCNN(width=8, depth=4))
    head = nn.Linear(8, 3)
    return pipe, head


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 10, 16, 16, generator=g), torch.tensor([0, 2])


def _loss(head, y):
    return lambda z, t: F.cross_entropy(head(PipelinedEncoder.pool(z)), y)


def _worker(rank: int, world: int, port: int, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pipe, head = _model()
        clip, y = _data()
        group = StageGroup(pipe, clip[:1, :, 0].expand(2, -1, -1, -1))
        state, outs = group.init_state(), []
        for t in range(clip.shape[2]):
            o, d = group.step(clip[:, :, t] if rank == 0 else None, state)
            outs.append((o, d))
        sw = group.init_sideways()
        grads, sw_outs = {}, []
        for t in range(clip.shape[2]):
            r = group.sideways_tick(clip[:, :, t] if rank == 0 else None, sw, _loss(head, y), list(head.parameters()))
            sw_outs.append(r.output)
            for n, g in r.grads.items():
                grads[n] = grads[n] + g if n in grads else g
        def np_(x):  # by value: shared-memory tensors die with the worker
            return None if x is None else x.detach().numpy().copy()
        q.put((rank, [(np_(o), d) for o, d in outs], [np_(o) for o in sw_outs] if rank == world - 1 else None,
               {n: np_(g) for n, g in grads.items()}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_split_groups():
    assert split_groups(4, 2) == [[0, 1], [2, 3]] and split_groups(5, 2) == [[0, 1], [2, 3, 4]]


@pytest.mark.slow
def test_two_rank_gloo_pipeline_equals_single_process():
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    procs = mp.start_processes(_worker, args=(2, _free_port(), q), nprocs=2, join=False, start_method="spawn")
    res = {}
    for _ in range(2):
        rank, outs, sw_outs, grads = q.get()
        t_ = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
        res[rank] = ([(t_(o), d) for o, d in outs], None if sw_outs is None else [t_(o) for o in sw_outs],
                     {n: t_(g) for n, g in grads.items()})
    while not procs.join():  # read the queue first: a full pipe would block the workers
        pass
    pipe, head = _model()
    clip, y = _data()
    state, sw = pipe.init_state(), init_sideways(pipe)
    ref_grads: dict[str, torch.Tensor] = {}
    for t in range(clip.shape[2]):
        with torch.no_grad():
            o, d = pipe.step(clip[:, :, t], state)
        o2, d2 = res[1][0][t]
        assert d2 == d
        if o is None:
            assert o2 is None
        else:
            torch.testing.assert_close(o2, o, atol=1e-6, rtol=0)
        r = sideways_tick(pipe, clip[:, :, t], sw, _loss(head, y), list(head.parameters()))
        if r.output is not None:
            torch.testing.assert_close(res[1][1][t], r.output, atol=1e-6, rtol=0)
        for n, g in r.grads.items():
            ref_grads[n] = ref_grads[n] + g if n in ref_grads else g
    got = {**res[0][2], **res[1][2]}
    assert set(got) == set(ref_grads)
    assert any(n.startswith("stages.0") for n in res[0][2]) and any(n.startswith("stages.3") for n in res[1][2])
    for n, g in ref_grads.items():
        torch.testing.assert_close(got[n], g, atol=1e-6, rtol=0, msg=n)
