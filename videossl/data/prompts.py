"""Class-name prompts: captions for labelled datasets and zero-shot class embeddings.

``class_phrase`` turns a class name into words (UCF101 CamelCase split, HMDB51/Kinetics
underscores → spaces; the synthetic motion classes use the generator's own motion phrases);
``class_prompts`` wraps it in templates. Training on a labelled set draws one template per sample;
zero-shot evaluation averages the (normalised) embeddings of every template of a class.
"""

from __future__ import annotations

import re

__all__ = ["TEMPLATES", "SYNTHETIC_TEMPLATES", "class_phrase", "class_prompts", "dataset_kind"]

TEMPLATES = (
    "a video of a person {}.",
    "a person {}.",
    "someone is doing {}.",
    "a clip of {}.",
    "a video of {}.",
)
SYNTHETIC_TEMPLATES = ("a shape {}", "an object {} over a background", "a {}")


def dataset_kind(classes: list[str] | None) -> str:
    """``synthetic`` when the class list is the synthetic motion set, else ``generic``."""
    from videossl.data.synthetic import CLASSES

    return "synthetic" if classes and set(classes) <= set(CLASSES) else "generic"


def class_phrase(name: str) -> str:
    """``ApplyEyeMakeup`` → ``apply eye makeup``; ``brush_hair`` → ``brush hair``; ``playing guitar`` as is."""
    s = name.replace("_", " ").replace("-", " ")
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", s)
    return re.sub(r"\s+", " ", s).strip().lower()


def class_prompts(name: str, kind: str = "generic") -> list[str]:
    """Every prompt of one class (synthetic: the generator's motion phrases × templates)."""
    if kind == "synthetic":
        from videossl.data.synthetic import _PHRASES

        return [t.format(p) for p in _PHRASES[name] for t in SYNTHETIC_TEMPLATES]
    phrase = class_phrase(name)
    return [t.format(phrase) for t in TEMPLATES]
