"""Audio encoders: BraVe's 2-D ResNet-V2-50 on the spectrogram and the tiny CPU one."""

import pytest
import timm
import torch
from torch import nn

from videossl.errors import VideosslError
from videossl.models import AudioResNet, SmallAudio2D, TemporalShift, TSMResNet, build_encoder, registry_spec

torch.set_num_threads(1)


def _nparams(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_resnet50_has_resnet_v2_50_parameters_and_units():
    with torch.device("meta"):
        mono, ref = AudioResNet(), timm.create_model("resnetv2_50", num_classes=0, in_chans=1)
        stereo, wide = AudioResNet(in_channels=2), AudioResNet(width=2)
    assert _nparams(mono) == _nparams(ref) == 23_494_080  # ResNet-50 v2 without fc, one input channel
    assert _nparams(stereo) - _nparams(mono) == 64 * 7 * 7  # one more stem input slice
    assert (mono.feature_dim, wide.feature_dim) == (2048, 4096)
    assert [len(s.blocks) for s in mono.stages] == [3, 4, 6, 3]
    assert not any(isinstance(m, TemporalShift) for m in mono.modules())
    assert isinstance(build_encoder("audio-resnet50", in_channels=2), AudioResNet)
    assert registry_spec("audio-resnet50")["init_args"] == {"depth": 50}
    assert isinstance(build_encoder("audio-small"), SmallAudio2D) and SmallAudio2D(width=8).feature_dim == 32


@pytest.mark.parametrize("time", [7, 32, 101])
def test_any_number_of_time_frames_gives_batch_by_feature_dim(time):
    torch.manual_seed(0)
    for enc in (AudioResNet(layers=(1, 1, 1, 1), width=0.25, in_channels=2), SmallAudio2D(width=4, in_channels=2)):
        y = enc(torch.randn(3, 2, time, 80))
        assert y.shape == (3, enc.feature_dim) and torch.isfinite(y).all()


def test_resnet50_runs_on_a_spectrogram():
    torch.manual_seed(0)
    enc = AudioResNet().eval()
    with torch.no_grad():
        y = enc(torch.randn(1, 1, 64, 80))
    assert y.shape == (1, 2048) and torch.isfinite(y).all()
    assert (y >= 0).all()  # features after the final BN-ReLU, mean-pooled


def test_is_the_tsm_trunk_without_shift_on_one_image():
    """Same weights as a TSM-ResNet with the shift off, fed the spectrogram as a one-frame clip: same output."""
    torch.manual_seed(0)
    tsm = TSMResNet(layers=(1, 2, 1, 1), width=0.25, in_channels=1, shift_fraction=0.0).eval()
    audio = AudioResNet(layers=(1, 2, 1, 1), width=0.25, in_channels=1).eval()
    audio.load_state_dict(tsm.state_dict())  # the shift has no parameters: the keys are the same
    x = torch.randn(2, 1, 40, 80)
    with torch.no_grad():
        torch.testing.assert_close(audio(x), tsm(x[:, :, None]))
        assert audio.forward_features(x).shape == (2, audio.feature_dim, 2, 3)  # /32, rounded up


def test_gradients_reach_the_first_conv():
    torch.manual_seed(0)
    for enc in (AudioResNet(layers=(1, 1, 1, 1), width=0.25), SmallAudio2D(width=4)):
        enc(torch.randn(2, 1, 16, 80)).pow(2).sum().backward()
        first = next(m for m in enc.modules() if isinstance(m, nn.Conv2d))
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
        assert all(p.grad is not None for p in enc.parameters())


def test_wrong_layout_is_a_user_error():
    with pytest.raises(VideosslError, match=r"\(B, C=1, time, mel\).*channels"):
        SmallAudio2D(width=2)(torch.randn(2, 2, 16, 80))  # stereo into a mono encoder
    with pytest.raises(VideosslError, match=r"spectrogram \(B, C=2, time, mel\)"):
        AudioResNet(layers=(1, 1, 1, 1), width=0.25, in_channels=2)(torch.randn(2, 2, 4, 16, 16))  # a video clip
    with pytest.raises(VideosslError, match="depth"):
        AudioResNet(depth=34)
    with pytest.raises(VideosslError, match="width"):
        SmallAudio2D(width=0)


@pytest.mark.parametrize("stages", [3, 5])
def test_small_audio_receptive_field_spans_2_to_the_stages_plus_1_minus_1_frames(stages):
    """The time span one output cell sees (its gradient's support) is 2^(stages+1) − 1 spectrogram frames."""
    torch.manual_seed(0)
    enc = SmallAudio2D(width=4, in_channels=2, stages=stages).eval()
    x = torch.randn(1, 2, 256, 80, requires_grad=True)
    fmap = enc.features(x)  # (1, C, T', M')
    fmap[0, :, fmap.shape[2] // 2, fmap.shape[3] // 2].sum().backward()
    frames = torch.nonzero(x.grad.abs().sum(dim=(0, 1, 3))).flatten()
    assert frames.max().item() - frames.min().item() + 1 == 2 ** (stages + 1) - 1
    assert enc.feature_dim == 16 and enc(x).shape == (1, 16)


def test_small_audio_stages_must_be_a_positive_integer():
    with pytest.raises(VideosslError, match="stages must be an integer >= 1"):
        SmallAudio2D(stages=0)


def test_subtract_time_mean_removes_each_bands_clip_mean_and_keeps_the_change():
    from videossl.models.audio import subtract_time_mean

    torch.manual_seed(0)
    x = torch.randn(2, 2, 30, 80)
    y = subtract_time_mean(x)
    assert torch.allclose(y.mean(dim=2), torch.zeros(2, 2, 80), atol=1e-6)
    ref = x - x.sum(dim=2, keepdim=True) / x.shape[2]
    assert torch.allclose(y, ref, atol=1e-6)


def test_time_mean_input_ignores_a_stationary_envelope_and_sees_a_moving_one():
    """A per-(channel, band) constant (gain, timbre) added to the log-mel changes nothing; the same energy
    moving over time changes the features; without the option the constant changes them."""
    torch.manual_seed(0)
    x = torch.randn(3, 2, 40, 80)
    envelope = torch.randn(3, 2, 1, 80) * 3
    for on, off in ((SmallAudio2D(width=4, in_channels=2, stages=3, subtract_time_mean=True),
                     SmallAudio2D(width=4, in_channels=2, stages=3)),
                    (AudioResNet(layers=(1, 1, 1, 1), width=0.25, in_channels=2, subtract_time_mean=True),
                     AudioResNet(layers=(1, 1, 1, 1), width=0.25, in_channels=2))):
        off.load_state_dict(on.state_dict())
        on.eval(), off.eval()
        with torch.no_grad():
            assert torch.allclose(on(x + envelope), on(x), atol=1e-5)
            assert not torch.allclose(off(x + envelope), off(x), atol=1e-3)
            ramp = torch.linspace(-3, 3, 40).view(1, 1, 40, 1)  # a level that changes over the clip
            assert not torch.allclose(on(x + ramp), on(x), atol=1e-3)
