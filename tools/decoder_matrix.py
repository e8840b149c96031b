"""Decoder matrix: which backend reads which file of the decoder zoo (tests/data/zoo.py), frame-exactly.

    python tools/decoder_matrix.py [--out DIR] [--backends decord pyav torchcodec auto] [--timeout S]

Builds the zoo in a temp dir (or DIR), then for every clip x backend reads every frame with that backend
and compares with ``reference_decode`` (sequential PyAV decode of the first video stream, display rotation
applied). A cell reads

* ``ok``                         same frame count and mean abs error <= 1 grey level
* ``frames off (got N, want M)`` a different number of frames
* ``shape off (got HxW, want HxW)`` same count, different frame size (e.g. a backend that applies rotation)
* ``pixels off (MAE x)``         same count and size, mean abs error above 1
* ``error: <short message>``     the backend raised (or crashed / hung: each backend runs in a worker process)
* ``refused (ok): <message>``    the backend raised on a clip the reference cannot read either

Every backend is read through videossl's ``open_video`` (``decord``, ``pyav``, ``torchcodec``, and ``auto``,
the choice training makes), each in a worker process.
The Markdown table is printed and, with ``--out``, written to ``DIR/matrix.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python tools/decoder_matrix.py` puts tools/ first on the path, not the repo
    sys.path.insert(0, str(ROOT))

BACKENDS = ("decord", "pyav", "torchcodec", "auto")


# ----------------------------------------------------------------------------- readers: bytes -> (N, H, W, 3)


def read_with(backend: str, data: bytes) -> np.ndarray:
    """Every frame through videossl's own reader (``open_video``), as training reads them."""
    from videossl.data.decoding import open_video

    with open_video(data, backend) as r:
        return r.get_frames(np.arange(r.num_frames)).numpy()


READERS = {b: (lambda data, b=b: read_with(b, data)) for b in ("decord", "pyav", "torchcodec", "auto")}


# ---------------------------------------------------------------------------------------------- compare


def _short(e: BaseException, limit: int = 90) -> str:
    """``Type: message`` on one line, without the log timestamps, source paths and errno the libraries add."""
    msg = " ".join(str(e).split())
    msg = re.sub(r"\[\d{2}:\d{2}:\d{2}\]\s*", "", msg)  # decord's log time
    msg = re.sub(r"(?:\w+, )?/\S+?\.(?:cc|cpp|c|h|hpp):\d+[:,]\s*", "", msg)  # decord / torchcodec source locations
    msg = re.sub(r"^\[Errno -?\d+\]\s*", "", msg)  # PyAV's errno prefix
    text = f"{type(e).__name__}: {msg}".strip().rstrip(":").replace("|", "/")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def judge(got: np.ndarray | None, error: str | None, want: np.ndarray | None) -> str:
    """One cell of the matrix: a backend's frames (or its error) against the reference (None: unreadable)."""
    if error is not None:
        return f"refused (ok): {error}" if want is None else f"error: {error}"
    want_n = 0 if want is None else len(want)
    if len(got) != want_n:
        return f"frames off (got {len(got)}, want {want_n})"
    if want_n == 0:
        return "ok"
    if got.shape[1:] != want.shape[1:]:
        return f"shape off (got {got.shape[1]}x{got.shape[2]}, want {want.shape[1]}x{want.shape[2]})"
    mae = float(np.abs(got.astype(np.int16) - want.astype(np.int16)).mean())
    return "ok" if mae <= 1.0 else f"pixels off (MAE {mae:.2f})"


def _worker(backend: str, outdir: str, paths: list[str]) -> None:
    """Read ``paths`` with ``backend`` only (no other decoder library loaded in this process), one file at a
    time: the frames go to ``outdir/<i>.npy``, and a JSON line per file says so or carries the error, as soon
    as it is done (so the parent keeps what was read before a crash)."""
    for i, p in enumerate(paths):
        try:
            got = np.asarray(READERS[backend](Path(p).read_bytes()), dtype=np.uint8)
            npy = str(Path(outdir) / f"{i}.npy")
            np.save(npy, got)
            rec = {"path": p, "npy": npy}
        except Exception as e:
            rec = {"path": p, "error": _short(e)}
        print(json.dumps(rec), flush=True)


def run_backend(backend: str, clips: list, refs: dict, timeout: float) -> dict[str, str]:
    """Cells for every clip, read in worker processes; a crash or hang costs only the clip it happened on."""
    cells: dict[str, str] = {}
    todo = list(clips)
    while todo:
        with tempfile.TemporaryDirectory(prefix=f"{backend}-") as outdir:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", backend, outdir, *[str(c.path) for c in todo]]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, cwd=ROOT)
                out, rc, why = proc.stdout, proc.returncode, None
            except subprocess.TimeoutExpired as e:
                out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                rc, why = None, f"error: hung (> {timeout:.0f} s)"
            done = {}
            for line in out.splitlines():
                try:
                    rec = json.loads(line)
                    done[rec["path"]] = rec
                except (ValueError, KeyError, TypeError):  # a library printed something of its own
                    continue
            rest = []
            for c in todo:
                rec = done.get(str(c.path))
                if rec is None:
                    rest.append(c)
                elif "error" in rec:
                    cells[c.name] = judge(None, rec["error"], refs[c.name])
                else:
                    cells[c.name] = judge(np.load(rec["npy"]), None, refs[c.name])
        if not rest:
            break
        if why is None:
            why = f"error: crashed (exit {rc})" if rc else "error: worker stopped early"
        cells[rest[0].name] = why  # the clip it was on when it died
        todo = rest[1:]
    return cells


def matrix(clips: list, backends: tuple[str, ...], timeout: float) -> str:
    from tests.data.zoo import displayed, reference_decode

    refs = {}
    for c in clips:
        try:
            refs[c.name] = displayed(c.path, reference_decode(c.path))  # rotation applied, as videossl does
        except Exception:
            refs[c.name] = None
    cols = {b: run_backend(b, clips, refs, timeout) for b in backends}
    head = "| file | kind | reference |" + "".join(f" {b} |" for b in backends)
    rule = "|---|---|---|" + "---|" * len(backends)
    rows = [head, rule]
    for c in clips:
        ref = f"{c.frames} ({c.expect})"
        rows.append(f"| `{c.name}` | {c.kind} | {ref} |" + "".join(f" {cols[b][c.name]} |" for b in backends))
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="build the zoo here and write matrix.md (default: a temp dir, no file)")
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per backend worker before it counts as hung")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # internal: python tools/decoder_matrix.py --worker BACKEND OUTDIR FILE...
        _worker(args.worker, args.paths[0], args.paths[1:])
        return 0
    from tests.data.zoo import make_zoo

    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        folder = args.out if args.out is not None else Path(tmp)
        skipped: list = []
        clips = make_zoo(folder, skipped=skipped)
        table = matrix(clips, tuple(args.backends), args.timeout)
    if skipped:
        table += "\nSkipped: " + ", ".join(f"`{n}` ({why})" for n, why in skipped) + "\n"
    print(table, end="")
    if args.out is not None:
        (args.out / "matrix.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
