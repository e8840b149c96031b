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

from videossl.errors import VideosslError
from videossl.models.pipeline_dist import StageGroup, balanced_groups, split_groups
from videossl.models.pipelined import FrameCNN, PipelinedEncoder
from videossl.models.sideways import init_sideways, sideways_tick

# (depth, clocks, groups, sideways): the even 2 + 2 split with Sideways; 3 + 2 stages with mixed clocks, forward
# only (Sideways needs every clock at 1). Rank 0's top stage has clock 2: it is due every other tick and sends its
# held buffer in between. "held": rank 1's bottom stage (clock 2) reads the boundary only on the ticks after a held
# send, so a message left out while the top is not due changes the output. "fresh": it reads every tick (clock 1),
# so a message carrying the buffer from before this tick's update changes it.
CONFIGS = {"even": (4, None, None, True), "held": (5, (1, 1, 2, 2, 4), [[0, 1, 2], [3, 4]], False),
           "fresh": (5, (1, 1, 2, 1, 2), [[0, 1, 2], [3, 4]], False)}


def _model(cfg="even"):
    depth, clocks, _, _ = CONFIGS[cfg]
    torch.manual_seed(0)
    pipe = PipelinedEncoder.from_sequential(FrameCNN(width=8, depth=depth), clocks=clocks)
    head = nn.Linear(8, 3)
    return pipe, head


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 10, 16, 16, generator=g), torch.tensor([0, 2])


def _loss(head, y):
    return lambda z, t: F.cross_entropy(head(PipelinedEncoder.pool(z)), y)


def _worker(rank: int, world: int, port: int, cfg: str, q) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        pipe, head = _model(cfg)
        clip, y = _data()
        group = StageGroup(pipe, clip[:1, :, 0].expand(2, -1, -1, -1), CONFIGS[cfg][2])
        state, outs = group.init_state(), []
        for t in range(clip.shape[2]):
            o, d = group.step(clip[:, :, t] if rank == 0 else None, state)
            outs.append((o, d))
        sw = group.init_sideways()
        grads, sw_outs = {}, []
        for t in range(clip.shape[2] if CONFIGS[cfg][3] else 0):
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


def test_balanced_groups_minimise_the_slowest_group():
    # FrameCNN's stem is ~1/20 of a later layer: the even split of 4 stages cannot balance, 5 stages can
    assert balanced_groups([0.03, 0.6, 0.6, 0.6, 0.6], 2) == [[0, 1, 2], [3, 4]]
    assert balanced_groups([0.03, 0.6, 0.6, 0.6], 2) == [[0, 1], [2, 3]]
    assert balanced_groups([5, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert balanced_groups([1, 1], 2) == [[0], [1]]
    costs = [3, 1, 4, 1, 5, 9, 2, 6]
    got = balanced_groups(costs, 3)
    assert sum(got, []) == list(range(8)) and all(g for g in got)
    # the optimum by brute force over every pair of cut points
    best = min(max(sum(costs[:i]), sum(costs[i:j]), sum(costs[j:])) for i in range(1, 7) for j in range(i + 1, 8))
    assert max(sum(costs[k] for k in g) for g in got) == best == 14
    with pytest.raises(VideosslError, match="at most one rank per stage"):
        balanced_groups([1, 1], 3)


def test_stage_group_refuses_a_batch_it_was_not_built_for():
    pipe, _ = _model()
    group = StageGroup(pipe, torch.zeros(2, 3, 16, 16), rank=0, world=2)
    with pytest.raises(VideosslError, match="build the StageGroup with the running batch shape"):
        group._isend(torch.zeros(3, 8, 8, 8), 0, 1, group.shapes[group.top], 0)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", sorted(CONFIGS))
def test_two_rank_gloo_pipeline_equals_single_process(cfg):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = mp.start_processes(_worker, args=(2, _free_port(), cfg, q), nprocs=2, join=False, start_method="spawn")
    res = {}
    for _ in range(2):
        rank, outs, sw_outs, grads = q.get(timeout=120)  # a worker that died fails here, not at pytest's timeout
        t_ = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
        res[rank] = ([(t_(o), d) for o, d in outs], None if sw_outs is None else [t_(o) for o in sw_outs],
                     {n: t_(g) for n, g in grads.items()})
    while not procs.join():  # read the queue first: a full pipe would block the workers
        pass
    pipe, head = _model(cfg)
    clip, y = _data()
    state, sw = pipe.init_state(), init_sideways(pipe) if CONFIGS[cfg][3] else None
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
        if sw is None:
            continue
        r = sideways_tick(pipe, clip[:, :, t], sw, _loss(head, y), list(head.parameters()))
        if r.output is not None:
            torch.testing.assert_close(res[1][1][t], r.output, atol=1e-6, rtol=0)
        for n, g in r.grads.items():
            ref_grads[n] = ref_grads[n] + g if n in ref_grads else g
    assert sum(o is not None for o, _ in res[1][0]) >= 2  # the pipeline filled within the clip
    if sw is None:
        return
    got = {**res[0][2], **res[1][2]}
    assert set(got) == set(ref_grads)
    assert any(n.startswith("stages.0") for n in res[0][2]) and any(n.startswith("stages.3") for n in res[1][2])
    for n, g in ref_grads.items():
        torch.testing.assert_close(got[n], g, atol=1e-6, rtol=0, msg=n)
