"""Convert a published encoder's weights into a videossl ViViT encoder file (no download: bring the file).

Writes ``--out`` with :func:`videossl.core.checkpoint.save_encoder_file`: the weights under ``encoder.``
and the spec ``{"class_path": "videossl.models.vivit.ViViT", "init_args": {...}}`` that rebuilds the
encoder, so ``--weights FILE`` alone is enough to evaluate it. Every reference weight must be used and
every ViViT weight set, else the command fails with the lists; weights that are not part of an encoder
(heads, the VideoMAE decoder, the V-JEPA 2 predictor, CLIP's text tower) are dropped and listed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os

from videossl.core.checkpoint import read_state_dict, save_encoder_file
from videossl.errors import VideosslError
from videossl.models.convert import CONVERTERS, Converted, open_clip_config, timm_vit_config
from videossl.models.vivit import INFLATIONS, ViViT

SPEC_CLASS = "videossl.models.vivit.ViViT"

EPILOG = """\
Source formats (--from) and how to get the file (on a machine with internet; copy it here):

  hf-videomae   a transformers VideoMAE directory (config.json + model.safetensors or pytorch_model.bin);
                VideoMAEModel, VideoMAEForPreTraining (decoder dropped) or VideoMAEForVideoClassification:
                  huggingface-cli download MCG-NJU/videomae-base --local-dir videomae-base
                  videossl convert --from hf-videomae videomae-base --out videomae-b.pt
  hf-vjepa2     a transformers V-JEPA 2 directory (predictor dropped; 3D RoPE):
                  huggingface-cli download facebook/vjepa2-vitl-fpc64-256 --local-dir vjepa2-l
                  videossl convert --from hf-vjepa2 vjepa2-l --out vjepa2-l.pt --frames 16
  hf-vivit      a transformers ViViT directory (class token, joint position table):
                  huggingface-cli download google/vivit-b-16x2-kinetics400 --local-dir vivit-b
                  videossl convert --from hf-vivit vivit-b --out vivit-b.pt
  timm-vit      a timm ViT state dict, inflated to video; --model names its timm architecture:
                  python -c "import timm, torch; m = timm.create_model('vit_base_patch16_224', pretrained=True);
                             torch.save(m.state_dict(), 'vit_b16.pt')"
                  videossl convert --from timm-vit vit_b16.pt --model vit_base_patch16_224 --frames 16 --out vit-b16-video.pt
  open-clip     an OpenCLIP model (or its .visual) state dict; the image tower is inflated, the text tower dropped:
                  python -c "import open_clip, torch; m, _, _ = open_clip.create_model_and_transforms('ViT-B-32',
                             pretrained='laion2b_s34b_b79k'); torch.save(m.state_dict(), 'clip_b32.pt')"
                  videossl convert --from open-clip clip_b32.pt --model ViT-B-32 --frames 8 --out clip-b32-video.pt
                (OpenAI weights: --model ViT-B-32 --quick-gelu)

Image models: --inflate mean (the 2D patch kernel averaged over the tubelet's frames) or center (on its
central frame); the temporal table starts at zero, so a static clip gives the image features.
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", required=True, choices=sorted(CONVERTERS), help="source format (see below)")
    p.add_argument("path", help="a Hugging Face model directory, or a state-dict file (.pt/.bin/.safetensors)")
    p.add_argument("--out", required=True, help="encoder file to write (e.g. encoder.pt)")
    p.add_argument("--frames", type=int, default=None,
                   help="clip length the ViViT is built for (default: the reference's; image models: 16)")
    p.add_argument("--size", type=int, default=None, help="frame size (default: the reference's); learned tables resized")
    p.add_argument("--inflate", choices=INFLATIONS, default="mean", help="image models: 2D → 3D patch kernel inflation")
    p.add_argument("--tubelet-t", type=int, default=2, help="image models: tubelet length in frames")
    p.add_argument("--model", default=None, help="timm-vit / open-clip: the architecture name (built with random weights)")
    p.add_argument("--quick-gelu", action="store_true", help="open-clip: the model uses QuickGELU (OpenAI weights)")


def _hf_files(path: str) -> tuple[str, dict]:
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg_path):
        raise VideosslError(f"no config.json in {folder}: give the model directory (save_pretrained / huggingface-cli download)")
    with open(cfg_path) as f:
        config = json.load(f)
    if os.path.isfile(path):
        return path, config
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name), config
    raise VideosslError(f"{folder} has neither model.safetensors nor pytorch_model.bin (sharded checkpoints: merge first)")


def _image_config(args: argparse.Namespace) -> dict:
    if not args.model:
        raise VideosslError(f"--from {args.source} needs --model NAME (the architecture, e.g. vit_base_patch16_224 / ViT-B-32)")
    if args.source == "timm-vit":
        import timm

        return timm_vit_config(timm.create_model(args.model, pretrained=False))
    try:
        import open_clip
    except ImportError:
        raise VideosslError("--from open-clip needs open_clip_torch: pip install 'videossl[clip]'") from None
    return open_clip_config(open_clip.create_model(args.model, pretrained=None, force_quick_gelu=args.quick_gelu).visual)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_path(source: str, path: str, *, frames: int | None = None, size: int | None = None, inflate: str = "mean",
                 tubelet_t: int = 2, config: dict | None = None) -> tuple[Converted, str]:
    """Read ``path`` (through core.checkpoint) and convert it: (Converted, the weight file read)."""
    if source.startswith("hf-"):
        weights, cfg = _hf_files(path)
        opts = {"frames": frames, "size": size}
    else:
        weights, cfg = path, config
        opts = {"frames": frames or 16, "size": size, "inflate": inflate, "tubelet_t": tubelet_t}
    return CONVERTERS[source](read_state_dict(weights), cfg, **opts), weights


def run_cli(args: argparse.Namespace) -> int:
    config = None if args.source.startswith("hf-") else _image_config(args)
    conv, weights = convert_path(args.source, args.path, frames=args.frames, size=args.size, inflate=args.inflate,
                                 tubelet_t=args.tubelet_t, config=config)
    model = ViViT(**conv.init_args)
    report = model.load_pretrained(conv.state_dict, prefix="")
    if not report.clean:  # finish() already guarantees this; kept as the load report the user sees
        raise VideosslError(f"converted weights do not load cleanly: {report.describe()}")
    spec = {"class_path": SPEC_CLASS, "init_args": conv.init_args}
    save_encoder_file(args.out, conv.state_dict, spec, source=args.source, source_path=os.path.abspath(weights),
                      source_hash="sha256:" + _sha256(weights), conversion=conv.note,
                      dropped=list(conv.dropped), options={"frames": args.frames, "size": args.size,
                                                           "inflate": args.inflate, "tubelet_t": args.tubelet_t})
    n = sum(v.numel() for v in conv.state_dict.values())
    print(f"converted {args.source} {weights}: {len(conv.state_dict)} tensors ({n / 1e6:.1f}M values), "
          f"load report: {len(report.missing)} missing, {len(report.unexpected)} unexpected")
    if conv.dropped:
        print(f"dropped (not part of the encoder): {len(conv.dropped)} key(s), e.g. {conv.dropped[:4]}")
    print("config:")
    print(json.dumps(spec, indent=2))
    print(f"wrote {args.out}")
    return 0
