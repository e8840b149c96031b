"""`videossl convert` end to end on a save_pretrained directory; the file alone rebuilds the encoder."""

import importlib

import pytest
import torch

from videossl.cli import main
from videossl.core.checkpoint import load_state, read_encoder_meta
from videossl.errors import VideosslError
from videossl.models.convert.common import Taker, finish

transformers = pytest.importorskip("transformers")


def test_convert_help_explains_every_source(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out = capsys.readouterr().out
    for src in ("hf-videomae", "hf-vjepa2", "hf-vivit", "timm-vit", "open-clip"):
        assert f"--from {src}" in out
    assert "huggingface-cli download MCG-NJU/videomae-base" in out and "pretrained=True" in out


@pytest.mark.parametrize("safe", [True, False])
def test_cli_videomae_directory_to_encoder_file(tmp_path, capsys, safe):
    cfg = transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=8, hidden_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, intermediate_size=128, decoder_hidden_size=32,
                                      decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64)
    torch.manual_seed(0)
    ref = transformers.VideoMAEForPreTraining(cfg).eval()
    ref.save_pretrained(tmp_path / "hf", safe_serialization=safe)
    out = tmp_path / "f.pt"
    assert main(["convert", "--from", "hf-videomae", str(tmp_path / "hf"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "0 missing, 0 unexpected" in text and '"pos_embed": "sincos"' in text and "dropped" in text
    meta = read_encoder_meta(out)
    assert meta["source"] == "hf-videomae" and meta["source_hash"].startswith("sha256:")
    spec = meta["spec"]
    mod, name = spec["class_path"].rsplit(".", 1)
    enc = getattr(importlib.import_module(mod), name)(**spec["init_args"]).eval()
    assert load_state(enc, out, prefix="encoder.", allow_missing=False, allow_unexpected=False).clean
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        want = ref.videomae(x.transpose(1, 2)).last_hidden_state
        assert (enc(x, return_tokens=True) - want).abs().max().item() <= 1e-5


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["convert", "--from", "hf-videomae", str(tmp_path / "empty"), "--out", str(tmp_path / "f.pt")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["convert", "--from", "timm-vit", str(tmp_path / "x.pt"), "--out", str(tmp_path / "f.pt")]) == 2
    assert "needs --model" in capsys.readouterr().err


def test_finish_lists_unset_vivit_weights():
    args = dict(size="tiny", embed_dim=32, depth=1, num_heads=2, img_size=16, num_frames=4, tubelet=(2, 8, 8))
    from videossl.models.vivit import ViViT

    sd = ViViT(**args).state_dict()
    taker = Taker({"a": torch.zeros(1)})
    taker.take("a")
    del sd["blocks.0.mlp.fc2.bias"], sd["pos_temporal"]
    with pytest.raises(VideosslError, match=r"2 ViViT weight\(s\) not set: \['blocks.0.mlp.fc2.bias', 'pos_temporal'\]"):
        finish(taker, sd, args)
