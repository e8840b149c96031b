"""Converters of published encoders into our :class:`~videossl.models.vivit.ViViT` (issue #18).

Each converter is ``(reference state dict, reference config, **options) -> Converted(init_args,
state_dict, dropped, note)``: ``ViViT(**init_args)`` loads ``state_dict`` with nothing missing or left
over, and gives the reference model's outputs. A conversion that would leave a reference weight unused
or a ViViT weight unset fails with the lists (:func:`~videossl.models.convert.common.finish`). The
reference libraries (``timm``, ``transformers``, ``open_clip_torch``) are never needed to convert a
state dict; only building a reference config from a model name imports them (lazily, in the command).

``videossl convert --from SRC ...`` (``videossl/convert_cli.py``) writes the result as an encoder file.
"""

from __future__ import annotations

from collections.abc import Callable

from videossl.models.convert.common import Converted, Taker, finish
from videossl.models.convert.hf import convert_hf_videomae, convert_hf_vivit, convert_hf_vjepa2
from videossl.models.convert.open_clip import convert_open_clip, open_clip_config
from videossl.models.convert.timm_vit import convert_timm_vit, timm_vit_config

#: source format -> converter
CONVERTERS: dict[str, Callable[..., Converted]] = {
    "timm-vit": convert_timm_vit,
    "open-clip": convert_open_clip,
    "hf-videomae": convert_hf_videomae,
    "hf-vjepa2": convert_hf_vjepa2,
    "hf-vivit": convert_hf_vivit,
}

__all__ = ["CONVERTERS", "Converted", "Taker", "finish", "open_clip_config", "timm_vit_config"]
