"""CUDA branches (marked ``gpu``; they skip cleanly without a CUDA device). Run on a GPU machine with
``python -m pytest -m gpu`` (``tools/gpu_check.sh`` does). Written on CPU: never yet run on a GPU.

Besides the data and model branches: the speed switches (bf16, TF32, channels-last, fused AdamW, compile),
SyncBN and NCCL DDP with one process, and ``videossl fit`` on one GPU with every switch and with FSDP
(``encoder.pt`` + ``last.ckpt`` hold the full weights; a second fit resumes)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videossl.core.precision import set_tf32, tf32_state
from videossl.data.loader.transforms import AugmentConfig, BatchVideoAugment, draw_params
from videossl.data.shards.synthetic import generate
from videossl.methods.brave import BraVe
from videossl.models import Small3D
from videossl.models.vivit import ViViT, num_kept

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_batch_augmentation_on_cuda_equals_the_cpu_path_with_the_same_parameters():
    aug = BatchVideoAugment(32, AugmentConfig(output="float"))
    x = torch.randint(0, 256, (4, 6, 3, 48, 64), dtype=torch.uint8)
    prm = draw_params(aug.cfg, 4, 48, 64, torch.Generator().manual_seed(0))
    cpu = aug(x, params=prm)
    gpu = aug(x.cuda(), params={k: v.cuda() if torch.is_tensor(v) else v for k, v in prm.items()})
    assert gpu.is_cuda and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)


def test_brave_step_in_bf16_on_cuda():
    m = BraVe(Small3D(width=8), Small3D(width=8), broad_modality="frame_diff", proj_hidden=32, pred_hidden=32,
              out_dim=16).cuda().train()
    batch = {"views": [torch.randint(0, 256, (4, 4, 3, 24, 24), dtype=torch.uint8, device="cuda"),
                       torch.randint(0, 256, (4, 8, 3, 16, 16), dtype=torch.uint8, device="cuda")],
             "view_names": ["narrow", "broad"], "label": torch.zeros(4, dtype=torch.long, device="cuda")}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, feats, _ = m.ssl_step(batch)
    loss.backward()
    assert torch.isfinite(loss) and feats.shape == (4, m.encoder.feature_dim)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.encoder.parameters() if p.requires_grad)


def test_vivit_drops_tokens_on_cuda_in_bf16():
    m = ViViT(size="tiny", embed_dim=64, depth=2, num_heads=2, img_size=32, num_frames=16, tubelet=(2, 8, 8),
              mask_ratio=0.75).cuda().train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y, kept = m(torch.rand(2, 3, 16, 32, 32, device="cuda"), return_kept=True)
    assert y.shape == (2, 64) and kept.num_tokens == num_kept(8 * 16, 0.75)
    y.float().sum().backward()


REPO = Path(__file__).resolve().parents[1]


def _tiny_brave(**kw) -> BraVe:
    torch.manual_seed(0)
    return BraVe(Small3D(width=8), Small3D(width=8), broad_modality="frame_diff", proj_hidden=32, pred_hidden=32,
                 out_dim=16, **kw)


def _cuda_batch() -> dict:
    g = torch.Generator().manual_seed(1)
    views = [torch.randint(0, 256, (4, 4, 3, 24, 24), dtype=torch.uint8, generator=g),
             torch.randint(0, 256, (4, 8, 3, 16, 16), dtype=torch.uint8, generator=g)]
    return {"views": [v.cuda() for v in views], "view_names": ["narrow", "broad"],
            "label": torch.zeros(4, dtype=torch.long, device="cuda")}


def _bf16_steps(m: BraVe, n: int = 2) -> torch.Tensor:
    opt = m.configure_optimizers()["optimizer"]
    for _ in range(n):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _, _ = m.ssl_step(_cuda_batch())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss


def _restore_tf32(before: dict[str, bool]) -> None:
    torch.set_float32_matmul_precision("high" if before["matmul"] else "highest")
    torch.backends.cudnn.allow_tf32 = before["cudnn"]


def test_compile_step_on_cuda_in_bf16_with_fused_adamw():
    m = _tiny_brave(compile=True)
    m.apply_speed_switches()
    m.cuda().train()
    assert m.configure_optimizers()["optimizer"].defaults["fused"] is True  # optim.fused: auto on CUDA
    loss = _bf16_steps(m)
    assert torch.isfinite(loss) and m.encoder._compiled_call_impl is not None
    assert list(m.encoder_state_dict()) == list(_tiny_brave().encoder_state_dict())


def test_channels_last_on_cuda_keeps_the_layout_and_the_outputs():
    plain, fast = _tiny_brave().cuda().eval(), _tiny_brave(channels_last=True)
    fast.apply_speed_switches()
    fast.cuda().eval()
    w = fast.encoder.features[0].weight
    assert w.is_cuda and w.is_contiguous(memory_format=torch.channels_last_3d)  # .cuda() kept the layout
    before = tf32_state()
    set_tf32(False)
    try:
        with torch.no_grad():
            torch.testing.assert_close(fast.ssl_step(_cuda_batch())[0], plain.ssl_step(_cuda_batch())[0],
                                       rtol=1e-3, atol=1e-4)
    finally:
        _restore_tf32(before)
    fast.train()
    assert torch.isfinite(_bf16_steps(fast))


def test_tf32_switch_sets_and_clears_the_cuda_flags():
    before = tf32_state()
    try:
        assert "TF32 on" in set_tf32(True)
        assert tf32_state() == {"matmul": True, "cudnn": True} and torch.get_float32_matmul_precision() == "high"
        set_tf32(False)
        assert tf32_state() == {"matmul": False, "cudnn": False}
    finally:
        _restore_tf32(before)


@pytest.fixture(scope="module")
def nccl_one_process():
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


class _Step(torch.nn.Module):  # DDP syncs what runs through its forward: the method's step
    def __init__(self, method: BraVe) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict) -> torch.Tensor:
        return self.method.ssl_step(batch)[0]


def test_syncbn_with_one_process_on_cuda(nccl_one_process):
    m = torch.nn.SyncBatchNorm.convert_sync_batchnorm(_tiny_brave()).cuda().train()
    assert any(isinstance(x, torch.nn.SyncBatchNorm) for x in m.encoder.modules())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = m.ssl_step(_cuda_batch())[0]
    loss.backward()
    bn = next(x for x in m.encoder.modules() if isinstance(x, torch.nn.SyncBatchNorm))
    assert torch.isfinite(loss) and bn.weight.grad is not None and bn.num_batches_tracked.item() == 1


def test_nccl_ddp_with_one_process(nccl_one_process):
    from torch.nn.parallel import DistributedDataParallel

    assert nccl_one_process.get_backend() == "nccl"
    m = _tiny_brave().cuda().train()
    ddp = DistributedDataParallel(_Step(m), device_ids=[torch.cuda.current_device()])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = ddp(_cuda_batch())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.encoder.parameters())


# -- `videossl fit` on one GPU: every switch, and FSDP ---------------------------------------------------
TINY = [
    "--data.batch_size", "8", "--data.num_workers", "0",
    "--data.train_views", json.dumps([
        {"name": "narrow", "sampler": "narrow", "frames": 4, "stride": 1, "size": 24, "augment": {"flip_p": 0.0}},
        {"name": "broad", "sampler": "broad", "frames": 8, "stride": 1, "size": 16, "augment": {"flip_p": 0.0}}]),
    "--data.eval_views", json.dumps([{"name": "clip", "sampler": "uniform", "frames": 4, "stride": 1, "size": 24,
                                      "train": False}]),
    "--model.init_args.narrow_encoder", json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 8}}),
    "--model.init_args.broad_encoder", json.dumps({"class_path": "videossl.models.Small3D", "init_args": {"width": 8}}),
    "--model.init_args.proj_hidden", "32", "--model.init_args.pred_hidden", "32", "--model.init_args.out_dim", "16",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "bf16-mixed",
]
ENCODER_KEYS = list(_tiny_brave().encoder_state_dict())


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, 64, seed=1, size=32, num_frames=8, progress=False)
    return out


def _fit(run: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "videossl.cli", "fit", "--config", str(REPO / "recipes/brave/synthetic.yaml"),
           "--data.data_dir", str(data), "--trainer.default_root_dir", str(run), *TINY, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _saved(run: Path) -> tuple[dict, dict]:
    enc = torch.load(run / "encoder.pt", weights_only=True)
    return enc, torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def test_fit_on_one_gpu_with_every_switch_under_nccl_ddp_and_syncbn_saves_and_resumes(tmp_path, synth):
    switches = ["--trainer.strategy", "ddp", "--trainer.sync_batchnorm", "true", "--tf32", "true",
                "--model.init_args.compile", "true", "--model.init_args.channels_last", "true"]
    _fit(tmp_path / "run", synth, "--trainer.max_steps", "2", *switches)
    r = _fit(tmp_path / "run", synth, "--trainer.max_steps", "4", *switches)
    assert "resuming from" in r.stderr and "compile: torch.compile of encoder, broad_encoder" in r.stderr
    enc, ckpt = _saved(tmp_path / "run")
    assert list(enc) == ENCODER_KEYS and ckpt["global_step"] == 4
    assert all(torch.equal(enc[k], ckpt["state_dict"][k].cpu()) for k in enc)


def test_fsdp_fit_on_one_gpu_saves_the_full_weights_and_resumes(tmp_path, synth):
    fsdp = ["--trainer.strategy", json.dumps({"class_path": "pytorch_lightning.strategies.FSDPStrategy",
                                             "init_args": {"state_dict_type": "full"}})]
    _fit(tmp_path / "run", synth, "--trainer.max_steps", "2", *fsdp)
    enc2, ckpt2 = _saved(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # one full file, not shards
    assert list(enc2) == ENCODER_KEYS
    for k in enc2:  # the full tensors (not a rank's flat shard), equal to the checkpoint's
        assert enc2[k].shape == _tiny_brave().encoder_state_dict()[k].shape, k
        assert torch.equal(enc2[k], ckpt2["state_dict"][k].cpu()), k
    r = _fit(tmp_path / "run", synth, "--trainer.max_steps", "4", *fsdp)
    assert "resuming from" in r.stderr
    enc4, ckpt4 = _saved(tmp_path / "run")
    assert ckpt4["global_step"] == 4 and any(not torch.equal(enc2[k], enc4[k]) for k in enc4)
