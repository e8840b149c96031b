"""torchvision's video zoo as encoders: shapes, equality with torchvision's own models, weight resolution."""

from __future__ import annotations

import pytest
import torch
import torchvision.models.video as tvv
from torchvision.models import get_model_weights

from videossl.core.checkpoint import save_encoder_file
from videossl.errors import VideosslError
from videossl.models import TorchvisionVideoEncoder, VideoResNetEncoder, build_encoder, input_checks, registry_spec
from videossl.models.tv_zoo import TV_ARCHS, hub_checkpoint_path

torch.set_num_threads(2)

# smallest input each arch runs on, and two lengths where the model allows (MViT: only 16 x 224)
LENGTHS = {"s3d": ((14, 224), (16, 224)), "mvit_v1_b": ((16, 224),), "mvit_v2_s": ((16, 224),)}
DEFAULT_LENGTHS = ((8, 64), (16, 64))


def _reference_features(ref: torch.nn.Module, arch: str, x: torch.Tensor) -> torch.Tensor:
    """torchvision's own model's classifier input (pre-head feature), caught by a forward hook."""
    got = {}
    handle = getattr(ref, TV_ARCHS[arch].head).register_forward_hook(lambda m, i, o: got.__setitem__("x", i[0]))
    with torch.no_grad():
        ref(x)
    handle.remove()
    f = got["x"]
    return f.mean(dim=(2, 3, 4)) if arch == "s3d" else f.flatten(1)  # S3D: its head is a 1x1 conv, then a mean


SLOW = {"mvit_v1_b"}  # ~10 s on 2 CPU cores (16 x 224 x 224 only)


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in TV_ARCHS])
def test_zoo_encoder_equals_torchvision_with_the_same_random_weights(arch, tmp_path):
    torch.manual_seed(0)
    ref = getattr(tvv, arch)(weights=None).eval()  # torchvision's own model, random weights, classifier kept
    path = tmp_path / f"{arch}.pth"
    torch.save(ref.state_dict(), path)
    torch.manual_seed(1)  # a different init: only the load can make them equal
    enc = build_encoder(f"tv-{arch}", weights=str(path)).eval()
    assert enc.load_report.clean and enc.weights_source == f"file {path}"
    assert TV_ARCHS[arch].head in enc.weights_conversion
    for frames, size in LENGTHS.get(arch, DEFAULT_LENGTHS):
        x = torch.randn(1, 3, frames, size, size)
        with torch.no_grad():
            y = enc(x)
        assert y.shape == (1, enc.feature_dim)
        assert (y - _reference_features(ref, arch, x)).abs().max().item() <= 1e-5, (arch, frames)


def test_zoo_expected_inputs_are_declared_and_refused_in_one_line():
    mvit, s3d, swin = (build_encoder(n) for n in ("tv-mvit_v2_s", "tv-s3d", "tv-swin3d_t"))
    assert (mvit.num_frames, mvit.img_size, mvit.fixed_input) == (16, 224, True)
    assert (s3d.min_frames, s3d.min_size, s3d.num_frames) == (14, 224, None)
    assert swin.num_frames is None and swin.min_frames is None
    w = get_model_weights("swin3d_t").KINETICS400_V1.transforms()
    assert swin.mean == tuple(w.mean) and swin.std == tuple(w.std) and swin.pretrained_size == 224
    with pytest.raises(VideosslError, match="runs only on 16 frames at 224"):
        mvit(torch.randn(1, 3, 8, 224, 224))
    with pytest.raises(VideosslError, match="at least 14 frames"):
        s3d(torch.randn(1, 3, 8, 224, 224))
    [err, note] = input_checks(mvit, 8, 112)
    assert err.level == "error" and "built for num_frames=16, img_size=224" in err.message
    assert note.level == "note" and "[0.45, 0.45, 0.45]" in note.message
    assert input_checks(swin, 8, 64, swin.mean, swin.std) == []  # flexible and normalised: nothing to say
    assert [c.level for c in input_checks(s3d, 16, 224, s3d.mean, s3d.std)] == []
    assert [c.level for c in input_checks(s3d, 16, 112, s3d.mean, s3d.std)] == ["error"]


def test_enum_name_resolves_in_the_hub_cache_and_a_missing_file_names_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    member = get_model_weights("r3d_18").KINETICS400_V1
    expected = tmp_path / "th" / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth"
    assert hub_checkpoint_path(member.url) == expected
    with pytest.raises(VideosslError) as e:
        TorchvisionVideoEncoder("r3d_18", weights="KINETICS400_V1")
    assert str(expected) in str(e.value) and member.url in str(e.value)
    with pytest.raises(VideosslError, match="its weight enum is R3D_18_Weights"):
        TorchvisionVideoEncoder("r3d_18", weights="Swin3D_T_Weights.KINETICS400_V1")
    with pytest.raises(VideosslError, match="neither a file nor a member of R3D_18_Weights"):
        TorchvisionVideoEncoder("r3d_18", weights="KINETICS700")
    # a (fake) cached download: torchvision's random-init state dict under the expected name
    torch.manual_seed(0)
    ref = tvv.r3d_18(weights=None).eval()
    expected.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), expected)
    for name in ("KINETICS400_V1", "R3D_18_Weights.KINETICS400_V1", "DEFAULT"):
        enc = TorchvisionVideoEncoder("r3d_18", weights=name).eval()
        assert enc.weights_source.startswith("torchvision R3D_18_Weights.KINETICS400_V1")
        assert enc.load_report.missing == [] and enc.load_report.unexpected == []
        assert "fc.bias, fc.weight" in enc.weights_conversion
    x = torch.randn(1, 3, 4, 32, 32)
    assert torch.allclose(enc(x), _reference_features(ref, "r3d_18", x), atol=1e-5)


def test_a_file_that_does_not_fit_fails_with_every_leftover_key(tmp_path):
    torch.manual_seed(0)
    sd = tvv.r3d_18(weights=None).state_dict()
    sd["extra.weight"] = torch.zeros(2)
    del sd["layer4.1.conv2.1.running_mean"], sd["layer4.1.conv2.1.running_var"]
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(VideosslError) as e:
        TorchvisionVideoEncoder("r3d_18", weights=str(path))
    msg = str(e.value)
    assert "2 missing key(s)" in msg and "layer4.1.conv2.1.running_mean" in msg and "layer4.1.conv2.1.running_var" in msg
    assert "1 unexpected key(s) ['extra.weight']" in msg
    # another arch's checkpoint: shape mismatches, one line
    torch.save(tvv.mc3_18(weights=None).state_dict(), path)
    with pytest.raises(VideosslError, match="do not fit"):
        TorchvisionVideoEncoder("r3d_18", weights=str(path))


def test_encoder_file_loads_and_r3d_18_relates_to_videoresnet(tmp_path):
    torch.manual_seed(0)
    tv = TorchvisionVideoEncoder("r3d_18").eval()
    path = tmp_path / "enc.pt"
    save_encoder_file(path, tv.state_dict(), registry_spec("tv-r3d_18"), source="test", conversion="identity")
    again = TorchvisionVideoEncoder("r3d_18", weights=str(path)).eval()
    assert again.weights_conversion == "identity" and "source: test" in again.weights_source
    # the registry's trainable R3D-18 (width 1) has the same parameter names and computes the same function
    ours = VideoResNetEncoder("r3d_18").eval()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert (again(x) - tv(x)).abs().max() == 0 and (ours(x) - tv(x)).abs().max() <= 1e-6


def test_fit_check_refuses_a_view_a_fixed_size_zoo_encoder_cannot_run():
    from types import SimpleNamespace

    from videossl.data.loader import ViewSpec
    from videossl.lightning_cli import check_encoder_view

    def fit(encoder, frames, size):
        model = SimpleNamespace(encoder_view="clip", encoder=encoder)
        data = SimpleNamespace(train_views=[ViewSpec(name="clip", frames=frames, size=size)])
        check_encoder_view(model, data)

    mvit = build_encoder("tv-mvit_v2_s")
    with pytest.raises(VideosslError, match=r"data view 'clip' is 8 frames at 112 px but tv-mvit_v2_s is built for "
                                            r"num_frames=16, img_size=224: change the view's frames / size"):
        fit(mvit, 8, 112)
    fit(mvit, 16, 224)  # fits (the normalisation note is a log warning only)
    fit(build_encoder("tv-swin3d_t"), 8, 64)  # flexible: any view
    with pytest.raises(VideosslError, match="needs at least 14 frames at 224 px"):
        fit(build_encoder("tv-s3d"), 16, 112)
