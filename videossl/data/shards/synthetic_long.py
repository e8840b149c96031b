"""The long synthetic preset (``videossl data synth --preset long``): videos whose answer needs the whole video.

A long video is a sequence of 3–8 *events*, each a short synthetic video of one motion class (its own
object, background and optional distractor, rendered by :func:`videossl.data.shards.synthetic.render`),
separated by still gaps (the event's last frame held). At the nominal 1 fps of the long-video recipes
(arXiv:2312.07395, §3–4: long videos sampled at 1 fps from the start) 128–256 frames are minutes.

Labels that need long-range order (no event, and no bag of events, decides them):

* ``label`` = the ordered pair (first event's class, last event's class): ``first * 8 + last``, class
  names ``"<first> then <last>"``; a model that pools short segments sees which motions occur but not
  in which order;
* ``events``: per event ``{start, end, label, label_name, caption}`` (frames ``[start, end)``);
* ``questions``: "which happened first" pairs ``{a, b, answer}`` over two events of different classes;
* ``caption``: "first <event 1>, then <event 2>, …, finally <event K>" (each event's caption without
  its background), and ``shuffled_captions``: the same events in other orders (order-sensitive
  zero-shot: the true caption against these).

Masks, flow and tracks are not stored (size); each event's mp4 frames come from the same renderer as
the short set, so their ground truth is the short set's.

With ``--audio`` each event sounds as the short set's video of its parameters would
(:mod:`videossl.data.shards.synthetic_audio`, its own timbre in ``events[i]["audio"]``), the state held over
the still gap after it; one event's sound cuts to the next with 5 ms fades.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from videossl.data.shards.format import json_bytes
from videossl.data.shards.render import encode_mp4, render
from videossl.data.shards.synthetic import CLASSES, SynthConfig, generate, sample_params, split_of
from videossl.data.shards.synthetic_audio import AudioConfig, concat_with_fades, sample_audio, track
from videossl.errors import VideosslError

EVENTS = (3, 8)  # events per video
MAX_FRAMES = 256
MIN_FRAMES = 128
PAIR_CLASSES = tuple(f"{a} then {b}" for a in CLASSES for b in CLASSES)


def event_caption(caption: str) -> str:
    """An event's caption without its background clause ("a red star moving left")."""
    return caption.split(" over ", 1)[0]


def long_caption(events: list[str]) -> str:
    if len(events) == 1:
        return events[0]
    middle = "".join(f", then {e}" for e in events[1:-1])
    return f"first {events[0]}{middle}, finally {events[-1]}"


def long_caption_events(caption: str) -> list[str] | None:
    """The event captions of a :func:`long_caption` ("first A, then B, finally C" -> [A, B, C]), in order;
    ``None`` when ``caption`` is not one (no leading "first " or no ", finally ")."""
    if not caption.startswith("first ") or ", finally " not in caption:
        return None
    head, last = caption[len("first "):].rsplit(", finally ", 1)
    events = [*head.split(", then "), last]
    return events if all(e.strip() for e in events) else None


def plan_events(rng: np.random.Generator, seg: int) -> tuple[list[int], list[int]]:
    """(event classes, gap lengths after each event) with a total of MIN_FRAMES..MAX_FRAMES frames."""
    k = int(rng.integers(EVENTS[0], EVENTS[1] + 1))
    k = min(k, MAX_FRAMES // seg)
    labels = [int(x) for x in rng.integers(0, len(CLASSES), size=k)]
    total = int(rng.integers(max(MIN_FRAMES, k * seg), MAX_FRAMES + 1))
    spare = total - k * seg
    cuts = np.sort(rng.integers(0, spare + 1, size=k - 1)) if k > 1 else np.array([], int)
    gaps = np.diff(np.concatenate([[0], cuts, [spare]])).astype(int).tolist()
    return labels, gaps


def make_long_sample(
    index: int, cfg: SynthConfig, seed: int, num_videos: int, audio: AudioConfig | None = None
) -> tuple[str, str, int, dict[str, bytes]]:
    """Render + encode long video ``index`` (with its sound if ``audio``); returns (split, key, label, members)."""
    rng = np.random.default_rng([seed, index, 104729])
    labels, gaps = plan_events(rng, cfg.num_frames)
    label = labels[0] * len(CLASSES) + labels[-1]
    frames, events, captions, sounds = [], [], [], []
    t = 0
    for e, (lab, gap) in enumerate(zip(labels, gaps, strict=True)):
        p = sample_params(cfg, index * 16 + e, lab, seed + 1)
        r = render(p)
        cap = event_caption(p.caption)
        frames.append(r.frames)
        if gap:
            frames.append(np.repeat(r.frames[-1:], gap, axis=0))
        events.append({"start": t, "end": t + cfg.num_frames, "label": lab, "label_name": CLASSES[lab], "caption": cap})
        if audio is not None:
            samples, timbre = sample_audio(p, seed + 1, audio, hold=gap, start=t)
            sounds.append(samples)
            events[-1]["audio"] = timbre.meta()
        captions.append(cap)
        t += cfg.num_frames + gap
    video = np.concatenate(frames)
    questions = []
    for _ in range(3):
        i, j = sorted(int(x) for x in rng.choice(len(labels), size=2, replace=False))
        if labels[i] != labels[j]:
            a, b = (i, j) if rng.random() < 0.5 else (j, i)
            questions.append({"a": CLASSES[labels[a]], "b": CLASSES[labels[b]], "answer": "a" if a < b else "b"})
    shuffled = []
    for _ in range(20):
        perm = rng.permutation(len(captions))
        cand = long_caption([captions[i] for i in perm])
        if cand != long_caption(captions) and cand not in shuffled:
            shuffled.append(cand)
        if len(shuffled) == 3:
            break
    split = split_of(index, num_videos, len(CLASSES))  # by index: 70/15/15
    key = f"synthlong_{index:06d}"
    meta = {
        "key": key, "label": label, "label_name": PAIR_CLASSES[label], "split": split,
        "caption": long_caption(captions), "shuffled_captions": shuffled, "events": events, "questions": questions,
        "fps": cfg.fps, "num_frames": int(video.shape[0]), "width": cfg.size, "height": cfg.size,
        "duration": video.shape[0] / cfg.fps, "source": f"synthetic-long:{seed}:{index}",
    }
    sound = None
    if audio is not None:
        meta["audio"] = audio.manifest_entry()
        sound = track(concat_with_fades(sounds, audio.rate), audio)
    return split, key, label, {"mp4": encode_mp4(video, cfg.fps, cfg.crf, audio=sound), "json": json_bytes(meta)}


def generate_long(out, num_videos: int = 640, **kw: Any) -> dict[str, Any]:
    """The long synthetic shard set in ``out`` (see the module docstring); ``num_frames`` is per event."""
    kw.pop("preset", None)
    frames = kw.get("num_frames") or SynthConfig.num_frames
    if frames * EVENTS[0] > MAX_FRAMES:
        raise VideosslError(f"--frames (per event) must be at most {MAX_FRAMES // EVENTS[0]} for the long preset, got {frames}")
    return generate(out, num_videos, preset="long", sample_fn=make_long_sample, classes=list(PAIR_CLASSES),
                    ground_truth={"json": "events (start, end, label, label_name, caption), questions (which happened "
                                          "first), shuffled_captions (the same events in other orders)"},
                    video_frames=None, **kw)


__all__ = ["PAIR_CLASSES", "event_caption", "generate_long", "long_caption", "long_caption_events", "make_long_sample",
           "plan_events"]
