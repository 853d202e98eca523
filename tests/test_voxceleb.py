"""VoxCeleb metadata (txt folders, zips, CSV), box conventions, identity splits, and the crop geometry."""

from __future__ import annotations

import random
import re
import zipfile

import numpy as np
import pytest

from tasks.labels.faces import crop_square, inside, inside_fraction, iou, square_around
from tasks.datasets.manifest import ManifestError
from tasks.datasets.voxceleb import (
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

    from tasks.labels.faces import FaceFinder, find_face

    img = data.astronaut()
    for kind in ("hog", "cnn"):  # the CNN (MMOD) detector of face_recognition_models; ~3 s on a CPU here
        box, found_by, overlap, _ = find_face(FaceFinder.for_thread(kind), img, (170, 70, 100, 100), 0.3)
        assert found_by == f"dlib-{kind}" and overlap > 0.6, (kind, box, overlap)
    # Nothing near a box over the sky: the metadata box is used, and said so.
    box, found_by, overlap, n = find_face(FaceFinder.for_thread("hog"), img, (400, 10, 60, 60), 0.3)
    assert (found_by, overlap, box) == ("metadata", 0.0, (400.0, 10.0, 60.0, 60.0))


# ---------------------------------------------------------------- issue 11: hostile metadata


def test_a_newline_in_a_zip_members_folder_names_is_refused(tmp_path):
    zp = tmp_path / "vox1.zip"
    body = "FRAME \tX \tY \tW \tH \n000245 \t227 \t61 \t126 \t126 \n"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("txt/id10002\n/2ogRTCEBL0p/00001\n.txt", "Reference : \t2ogRTCEBL0p\n\n" + body)
        zf.writestr("txt/id10003/2ogRTCEBL0p\x00/00001.txt", body)  # zipfile cuts the name at NUL: no .txt
        zf.writestr("txt/id10004/2ogRTCEBL0p/00001\r.txt", body)
        zf.writestr("txt/id10005/2ogRTCEBL0p\n/00001.txt", body)
        zf.writestr("txt/\x1b[2Jid/2ogRTCEBL0p/00001.txt", body)
    with pytest.raises(ManifestError) as err:
        read_voxceleb_txt(zp, convention="vox1")
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert all("not a plain token" in p or "not plain tokens" in p for p in problems)
    assert "identity 'id10002\\n'; utterance '00001\\n' are not plain tokens" in problems[1], problems
    assert all(not any(c in p for c in "\n\r\x00\x1b") for p in problems), problems


def test_the_same_utterance_twice_in_a_zip_is_refused(tmp_path):
    zp = tmp_path / "dup.zip"
    text = _txt("id10001", "1zcIwhmdeo4", [("000245", 227, 61, 126, 126)])
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("txt/id10001/1zcIwhmdeo4/00001.txt", text)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("txt/id10001/1zcIwhmdeo4/00001.txt", text)
    with pytest.raises(ManifestError, match="duplicate utterance id10001/1zcIwhmdeo4/00001"):
        read_voxceleb_txt(zp)


def _bomb(path, size, lie_to=None):
    """A zip holding one ``size``-byte member of zeros (about size / 1000 bytes on disk); ``lie_to``
    rewrites the sizes its headers declare."""
    import struct

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("txt/id10001/1zcIwhmdeo4/00001.txt", "w", force_zip64=False) as fh:
            fh.write(_txt("id10001", "1zcIwhmdeo4", [("000245", 227, 61, 126, 126)]).encode())
            chunk = b"0" * 2**20
            for _ in range(size // len(chunk)):
                fh.write(chunk)
    if lie_to is not None:
        data = bytearray(path.read_bytes())
        cd = data.rindex(b"PK\x01\x02")
        struct.pack_into("<I", data, cd + 24, lie_to)  # central directory: uncompressed size
        struct.pack_into("<I", data, 22, lie_to)  # local header
        path.write_bytes(bytes(data))
    return path


def test_an_oversized_zip_member_is_refused_from_its_header_without_reading_it(tmp_path):
    import tracemalloc

    bomb = _bomb(tmp_path / "bomb.zip", 64 * 2**20)
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match=r"\d{8} bytes uncompressed, over the 4 MiB"):
            read_voxceleb_txt(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB read"
    # A header that lies (says 1000 bytes): the read stops at the bound and the member is refused, not crashed on.
    liar = _bomb(tmp_path / "liar.zip", 64 * 2**20, lie_to=1000)
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match="cannot be read from the zip|larger than 4 MiB"):
            read_voxceleb_txt(liar)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB read"


def test_oversized_or_special_files_in_a_folder_are_refused(tmp_path):
    import os

    root = _write_tree(tmp_path / "v", VOX1)
    big = root / "txt" / "id10001" / "1zcIwhmdeo4" / "00009.txt"
    with open(big, "wb") as fh:
        fh.truncate(5 * 2**20)
    (root / "txt" / "id10001" / "1zcIwhmdeo4" / "00010.txt").mkdir()  # a folder named .txt: skipped
    os.mkfifo(root / "txt" / "id10002" / "7w0IBEWc9Qw" / "00011.txt")  # would block a plain read for good
    with pytest.raises(ManifestError) as err:
        read_voxceleb_txt(root)
    text = str(err.value)
    assert "2 problem(s)" in text and "00009.txt: larger than 4 MiB" in text and "00011.txt: not a regular file" in text


@pytest.mark.parametrize("frame, box, fragment", [
    ("nan", "227 \t61 \t126 \t126", "frame numbers must be whole numbers"),
    ("inf", "227 \t61 \t126 \t126", "frame numbers must be whole numbers"),
    ("1e300", "227 \t61 \t126 \t126", "frame numbers must be whole numbers"),
    ("12.5", "227 \t61 \t126 \t126", "frame numbers must be whole numbers"),
    ("-3", "227 \t61 \t126 \t126", "frame numbers must be whole numbers"),
    ("000245", "nan \t61 \t126 \t126", "not a finite number"),
    ("000245", "227 \t61 \tinf \t126", "not a finite number"),
    ("000245", "227 \t1e300 \t126 \t126", "not a finite number within"),
])
def test_frame_numbers_and_boxes_must_be_finite_whole_numbers(tmp_path, frame, box, fragment):
    root = tmp_path / "v"
    d = root / "txt" / "id10001" / "1zcIwhmdeo4"
    d.mkdir(parents=True)
    (d / "00001.txt").write_text(HEADER.format(identity="id10001", ref="1zcIwhmdeo4")
                                 + f"FRAME \tX \tY \tW \tH \n{frame} \t{box} \n")
    with pytest.raises(ManifestError, match=fragment):
        read_voxceleb_txt(root, convention="vox1")


@pytest.mark.parametrize("cells, fragment", [
    ("0,inf,0.4,0.2,0.25,0.45,alice", "start < end <= 86400"),
    ("0,1e300,0.4,0.2,0.25,0.45,alice", "start < end <= 86400"),
    ("nan,1,0.4,0.2,0.25,0.45,alice", "start < end"),
    ("0,4000,0.4,0.2,0.25,0.45,alice", "lasts at most 3600 s"),
    ("0,1,nan,0.2,0.25,0.45,alice", "fractions of the frame"),
    ('0,1,0.4,0.2,0.25,0.45,"alice\x00"', "identity 'alice\\x00'"),
])
def test_csv_numbers_must_be_finite_and_bounded(tmp_path, cells, fragment):
    p = tmp_path / "faces.csv"
    p.write_text("video_id,url,start,end,x,y,w,h,identity,split\n1zcIwhmdeo4,1zcIwhmdeo4," + cells + ",\n")
    with pytest.raises(ManifestError, match=re.escape(fragment)) as err:
        read_voxceleb_csv(p)
    assert "\x00" not in str(err.value)


def test_binary_metadata_names_the_file(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"video_id,url\n\xff\xfe\n")
    with pytest.raises(ManifestError, match=r"(?s)m\.csv has 1 problem.*not UTF-8 text \(byte 0xff at offset 13\)"):
        read_metadata(tmp_path / "m.csv")
    (tmp_path / "m.zip").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    with pytest.raises(ManifestError, match=r"m\.zip: neither a folder nor a readable zip"):
        read_metadata(tmp_path / "m.zip")
