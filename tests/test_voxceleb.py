"""VoxCeleb metadata (txt folders, zips, CSV), box conventions, identity splits, and the crop geometry."""

from __future__ import annotations

import random
import zipfile

import numpy as np
import pytest

from tasks.faces import crop_square, inside, inside_fraction, iou, square_around
from tasks.manifest import ManifestError
from tasks.voxceleb import (
    box_to_pixels,
    check_reference,
    identity_splits,
    read_metadata,
    read_voxceleb_csv,
    read_voxceleb_txt,
    sample_frames,
)

HEADER = "Identity  : \t{identity}\nReference : \t{ref}\nOffset    : \t1\nFV Conf   : \t17.910\t(1)\nASD Conf  : \t4.513\n\n"


def _txt(identity: str, ref: str, rows: list[tuple]) -> str:
    body = "FRAME \tX \tY \tW \tH \n" + "".join(" \t".join(str(c) for c in r) + " \n" for r in rows)
    return HEADER.format(identity=identity, ref=ref) + body


VOX1 = {  # VoxCeleb1: integer pixels of a 360-pixel-high frame
    ("id10001", "1zcIwhmdeo4", "00001"): [("000245", 227, 61, 126, 126), ("000246", 228, 61, 126, 127)],
    ("id10001", "1zcIwhmdeo4", "00002"): [("000900", 200, 50, 120, 120)],
    ("id10002", "7w0IBEWc9Qw", "00001"): [(f"{f:06d}", 100 + f % 7, 40, 130, 130) for f in range(100, 160)],
}
VOX2 = {  # VoxCeleb2: fractions of the frame
    ("id00012", "21Uxsk56VDQ", "00001"): [("000050", 0.392, 0.223, 0.253, 0.451), ("000051", 0.393, 0.223, 0.253, 0.451)],
    ("id00015", "0fijmz4vTVU", "00001"): [("000010", 0.5, 0.2, 0.25, 0.45)],
}


def _write_tree(root, data: dict):
    for (identity, ref, utt), rows in data.items():
        d = root / "txt" / identity / ref
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{utt}.txt").write_text(_txt(identity, ref, rows))
    return root


def _zip_tree(src_root, zip_path):
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted((src_root / "txt").rglob("*.txt")):
            zf.write(f, f.relative_to(src_root).as_posix())
    return zip_path


def test_vox1_folder_and_zip_read_as_pixels_of_a_360_frame(tmp_path):
    root = _write_tree(tmp_path / "vox1", VOX1)
    folder = read_voxceleb_txt(root)
    zipped = read_voxceleb_txt(_zip_tree(root, tmp_path / "vox1_txt.zip"))
    for utts in (folder, zipped):
        assert [u.key for u in utts] == [
            "id10001-1zcIwhmdeo4-00001", "id10001-1zcIwhmdeo4-00002", "id10002-7w0IBEWc9Qw-00001"]
        assert {u.units for u in utts} == {"vox1"}
        assert utts[0].boxes[0] == (245.0, 227.0, 61.0, 126.0, 126.0)
        assert utts[0].source == "https://www.youtube.com/watch?v=1zcIwhmdeo4"
    # YouTube ids may start with '-' (they do in VoxCeleb); other ids must be plain tokens
    assert check_reference("-FSZOm5JbHD") == "-FSZOm5JbHD"
    with pytest.raises(ValueError):
        check_reference("-rf")
    # a 720p download: pixels scale by 720 / 360 on both axes
    assert box_to_pixels((227, 61, 126, 126), "vox1", 1280, 720) == (454.0, 122.0, 252.0, 252.0)
    # the txt folder itself may be given too
    assert [u.key for u in read_voxceleb_txt(root / "txt")] == [u.key for u in folder]


def test_vox2_fractions_detected_and_scaled_by_the_frame(tmp_path):
    root = _write_tree(tmp_path / "vox2", VOX2)
    utts = read_voxceleb_txt(_zip_tree(root, tmp_path / "vox2_txt.zip"), source_template="/media/{id}.mp4")
    assert {u.units for u in utts} == {"vox2"}
    assert utts[0].source == "/media/21Uxsk56VDQ.mp4"
    x, y, w, h = box_to_pixels(utts[0].boxes[0][1:], "vox2", 640, 360)
    assert (round(x, 2), round(y, 2), round(w, 2), round(h, 2)) == (250.88, 80.28, 161.92, 162.36)


def test_mixed_or_undecidable_conventions_are_refused_not_guessed(tmp_path):
    mixed = _write_tree(tmp_path / "mixed", {**VOX1, **VOX2})
    with pytest.raises(ManifestError, match="mixes VoxCeleb1 pixel boxes and VoxCeleb2 fractions"):
        read_voxceleb_txt(mixed)
    ones = _write_tree(tmp_path / "ones", {("id1", "abcdefghijk", "00001"): [("000001", 0, 0, 1, 1)]})
    with pytest.raises(ManifestError, match="give the convention"):
        read_voxceleb_txt(ones)
    assert read_voxceleb_txt(ones, convention="vox2")[0].units == "vox2"
    with pytest.raises(ManifestError, match="must be fractions"):
        read_voxceleb_txt(_write_tree(tmp_path / "v1", VOX1), convention="vox2")


def test_bad_metadata_lists_every_problem(tmp_path):
    root = _write_tree(tmp_path / "bad", VOX1)
    (root / "txt" / "id10001" / "1zcIwhmdeo4" / "00003.txt").write_text(
        _txt("id10001", "1zcIwhmdeo4", [("000010", 1, 2, 3, 4), ("000009", 1, 2, 3, 4)]))
    (root / "txt" / "id10002" / "7w0IBEWc9Qw" / "00002.txt").write_text(_txt("id10002", "OTHERvideo1", [("1", 1, 2, 3, 4)]))
    (root / "txt" / "id10002" / "bad id!" ).mkdir()
    (root / "txt" / "id10002" / "bad id!" / "00001.txt").write_text(_txt("id10002", "bad id!", [("1", 1, 2, 3, 4)]))
    (root / "txt" / "id10002" / "7w0IBEWc9Qw" / "00003.txt").write_text("Identity : id10002\n")
    with pytest.raises(ManifestError) as err:
        read_voxceleb_txt(root)
    text = str(err.value)
    assert "4 problem(s)" in text
    for expected in ("frame numbers do not increase", "Reference 'OTHERvideo1' differs", "not a plain token",
                     "no 'FRAME X Y W H' header"):
        assert expected in text
    with pytest.raises(ManifestError, match="not found"):
        read_voxceleb_txt(tmp_path / "missing")
    with pytest.raises(ManifestError, match="no utterance files"):
        (tmp_path / "empty").mkdir()
        read_voxceleb_txt(tmp_path / "empty")


def test_csv_manifest(tmp_path):
    csv = tmp_path / "faces.csv"
    csv.write_text(
        "video_id,url,start,end,x,y,w,h,identity,split\n"
        "1zcIwhmdeo4,1zcIwhmdeo4,10.0,13.0,0.4,0.2,0.25,0.45,alice,\n"
        "7w0IBEWc9Qw,videos/b.mp4,0,2.5,0.1,0.1,0.3,0.5,bob,test\n"
    )
    utts = read_metadata(csv)
    assert [u.units for u in utts] == ["vox2", "vox2"]
    assert utts[0].source == "https://www.youtube.com/watch?v=1zcIwhmdeo4"
    assert utts[1].source == str((tmp_path / "videos" / "b.mp4").resolve())
    assert utts[1].split == "test"
    assert (utts[0].first_frame, utts[0].last_frame) == (250, 324)
    assert [f for f, _ in sample_frames(utts[0])] == [250, 275, 300]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "video_id,url,start,end,x,y,w,h,identity,split\n"
        "1zcIwhmdeo4,u,3,1,0.4,0.2,0.25,0.45,alice,train\n"
        "1zcIwhmdeo4,u,0,1,40,20,25,45,alice,val\n"
        "7w0IBEWc9Qw,u,0,1,0.1,0.1,0.3,0.5,bob,dev\n"
        "../etc,u,0,1,0.1,0.1,0.3,0.5,bob,\n"
    )
    with pytest.raises(ManifestError) as err:
        read_voxceleb_csv(bad)
    text = str(err.value)
    for expected in ("start < end", "fractions of the frame", "unknown split 'dev'", "not a plain token"):
        assert expected in text
    split_twice = tmp_path / "twice.csv"
    split_twice.write_text(
        "video_id,url,start,end,x,y,w,h,identity,split\n"
        "1zcIwhmdeo4,u,0,1,0.4,0.2,0.25,0.45,alice,train\n"
        "7w0IBEWc9Qw,u,0,1,0.4,0.2,0.25,0.45,alice,test\n"
    )
    with pytest.raises(ManifestError, match="more than one split"):
        read_voxceleb_csv(split_twice)
    with pytest.raises(ManifestError, match="header lacks"):
        (tmp_path / "h.csv").write_text("a,b\n1,2\n")
        read_voxceleb_csv(tmp_path / "h.csv")


def test_identity_splits_are_75_15_10_and_independent_of_order_and_machine():
    ids = [f"id1{n:04d}" for n in range(1, 21)]
    splits = identity_splits(ids)
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert identity_splits(shuffled) == splits
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 15, "val": 3, "test": 2}
    # SHA-256 of the names decides, so this holds on every machine and Python (no hash seed, no listing order).
    assert sorted(k for k, v in splits.items() if v == "test") == ["id10006", "id10017"]
    assert sorted(k for k, v in splits.items() if v == "val") == ["id10001", "id10015", "id10019"]
    assert identity_splits(["id10001", "id10002", "id10003"]) == {"id10001": "test", "id10002": "train", "id10003": "val"}
    assert identity_splits(["a", "b"]) == {"a": "train", "b": "train"}  # too few to hold any out


def test_crop_geometry():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert inside((10, 10, 10, 10), (0, 0, 100, 100)) == 1.0 and inside((95, 0, 10, 10), (0, 0, 100, 100)) == 0.5
    assert inside_fraction((-5, 0, 10, 10), 100, 100) == 0.5
    assert inside_fraction((200, 0, 10, 10), 100, 100) == 0.0
    x0, y0, side = square_around((100, 100, 50, 40), 0.4)
    assert side == 90 and (x0, y0) == (80, 75)
    frame = np.full((120, 160, 3), 200, np.uint8)
    crop = crop_square(frame, -20, -20, 80)  # a quarter of it outside the picture: black there
    assert crop.shape == (256, 256, 3)
    assert crop[:50, :50].max() == 0 and crop[200:, 200:].min() == 200


def test_both_dlib_detectors_find_the_astronaut_near_its_box():
    from skimage import data

    from tasks.faces import FaceFinder, find_face

    img = data.astronaut()
    for kind in ("hog", "cnn"):  # the CNN (MMOD) detector of face_recognition_models; ~3 s on a CPU here
        box, found_by, overlap, _ = find_face(FaceFinder.for_thread(kind), img, (170, 70, 100, 100), 0.3)
        assert found_by == f"dlib-{kind}" and overlap > 0.6, (kind, box, overlap)
    # Nothing near a box over the sky: the metadata box is used, and said so.
    box, found_by, overlap, n = find_face(FaceFinder.for_thread("hog"), img, (400, 10, 60, 60), 0.3)
    assert (found_by, overlap, box) == ("metadata", 0.0, (400.0, 10.0, 60.0, 60.0))
