"""The model-side speed switches (#16 item 4): ``channels_last`` and ``compile`` act in place, so names,
state dicts and outputs are unchanged; ``tf32`` is a no-op without CUDA. (Through ``videossl fit`` with
save and resume: tests/methods/test_brave_training.py; on CUDA: tests/test_gpu.py.)"""

from __future__ import annotations

import copy

import pytest
import torch

from videossl.core.precision import set_tf32, tf32_state
from videossl.methods.base import to_channels_last
from videossl.methods.brave import BraVe
from videossl.models import Small3D
from videossl.models.encoders import TSMResNet
from videossl.models.vivit import ViViT


def _brave(**kw) -> BraVe:
    torch.manual_seed(0)
    return BraVe(Small3D(width=8), Small3D(width=8), broad_modality="frame_diff", proj_hidden=32, pred_hidden=32,
                 out_dim=16, **kw)


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"views": [torch.randint(0, 256, (2, 4, 3, 24, 24), dtype=torch.uint8, generator=g),
                      torch.randint(0, 256, (2, 8, 3, 16, 16), dtype=torch.uint8, generator=g)],
            "view_names": ["narrow", "broad"], "label": torch.zeros(2, dtype=torch.long)}


def test_channels_last_converts_both_encoders_and_keeps_names_and_outputs():
    plain, fast = _brave().eval(), _brave(channels_last=True).eval()
    notes = fast.apply_speed_switches()
    assert "encoder: 3 conv weight(s)" in notes["channels_last"] and "broad_encoder: 3" in notes["channels_last"]
    for enc in (fast.encoder, fast.broad_encoder):
        convs = [m.weight for m in enc.modules() if isinstance(m, torch.nn.Conv3d)]
        assert convs and all(w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous() for w in convs)
    seen = []
    fast.encoder.features[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(
        memory_format=torch.channels_last_3d)))
    assert list(fast.state_dict()) == list(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fast.ssl_step(_batch())[0], plain.ssl_step(_batch())[0])
    assert seen == [True]  # the clip reached the first conv channels-last
    assert fast.apply_speed_switches() is notes  # once only (configure_model may run again)


def test_channels_last_on_a_tsm_resnet_is_channels_last_2d_and_a_no_op_on_a_vivit():
    torch.manual_seed(0)
    tsm = TSMResNet(layers=(1, 1, 1, 1), width=0.25).eval()
    ref = copy.deepcopy(tsm)
    assert "conv weight(s)" in to_channels_last(tsm)
    convs = [m.weight for m in tsm.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.rand(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(tsm(x), ref(x), rtol=1e-4, atol=1e-5)
    vit = ViViT(size="tiny", embed_dim=32, depth=1, num_heads=2, img_size=16, num_frames=4, tubelet=(2, 8, 8))
    before = {k: v.stride() for k, v in vit.state_dict().items()}
    assert to_channels_last(vit).startswith("no-op (ViViT has 1 conv layer(s)")
    assert {k: v.stride() for k, v in vit.state_dict().items()} == before


def test_compile_is_in_place_and_keeps_state_dict_keys():
    plain, fast = _brave(), _brave(compile={"dynamic": False})
    notes = fast.apply_speed_switches()
    assert notes["compile"] == "torch.compile of encoder, broad_encoder with {'dynamic': False}"
    for enc in (fast.encoder, fast.broad_encoder):
        assert isinstance(enc, Small3D) and enc._compiled_call_impl is not None  # compiled in place
    assert plain.encoder._compiled_call_impl is None
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert list(fast.encoder_state_dict()) == list(plain.encoder_state_dict())
    assert not any("_orig_mod" in k for k in fast.state_dict())


def test_bad_compile_value_is_a_clear_error():
    from videossl.errors import VideosslError

    with pytest.raises(VideosslError, match="compile must be"):
        _brave(compile="yes")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU behaviour")
def test_tf32_is_a_no_op_without_cuda():
    before = tf32_state()
    assert set_tf32(True) == "no-op (no CUDA device)"
    assert tf32_state() == before
