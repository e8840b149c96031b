"""Encoder export under FSDP: the full weights gathered by every rank, written by rank 0 (#16 item 5).

Lightning's FSDPStrategy refuses the CPU, so this runs the CPU-runnable part with 2 processes on gloo:
torch's FSDP2 (``fully_shard``) over a BraVe, a training step, then :func:`videossl.callbacks.export_encoder`
(what ``ResumeCheckpoint`` calls at the end of ``fit``) on both ranks. The exported ``encoder.pt`` must
have the keys of an unsharded run and the weights of the same step taken without FSDP. The Lightning
path (``last.ckpt`` + ``encoder.pt`` + resume under ``strategy: fsdp``) is a gpu-marked test in
tests/test_gpu.py.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from videossl.callbacks import export_encoder
from videossl.core.distributed import full_state_dict, is_sharded
from videossl.methods.brave import BraVe
from videossl.models import Small3D


def _tiny_brave() -> BraVe:
    torch.manual_seed(0)
    return BraVe(Small3D(width=8), Small3D(width=8), broad_modality="frame_diff", proj_hidden=32, pred_hidden=32,
                 out_dim=16, optim={"name": "sgd", "lr": 0.1, "ref_batch_size": None, "weight_decay": 0.0})


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"views": [torch.randint(0, 256, (4, 4, 3, 24, 24), dtype=torch.uint8, generator=g),
                      torch.randint(0, 256, (4, 8, 3, 16, 16), dtype=torch.uint8, generator=g)],
            "view_names": ["narrow", "broad"], "label": torch.zeros(4, dtype=torch.long)}


def _step(m: BraVe) -> None:
    opt = m.configure_optimizers()["optimizer"]
    loss, _, _ = m.ssl_step(_batch())  # the same batch on every rank: the averaged gradient is the batch's
    loss.backward()
    opt.step()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        m = _tiny_brave().train()
        mesh = init_device_mesh("cpu", (world,))
        for enc in (m.encoder, m.broad_encoder):
            for layer in enc.features:
                if isinstance(layer, torch.nn.Conv3d):
                    fully_shard(layer, mesh=mesh)
            fully_shard(enc, mesh=mesh)
        for head in (m.narrow_projector, m.narrow_predictor, m.broad_projector, m.broad_predictor):
            fully_shard(head, mesh=mesh)  # ssl_step calls these, not m itself: each is its own FSDP unit
        assert is_sharded(m)
        # what saving on rank 0 alone would write: each rank's shard, not the weights
        w = m.encoder.features[0].weight
        assert type(w).__name__ == "DTensor" and w.to_local().shape[0] < w.shape[0]
        _step(m)
        trainer = SimpleNamespace(strategy=SimpleNamespace(model=m, barrier=lambda name=None: dist.barrier()),
                                  is_global_zero=rank == 0)
        export_encoder(trainer, m, Path(out) / "encoder.pt")
        full = full_state_dict(m)  # collective: rank 0 gets everything, the others nothing
        if rank == 0:
            torch.save({k: v for k, v in full.items() if k.startswith("broad_encoder.")}, Path(out) / "broad.pt")
        else:
            assert full == {}
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_fsdp_two_cpu_processes_export_the_full_encoder(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ref = _tiny_brave().train()
    _step(ref)
    want = ref.encoder_state_dict()
    got = torch.load(tmp_path / "encoder.pt", weights_only=True)
    assert list(got) == list(want)  # the keys of an unsharded run, in order, under encoder.
    for k in want:
        assert type(got[k]) is torch.Tensor and got[k].shape == want[k].shape, k
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    before = _tiny_brave().encoder_state_dict()
    assert any(not torch.equal(before[k], got[k]) for k in got)  # the step moved the weights
    broad = torch.load(tmp_path / "broad.pt", weights_only=True)
    assert set(broad) == {f"broad_encoder.{k}" for k in ref.broad_encoder.state_dict()}


def test_without_fsdp_the_export_is_the_plain_state_dict():
    m = _tiny_brave()
    assert not is_sharded(m)
    assert list(m.encoder_state_dict(m)) == [f"encoder.{k}" for k in m.encoder.state_dict()]
    assert list(full_state_dict(m.encoder)) == list(m.encoder.state_dict())
