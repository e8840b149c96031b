"""CUDA branches (marked ``gpu``; they skip cleanly without a CUDA device). Run on a GPU machine with
``python -m pytest -m gpu`` (``tools/gpu_check.sh`` does). Written on CPU: never yet run on a GPU."""

from __future__ import annotations

import pytest
import torch

from videossl.data.loader.transforms import AugmentConfig, BatchVideoAugment, draw_params
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
