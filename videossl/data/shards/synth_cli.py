"""Generate the embedded synthetic motion dataset.

Eight classes defined by motion, not appearance (translate left/right/up/down, rotate cw/ccw,
zoom in/out) with random shapes, colours, textures, sizes, speeds and positions over textured,
optionally drifting backgrounds, sometimes passed by an independent distractor. Each video is a
real H.264 mp4 plus ground truth: caption, per-frame masks, forward/backward optical flow and
point tracks with visibility. Output: WebDataset shards `<split>-%06d.tar` for train/val/test and
a manifest.json. The same --seed gives the same ground truth and the same decoded frames.

--audio: each mp4 also carries a stereo AAC sound that follows the object (pan and a high whistle:
x; pitch: y; a turning pattern over the partials: the angle; loudness: the size), so the class can be
heard over the clip but not in one instant; the frames are those of the same set without --audio.
"""

from __future__ import annotations

import argparse
import time

from videossl.data.shards.synthetic import PRESETS, default_workers, generate
from videossl.data.shards.synthetic_long import generate_long

#: presets with their own generator (the others are knobs of the short set's)
GENERATORS = {"long": generate_long}

EPILOG = """\
examples:
  videossl data synth --out data/synth
  videossl data synth --out data/synth-hard --preset hard --num-videos 2000 --workers 4
  videossl data synth --out data/mmnist-like --size 64 --frames 20 --num-videos 1000
  videossl data synth --out data/synth-tracks32 --tracks 32 --num-videos 8000 --seed 7   # TAPNext training
  videossl data synth --out data/synth-long --preset long --num-videos 640   # 128-256 frames, 3-8 events
  videossl data synth --out data/synth-av --audio      # + a stereo AAC track that follows the motion (16 kHz)
"""


def add_cli_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--num-videos", type=int, default=1200, help="number of videos over all splits (70/15/15)")
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: preset's, 16)")
    p.add_argument("--size", type=int, default=None, help="frame width = height in px, even (default: preset's)")
    p.add_argument("--tracks", type=int, default=None,
                   help="point tracks per video, sampled inside the object (default: preset's, 8; 'tap': 32); "
                        "more tracks give a point tracker more supervision per clip")
    p.add_argument("--fps", type=float, default=None, help="frame rate written into the mp4 (default 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed = same dataset")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="'fast': about 2x the motion per frame (for flow models); 'hard': 128 px, faster motion, "
                        "always occluded by a distractor, noisier, drifting; 'long': 128-256-frame videos "
                        "(1 fps, 48 px) of 3-8 motion events, labelled by the ordered (first, last) event pair, with "
                        "per-event ground truth and 'first ..., then ..., finally ...' captions (--frames: per event); "
                        "'tap': 256 px, 32 tracks (the TAP-Vid resolution, for `videossl eval tap`)")
    p.add_argument("--workers", type=int, default=default_workers(), help="parallel processes")
    p.add_argument("--max-per-shard", type=int, default=64, help="videos per tar shard")
    p.add_argument("--crf", type=int, default=None, help="H.264 quality (lower = better; default 18)")
    p.add_argument("--audio", action="store_true",
                   help="also a stereo AAC sound in each mp4 that follows the object's state at every instant: "
                        "pan + a 3.5-7.1 kHz whistle = x, pitch = y (up = higher), which of partials 2-5 is loudest "
                        "turns with the angle, loudness = size, each with a random per-video offset so that only "
                        "the changes match the video (videossl.data.shards.synthetic_audio); the video "
                        "frames are unchanged. Any preset")
    p.add_argument("--audio-rate", type=int, default=None,
                   help="audio sample rate in Hz with --audio: 16000 (default), 22050, 24000, 32000, 44100 or 48000")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    from rich.console import Console

    start = time.perf_counter()
    manifest = GENERATORS.get(args.preset, generate)(
        args.out,
        args.num_videos,
        preset=args.preset,
        seed=args.seed,
        workers=args.workers,
        max_per_shard=args.max_per_shard,
        progress=not args.no_progress,
        num_frames=args.frames,
        size=args.size,
        fps=args.fps,
        num_tracks=args.tracks,
        crf=args.crf,
        audio=args.audio,
        audio_rate=args.audio_rate,
    )
    counts = ", ".join(f"{s} {v['num_samples']}" for s, v in manifest["splits"].items())
    Console(stderr=True).print(
        f"[green]wrote[/] {args.num_videos} videos ({counts}) to {args.out} in {time.perf_counter() - start:.1f} s"
    )
    return 0
