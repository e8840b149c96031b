"""timm and OpenCLIP image ViTs inflated into ViViT: built by their own libraries with random weights."""

import pytest
import torch

from videossl.models.convert import CONVERTERS, open_clip_config, timm_vit_config
from videossl.models.vivit import ViViT


def perturb(ref):
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1) if p.ndim <= 2 else None


def build(conv):
    m = ViViT(**conv.init_args)
    assert m.load_pretrained(conv.state_dict).clean
    return m.eval()


def static(img, frames):
    return img[:, :, None].expand(-1, -1, frames, -1, -1).contiguous()


def timm_vit(**kw):
    timm = pytest.importorskip("timm")
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=0)
    args.update(kw)
    torch.manual_seed(0)
    ref = timm.models.vision_transformer.VisionTransformer(**args).eval()
    perturb(ref)
    return ref


@pytest.mark.parametrize("inflate", ["mean", "center"])
def test_timm_avg_pool_static_clip_gives_the_image_features_exactly(inflate):
    """Mean (and central-frame) inflation: image features == inflated features on the image repeated over time."""
    ref = timm_vit(class_token=False, global_pool="avg", fc_norm=True)
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = ref(img)
    for frames in (8, 16):  # 16 > the converted 8-frame table: the temporal table is interpolated
        conv = CONVERTERS["timm-vit"](ref.state_dict(), timm_vit_config(ref), frames=8, inflate=inflate)
        with torch.no_grad():
            got = build(conv)(static(img, frames))
        err = (got - want).abs().max().item()
        print(f"timm-vit avg {inflate} {frames}f max abs diff {err:.2e}")
        assert err <= 1e-5


def test_timm_cls_token_one_step_and_video_lengths():
    ref = timm_vit(class_token=True, global_pool="token", init_values=0.5)
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = ref(img)
    conv = CONVERTERS["timm-vit"](ref.state_dict(), timm_vit_config(ref), frames=2)
    m = build(conv)
    with torch.no_grad():
        err = (m(static(img, 2)) - want).abs().max().item()  # one tubelet step: exact
        print(f"timm-vit cls 2f max abs diff {err:.2e}")
        assert err <= 1e-5
        assert m(static(img, 8)).shape == m(static(img, 16)).shape == (2, 64)  # longer clips run (interpolated table)


def test_open_clip_tower():
    open_clip = pytest.importorskip("open_clip")
    cfg = {"embed_dim": 48, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    model = open_clip.CLIP(**cfg).eval()
    perturb(model)
    visual = model.visual
    img = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = visual(img)
    conv = CONVERTERS["open-clip"](model.state_dict(), open_clip_config(visual), frames=2)
    assert conv.init_args["act"] == "quick_gelu" and conv.init_args["proj_dim"] == 48
    assert "text_projection" in conv.dropped and not any(k.startswith("visual.") for k in conv.dropped)
    m = build(conv)
    with torch.no_grad():
        err = (m(static(img, 2)) - want).abs().max().item()
    print(f"open-clip tok 2f max abs diff {err:.2e}")
    assert err <= 1e-5
    # a CLIP tower always attends to its class token, so the image is recovered exactly on one tubelet step;
    # converted for 8 and 16 frames (temporal tables of 4 and 8 steps), both give it, and run their full length
    for frames in (8, 16):
        conv = CONVERTERS["open-clip"](visual.state_dict(), open_clip_config(visual), frames=frames, inflate="center")
        m = build(conv)
        with torch.no_grad():
            err = (m(static(img, 2)) - want).abs().max().item()
            assert m(static(img, frames)).shape == (2, 48)
        print(f"open-clip tok (tower state dict, center) converted at {frames}f, 2f input: max abs diff {err:.2e}")
        assert err <= 1e-5
