"""Source layouts -> records, on small trees in the exact official layouts (files are empty: listing
does not decode; decoding is tested in test_make_shards.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.data._videos import (
    HMDB_FLAGS,
    HMDB_VIDEOS,
    K_ROWS,
    UCF_CLASSES,
    UCF_TEST_GROUPS,
    crlf,
    kname,
    make_hmdb51,
    make_kinetics,
    make_ucf101,
    touch,
)
from videossl.data.shards.sources import LAYOUTS, list_source
from videossl.errors import VideosslError


def by_split(listing) -> Counter:
    return Counter(r.split for r in listing.records)


# ----------------------------------------------------------------------------- folder
@pytest.fixture
def folder_tree(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    for cls, n in (("walk", 4), ("run", 5), ("jump", 2)):
        for i in range(n):
            touch(root / cls / f"clip{i}.mp4")
    touch(root / "run" / "sub" / "deep.avi")  # sub-folders of a class are searched too
    touch(root / "run" / "notes.txt")  # not a video
    touch(root / "run" / ".hidden.mp4")
    touch(root / "annotations" / "readme.txt")  # a folder without videos is not a class
    touch(root / "top.mp4")  # not in a class folder
    return root


def test_folder_all_to_one_split(folder_tree: Path):
    ls = list_source("folder", folder_tree)
    assert ls.classes == ["jump", "run", "walk"]
    assert len(ls.records) == 12 and ls.missing == []
    assert by_split(ls) == {"train": 12}
    assert "run/sub/deep.avi" in {r.source_id for r in ls.records}
    assert Counter(r.label_name for r in ls.records) == {"walk": 4, "run": 6, "jump": 2}
    assert by_split(list_source("folder", folder_tree, split="test")) == {"test": 12}


def test_folder_val_fraction_is_stratified_and_seeded(folder_tree: Path):
    a = list_source("folder", folder_tree, val_fraction=0.25, seed=3)
    b = list_source("folder", folder_tree, val_fraction=0.25, seed=3)
    assert a.records == b.records
    val = Counter(r.label_name for r in a.records if r.split == "val")
    # round(4*.25)=1, round(6*.25)=2 (1.5 rounds to 2), jump: 2 videos -> at least one stays in train
    assert val == {"walk": 1, "run": 2, "jump": 1}
    seeds = {
        frozenset(
            r.source_id
            for r in list_source("folder", folder_tree, val_fraction=0.25, seed=s).records
            if r.split == "val"
        )
        for s in range(6)
    }
    assert len(seeds) > 1  # the seed matters


def test_folder_empty_is_an_error(tmp_path: Path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(VideosslError, match="no videos found"):
        list_source("folder", tmp_path / "empty")


# ----------------------------------------------------------------------------- csv
def test_csv_with_header_any_order_and_relative_paths(tmp_path: Path):
    root = tmp_path / "root"
    touch(root / "a" / "1.mp4")
    touch(root / "b" / "2.mp4")
    touch(tmp_path / "lists" / "near_csv.mp4")  # relative to the CSV, not to ROOT
    touch(root / "nosplit.mp4")
    csv_path = tmp_path / "lists" / "data.csv"
    csv_path.write_text(
        "label,path,caption,split\n"
        'cat,a/1.mp4,"a cat, sitting",train\n'
        "dog,b/2.mp4,,validation\n"
        "dog,near_csv.mp4,,test\n"
        "cat,gone.mp4,,train\n"
        "cat,a/1.mp4,,holdout\n"
        "cat,nosplit.mp4,,\n"
    )
    ls = list_source("csv", root, annotations=csv_path)
    assert ls.classes == ["cat", "dog"]
    recs = {r.source_id: r for r in ls.records}
    assert recs["a/1.mp4"].caption == "a cat, sitting" and recs["a/1.mp4"].split == "train"
    assert recs["b/2.mp4"].split == "val"
    near = [r for r in ls.records if r.path.name == "near_csv.mp4"]
    assert len(near) == 1 and near[0].split == "test"
    assert recs["nosplit.mp4"].split == "train"
    reasons = dict(ls.missing)
    assert "file not found" in reasons["gone.mp4"]
    assert "unknown split 'holdout'" in reasons["a/1.mp4"]
    assert ls.num_entries == 6


def test_csv_headerless_integer_labels_and_default_csv(tmp_path: Path):
    root = tmp_path / "root"
    for i in range(4):
        touch(root / f"v{i}.mp4")
    (root / "list.csv").write_text("v0.mp4,0\nv1.mp4,2\nv2.mp4,2\nv3.mp4\n")
    ls = list_source("csv", root)  # the only CSV in ROOT
    assert ls.classes == ["0", "1", "2"]  # integer labels are the label index
    assert [r.label_name for r in ls.records] == ["0", "2", "2"]
    assert len(ls.missing) == 1 and "expected path,label" in ls.missing[0][1]


# ----------------------------------------------------------------------------- UCF101
@pytest.mark.parametrize("n", [1, 2, 3])
def test_ucf101_official_splits(tmp_path: Path, n: int):
    root, lists = make_ucf101(tmp_path)
    ls = list_source("ucf101", root, annotations=lists, split=n)
    assert ls.classes == UCF_CLASSES
    assert ls.missing == []
    assert by_split(ls) == {"train": 3 * 4 * 2, "test": 3 * 2 * 2}
    test_groups = {f"g{g:02d}" for g in UCF_TEST_GROUPS[n]}
    for r in ls.records:
        group = r.path.stem.split("_")[-2]
        assert (r.split == "test") == (group in test_groups)
        assert r.path.is_file() and r.label_name == r.source_id.split("/")[0]
    # the case quirk: the list's v_HandstandPushups_... resolved to the file v_HandStandPushups_...
    hs = [r for r in ls.records if r.label_name == "HandstandPushups"]
    assert len(hs) == 12 and all("HandStandPushups" in r.path.name for r in hs)


def test_ucf101_lists_found_next_to_root_and_bad_entries(tmp_path: Path):
    root, lists = make_ucf101(tmp_path, groups=3, clips=1)
    (root / "Archery" / "v_Archery_g01_c01.avi").unlink()  # listed, not on disk
    lines = (lists / "trainlist01.txt").read_bytes().decode().splitlines()
    lines.append("Archery/v_Archery_g09_c01.avi 1")  # label contradicts the folder
    lines.append("Bowling/v_Bowling_g09_c01.avi 4")  # class not in classInd
    crlf(lists / "trainlist01.txt", lines)
    ls = list_source("ucf101", root, split=1)  # no --annotations: ../ucfTrainTestlist
    reasons = dict(ls.missing)
    assert reasons["Archery/v_Archery_g01_c01.avi"] == "file not found"
    assert "does not match class Archery" in reasons["Archery/v_Archery_g09_c01.avi"]
    assert "not in classInd" in reasons["Bowling/v_Bowling_g09_c01.avi"]
    assert ls.num_entries == 3 * 3 + 2


def test_ucf101_bad_split_and_missing_lists(tmp_path: Path):
    root, lists = make_ucf101(tmp_path, groups=1, clips=1)
    with pytest.raises(VideosslError, match="1, 2 or 3"):
        list_source("ucf101", root, annotations=lists, split=4)
    (lists / "classInd.txt").unlink()
    with pytest.raises(VideosslError, match="classInd.txt"):
        list_source("ucf101", root, annotations=lists, split=1)


# ----------------------------------------------------------------------------- HMDB51
@pytest.mark.parametrize("n", [1, 2, 3])
def test_hmdb51_official_splits(tmp_path: Path, n: int):
    root, lists = make_hmdb51(tmp_path)
    ls = list_source("hmdb51", root, annotations=lists, split=n)
    assert ls.classes == ["brush_hair", "cartwheel", "catch"]  # alphabetical
    flags = HMDB_FLAGS[n]
    assert by_split(ls) == {"train": 3 * flags.count(1), "test": 3 * flags.count(2)}
    assert ls.unused == 3 * flags.count(0) and ls.missing == []
    for r in ls.records:
        i = HMDB_VIDEOS[r.label_name].index(r.path.name)
        assert r.split == {1: "train", 2: "test"}[flags[i]]
    assert any("(Rad)Schlag_die_Bank!" in r.source_id for r in ls.records) or n == 3


def test_hmdb51_missing_and_bad_lines(tmp_path: Path):
    root, lists = make_hmdb51(tmp_path)
    (root / "catch" / "a_catch_0.avi").unlink()  # flag 1 in split 1
    p = lists / "catch_test_split1.txt"
    crlf(p, p.read_text().splitlines() + ["weird_line_without_flag.avi", "e_catch_4.avi 7"])
    ls = list_source("hmdb51", root, split=1)  # no --annotations: ../testTrainMulti_7030_splits
    reasons = dict(ls.missing)
    assert reasons["catch/a_catch_0.avi"] == "file not found"
    assert len(ls.missing) == 3
    assert ls.num_entries + ls.unused == 3 * 4 + 2


# ----------------------------------------------------------------------------- Kinetics
def test_kinetics_folder_of_csvs(tmp_path: Path):
    root, ann = make_kinetics(tmp_path)
    ls = list_source("kinetics", root, annotations=ann)
    # labels from the CSVs (alphabetical), including a class with no video on disk
    assert ls.classes == ["abseiling", "air drumming", "catching fish", "zumba"]
    assert by_split(ls) == {"train": 3, "val": 1, "test": 1}
    missing = dict(ls.missing)
    assert set(missing) == {
        kname("missing0000", 1, 11),
        kname("yyyyyyyyyyy", 1, 11),
        kname("nofile00000", 0, 10),
        kname("tttttttttt2", 0, 10),
    }
    assert all(v == "file not found" for v in missing.values())
    recs = {r.path.name: r for r in ls.records}
    assert recs[kname("-3B32lodo2M", 59, 69)].label_name == "air drumming"
    assert recs[kname("a_b_c_d_e_f", 0, 10)].source_id == f"train/air drumming/{kname('a_b_c_d_e_f', 0, 10)}"
    assert recs[kname("tttttttttt1", 3, 13)].label_name is None
    assert ls.num_entries == len(K_ROWS) + 2


def test_kinetics_single_csv_and_duplicates(tmp_path: Path):
    root, ann = make_kinetics(tmp_path)
    p = ann / "train.csv"
    p.write_text(p.read_text() + '"air drumming",-3B32lodo2M,59,69,train,0\n')
    ls = list_source("kinetics", root, annotations=p)
    assert by_split(ls) == {"train": 3}
    assert any("duplicate clip" in why for _, why in ls.missing)
    (ann / "bad.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(VideosslError, match="youtube_id"):
        list_source("kinetics", root, annotations=ann / "bad.csv")
    with pytest.raises(VideosslError, match="--annotations"):
        list_source("kinetics", root)  # no CSV in ROOT


# ----------------------------------------------------------------------------- dispatch
def test_unknown_layout_lists_valid_ones(tmp_path: Path):
    with pytest.raises(VideosslError) as e:
        list_source("ucf102", tmp_path)
    for name in LAYOUTS:
        assert name in str(e.value)


def test_user_errors(tmp_path: Path):
    with pytest.raises(VideosslError, match="does not exist"):
        list_source("folder", tmp_path / "nope")
    with pytest.raises(VideosslError, match="official splits"):
        list_source("ucf101", tmp_path, val_fraction=0.1)
    with pytest.raises(VideosslError, match=r"\[0, 1\)"):
        list_source("folder", tmp_path, val_fraction=1.5)
    with pytest.raises(VideosslError, match="not found"):
        list_source("hmdb51", tmp_path, split=1)
