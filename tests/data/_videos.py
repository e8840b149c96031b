"""Tiny generated videos for the shard-maker tests (PyAV; a few KB each, milliseconds to make)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CODEC_BY_EXT = {".mp4": "libx264", ".avi": "mpeg4", ".mkv": "libx264"}


def make_video(
    path: str | Path,
    num_frames: int = 12,
    width: int = 32,
    height: int = 24,
    fps: int = 10,
    audio: bool = False,
    seed: int = 0,
) -> Path:
    """Write a small video whose frames differ from each other (moving bar, changing colour)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = CODEC_BY_EXT[path.suffix.lower()]
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            s.options = {"threads": "1", "preset": "ultrafast"}
        a = c.add_stream("aac", rate=16000) if audio else None
        for i in range(num_frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[...] = (base + 9 * i) % 255
            img[:, (2 * i) % width, :] = 255
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            t = np.arange(int(16000 * num_frames / fps)) / 16000
            arr = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            af = av.AudioFrame.from_ndarray(arr, format="fltp", layout="mono")
            af.sample_rate = 16000
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


def keyframe_positions(data_or_path) -> list[int]:
    """Indices (in decode order of packets = frame order for these files) of the keyframe packets."""
    import io

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes | bytearray) else str(data_or_path)
    with av.open(src) as c:
        v = c.streams.video[0]
        pkts = [p for p in c.demux(v) if p.size]
        pts = sorted(p.pts for p in pkts)
        return [pts.index(p.pts) for p in pkts if p.is_keyframe]


def decode_info(data_or_path) -> dict:
    import io

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes | bytearray) else str(data_or_path)
    with av.open(src) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        return {
            "num_frames": len(frames),
            "width": frames[0].width,
            "height": frames[0].height,
            "fps": float(v.average_rate),
            "codec": v.codec_context.name,
            "audio": len(c.streams.audio),
        }


# ----------------------------------------------------------------------------- dataset trees
def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def crlf(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


UCF_CLASSES = ["ApplyEyeMakeup", "Archery", "HandstandPushups"]
UCF_TEST_GROUPS = {1: (1, 2), 2: (3, 4), 3: (5, 6)}


def make_ucf101(
    base: Path, touch_file=touch, groups: int = 6, clips: int = 2, labelled_testlist: int | None = 2
) -> tuple[Path, Path]:
    """``base/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` + ``base/ucfTrainTestlist`` (CRLF), 3 splits.

    HandstandPushups: folder and list say ``HandstandPushups``, files say ``v_HandStandPushups_...``.
    """
    root = base / "UCF-101"
    lists = base / "ucfTrainTestlist"
    crlf(lists / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(UCF_CLASSES)])
    entries = []
    for ci, cls in enumerate(UCF_CLASSES):
        file_cls = "HandStandPushups" if cls == "HandstandPushups" else cls
        for g in range(1, groups + 1):
            for c in range(1, clips + 1):
                touch_file(root / cls / f"v_{file_cls}_g{g:02d}_c{c:02d}.avi")
                entries.append((ci, g, f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi"))
    for n, test_groups in UCF_TEST_GROUPS.items():
        crlf(lists / f"trainlist0{n}.txt", [f"{e} {ci + 1}" for ci, g, e in entries if g not in test_groups])
        crlf(
            lists / f"testlist0{n}.txt",
            [f"{e} {ci + 1}" if n == labelled_testlist else e for ci, g, e in entries if g in test_groups],
        )
    return root, lists


HMDB_VIDEOS = {
    "cartwheel": [
        "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi",
        "Acrobacias_cartwheel_f_cm_np1_ba_med_1.avi",
        "cart&wheel;_cartwheel_f_cm_np1_ri_med_2.avi",
        "x_cartwheel_3.avi",
    ],
    "brush_hair": [
        "April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
        "b_brush_hair_1.avi",
        "c_brush_hair_2.avi",
        "d_brush_hair_3.avi",
    ],
    "catch": ["a_catch_0.avi", "b_catch_1.avi", "c_catch_2.avi", "d_catch_3.avi"],
}
# per split, flags of the 4 videos of each class: 1 train, 2 test, 0 unused
HMDB_FLAGS = {1: [1, 1, 2, 0], 2: [2, 1, 1, 0], 3: [0, 2, 1, 1]}


def make_hmdb51(base: Path, touch_file=touch) -> tuple[Path, Path]:
    root = base / "hmdb51_org"
    lists = base / "testTrainMulti_7030_splits"
    for cls, names in HMDB_VIDEOS.items():
        for name in names:
            touch_file(root / cls / name)
        for n, flags in HMDB_FLAGS.items():
            crlf(
                lists / f"{cls}_test_split{n}.txt",
                [f"{name} {f} " for name, f in zip(names, flags, strict=True)],
            )
    return root, lists


K_ROWS = [  # label, youtube_id, start, end, split
    ("air drumming", "-3B32lodo2M", 59, 69, "train"),
    ("air drumming", "a_b_c_d_e_f", 0, 10, "train"),  # '_' inside the id
    ("abseiling", "0123456789a", 5, 15, "train"),
    ("abseiling", "missing0000", 1, 11, "train"),
    ("zumba", "zzzzzzzzzzz", 30, 40, "validate"),
    ("zumba", "yyyyyyyyyyy", 1, 11, "validate"),  # missing, and the only other zumba is in val
    ("catching fish", "nofile00000", 0, 10, "train"),  # a class whose files are all missing
]


def kname(yid: str, s: int, e: int) -> str:
    return f"{yid}_{s:06d}_{e:06d}.mp4"


def make_kinetics(base: Path, touch_file=touch) -> tuple[Path, Path]:
    root = base / "k400"
    ann = base / "annotations"
    ann.mkdir(parents=True)
    present = {"-3B32lodo2M", "a_b_c_d_e_f", "0123456789a", "zzzzzzzzzzz"}
    for label, yid, s, e, split in K_ROWS:
        if yid in present:
            where = root / "train" / label if split == "train" and label != "abseiling" else root
            touch_file(where / kname(yid, s, e))
    header = "label,youtube_id,time_start,time_end,split,is_cc\n"
    (ann / "train.csv").write_text(
        header + "".join(f'"{lb}",{y},{s},{e},{sp},0\n' for lb, y, s, e, sp in K_ROWS if sp == "train")
    )
    (ann / "validate.csv").write_text(
        header + "".join(f"{lb},{y},{s}.0,{e}.0,{sp},0\n" for lb, y, s, e, sp in K_ROWS if sp == "validate")
    )
    # an old-style test CSV: no label, no split, no is_cc column; the split comes from the file name
    touch_file(root / "test" / kname("tttttttttt1", 3, 13))
    (ann / "test.csv").write_text("youtube_id,time_start,time_end\ntttttttttt1,3,13\ntttttttttt2,0,10\n")
    return root, ann
