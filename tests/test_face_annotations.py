"""The MAFL, 300-W and AFLW readers on fixtures written in each set's published layout."""

from __future__ import annotations

import math
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.datasets.face_annotations import (
    CELEBA_LANDMARK_COLUMNS,
    W300_FULL,
    AnnotationError,
    HeadPose,
    inter_ocular_distance,
    landmark_error,
    read_300w,
    read_aflw,
    read_aflw_split,
    read_celeba_landmarks,
    read_mafl,
    read_pts,
)


def at(path: Path, line: int | None = None) -> str:
    """A ``match`` pattern for an error naming ``path`` (and ``line``)."""
    return re.escape(f"{path}:{line}:" if line is not None else str(path))


def image(path: Path, size: tuple[int, int] = (8, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 60, 30)).save(path)
    return path


# ---------------------------------------------------------------- MAFL

CELEBA_ROWS = {
    "000001.jpg": [69, 109, 106, 113, 77, 142, 73, 152, 108, 154],
    "000002.jpg": [69, 110, 107, 112, 81, 135, 70, 151, 108, 153],
    "000003.jpg": [76, 112, 104, 106, 108, 128, 74, 156, 98, 158],
    "000004.jpg": [72, 113, 108, 108, 101, 138, 71, 155, 101, 151],
}


def write_celeba(root: Path, rows: dict | None = None, train=("000001.jpg", "000003.jpg"), test=("000004.jpg",),
                 *, variant: str = "aligned", flat: bool = False, images: bool = True) -> Path:
    rows = CELEBA_ROWS if rows is None else rows
    anno_name, folder = {"aligned": ("list_landmarks_align_celeba.txt", "img_align_celeba"),
                         "wild": ("list_landmarks_celeba.txt", "img_celeba")}[variant]
    anno = root / anno_name if flat else root / "Anno" / anno_name
    anno.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{name} " + " ".join(f"{v:4d}" for v in vals) + "\n" for name, vals in rows.items())
    anno.write_text(f"{len(rows)}\n{' '.join(CELEBA_LANDMARK_COLUMNS)} \n{body}")
    lists = root if flat else root / "MAFL"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "training.txt").write_text("".join(f"{n}\n" for n in train))
    (lists / "testing.txt").write_text("".join(f"{n}\n" for n in test))
    imgs = root / folder if flat else root / "Img" / folder
    imgs.mkdir(parents=True, exist_ok=True)
    if images:
        for name in rows:
            (imgs / name).write_bytes(b"")  # the reader only checks that it exists
    return anno


def test_mafl_reads_lists_in_order_with_celeba_points(tmp_path):
    write_celeba(tmp_path)
    faces = read_mafl(tmp_path)
    assert [(f.name, f.split) for f in faces] == [("000001.jpg", "train"), ("000003.jpg", "train"),
                                                  ("000004.jpg", "test")]
    first = faces[0]
    assert first.image == (tmp_path / "Img" / "img_align_celeba" / "000001.jpg").absolute()
    assert first.points.shape == (5, 2) and first.points.dtype == np.float64
    np.testing.assert_array_equal(first.points, [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]])
    assert not first.points.flags.writeable
    assert first.pose is None and first.subset == "aligned"
    assert first.source == f"{tmp_path / 'MAFL' / 'training.txt'}:1"
    assert [f.name for f in read_mafl(tmp_path, ("test",))] == ["000004.jpg"]
    # inter-ocular distance of a 5-point face: the eye centres
    assert inter_ocular_distance(first.points) == pytest.approx(math.hypot(106 - 69, 113 - 109))


def test_mafl_flat_folder_and_wild_variant(tmp_path):
    write_celeba(tmp_path / "flat", flat=True)
    assert [f.name for f in read_mafl(tmp_path / "flat")] == ["000001.jpg", "000003.jpg", "000004.jpg"]
    write_celeba(tmp_path / "wild", variant="wild")
    faces = read_mafl(tmp_path / "wild", variant="wild")
    assert faces[0].image.parent.name == "img_celeba" and faces[0].subset == "wild"
    np.testing.assert_array_equal(faces[2].points[4], [101, 151])


def test_mafl_aligned_refuses_the_in_the_wild_annotation(tmp_path):
    write_celeba(tmp_path, variant="wild")
    with pytest.raises(AnnotationError, match=r"no list_landmarks_align_celeba\.txt.*variant='wild'"):
        read_mafl(tmp_path)


def test_celeba_landmarks_file(tmp_path):
    anno = write_celeba(tmp_path)
    index, points = read_celeba_landmarks(anno)
    assert list(index) == list(CELEBA_ROWS)
    assert points.shape == (4, 5, 2)
    np.testing.assert_array_equal(points[index["000003.jpg"]].ravel(), CELEBA_ROWS["000003.jpg"])


def _rewrite(path: Path, line: int, text: str) -> None:
    lines = path.read_text().split("\n")
    lines[line - 1] = text
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("line, text, message", [
    (1, "four", "expected the number of rows, got 'four'"),
    (1, "5", "the count says 5 rows, the file has 4"),
    (2, "lefteye_x lefteye_y righteye_x", "expected the header"),
    (4, "000002.jpg 69 110 107 x 81 135 70 151 108 153", "righteye_y 'x' is not a number"),
    (4, "000002.jpg 69 110 107 112 nan 135 70 151 108 153", "nose_x 'nan' is not a finite number"),
    (4, "000002.jpg 69 110 107 112 81 135 70 151 108", "expected an image name and 10 numbers, got 10 field"),
    (5, "000001.jpg 69 109 106 113 77 142 73 152 108 154", "listed twice (first on line 3)"),
    (4, "../000002.jpg 69 110 107 112 81 135 70 151 108 153", "is not a plain file name"),
])
def test_celeba_landmarks_malformed(tmp_path, line, text, message):
    anno = write_celeba(tmp_path)
    _rewrite(anno, line, text)
    with pytest.raises(AnnotationError, match=at(anno, line) + ".*" + re.escape(message)):
        read_mafl(tmp_path)


def test_mafl_listed_image_problems(tmp_path):
    write_celeba(tmp_path, test=("000004.jpg", "009999.jpg"))
    testing = tmp_path / "MAFL" / "testing.txt"
    with pytest.raises(AnnotationError, match=at(testing, 2) + " image '009999.jpg' is not in .*list_landmarks"):
        read_mafl(tmp_path)

    write_celeba(tmp_path, test=("000004.jpg",))
    (tmp_path / "Img" / "img_align_celeba" / "000003.jpg").unlink()
    training = tmp_path / "MAFL" / "training.txt"
    with pytest.raises(AnnotationError, match=at(training, 2) + " image '000003.jpg' does not exist"):
        read_mafl(tmp_path)
    assert len(read_mafl(tmp_path, check_files=False)) == 3

    write_celeba(tmp_path, train=("000001.jpg", "000004.jpg"), test=("000004.jpg",))
    with pytest.raises(AnnotationError, match=at(testing, 1) + ".*listed already.*training.txt:2"):
        read_mafl(tmp_path)

    write_celeba(tmp_path)
    testing.write_text("000004.jpg extra\n")
    with pytest.raises(AnnotationError, match=at(testing, 1) + " expected one image name, got 2 fields"):
        read_mafl(tmp_path)

    training.unlink()
    with pytest.raises(AnnotationError, match="no training.txt"):
        read_mafl(tmp_path)
    with pytest.raises(ValueError, match="unknown MAFL split"):
        read_mafl(tmp_path, ("val",))


# ---------------------------------------------------------------- 300-W


def face68(seed: int) -> np.ndarray:
    """68 one-based points with two decimals, as in iBUG's files."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(1.0, 200.0, size=(68, 2)), 3)


def pts_text(points: np.ndarray, *, header: str = "version: 1\nn_points:  68\n{\n", close: str = "}\n") -> str:
    return header + "".join(f"{x:.3f} {y:.3f}\n" for x, y in points) + close


def write_pts(path: Path, points: np.ndarray, suffix: str | None = ".jpg", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pts_text(points, **kw))
    if suffix:
        image(path.with_suffix(suffix))
    return path


W300_LAYOUT = {  # path -> (split, subset, image suffix)
    "lfpw/trainset/image_0001.pts": ("train", "lfpw", ".png"),
    "lfpw/testset/image_0001.pts": ("common", "lfpw", ".png"),
    "helen/trainset/100032540_1.pts": ("train", "helen", ".jpg"),
    "helen/testset/296814969_3.pts": ("common", "helen", ".jpg"),
    "afw/1051618982_1.pts": ("train", "afw", ".jpg"),
    "ibug/image_003_1.pts": ("challenging", "ibug", ".jpg"),
    "300W/01_Indoor/indoor_001.pts": ("private", "300W-indoor", ".png"),
    "300W/02_Outdoor/outdoor_001.pts": ("private", "300W-outdoor", ".png"),
}


def write_300w(root: Path) -> dict[str, np.ndarray]:
    truth = {}
    for k, (rel, (_, _, suffix)) in enumerate(W300_LAYOUT.items()):
        truth[rel] = face68(k)
        write_pts(root / rel, truth[rel], suffix)
    write_pts(root / "menpo" / "other.pts", face68(99))  # not a 300-W folder: skipped
    return truth


def test_300w_reads_every_folder_with_zero_based_points(tmp_path):
    truth = write_300w(tmp_path)
    faces = read_300w(tmp_path)
    got = {str(Path(f.source).relative_to(tmp_path)): f for f in faces}
    assert set(got) == set(W300_LAYOUT)
    for rel, (split, subset, suffix) in W300_LAYOUT.items():
        face = got[rel]
        assert (face.split, face.subset) == (split, subset), rel
        assert face.image == tmp_path / Path(rel).with_suffix(suffix)
        assert face.points.shape == (68, 2)
        np.testing.assert_allclose(face.points, truth[rel] - 1.0)  # iBUG's (1, 1) is the top-left pixel
    full = read_300w(tmp_path, W300_FULL)
    assert sorted(f.subset for f in full) == ["helen", "ibug", "lfpw"]
    assert [f.subset for f in read_300w(tmp_path, ("train",))] == ["afw", "helen", "lfpw"]


def test_read_pts_origin_and_count(tmp_path):
    pts = write_pts(tmp_path / "a.pts", np.full((68, 2), 1.0), suffix=None)
    np.testing.assert_array_equal(read_pts(pts), np.zeros((68, 2)))
    np.testing.assert_array_equal(read_pts(pts, origin=0.0), np.ones((68, 2)))
    five = tmp_path / "five.pts"
    five.write_text(pts_text(np.arange(10.0).reshape(5, 2), header="version: 1\nn_points: 5\n{\n"))
    np.testing.assert_array_equal(read_pts(five, n_points=5)[1], [1.0, 2.0])
    with pytest.raises(AnnotationError, match=at(five, 2) + " 5 points, expected 68"):
        read_pts(five)


def test_300w_inter_ocular_distance_and_error(tmp_path):
    points = np.zeros((68, 2))
    points[36] = [10.0, 20.0]
    points[45] = [50.0, 50.0]
    assert inter_ocular_distance(points) == pytest.approx(50.0)
    pred = points + [3.0, 4.0]  # every point 5 px off
    assert landmark_error(pred, points) == pytest.approx(10.0)
    pred[0] += [50.0, 0.0]  # one point 50 px further off along x: (3+50, 4) -> 53.15 px
    expected = (67 * 5.0 + math.hypot(53.0, 4.0)) / 68 / 50.0 * 100
    assert landmark_error(pred, points) == pytest.approx(expected)


@pytest.mark.parametrize("edit, line, message", [
    (lambda t: t.replace("version: 1", "version: 2"), 1, "expected 'version: 1', got 'version: 2'"),
    (lambda t: t.replace("n_points:  68", "n_points: 67"), 2, "67 points, expected 68"),
    (lambda t: t.replace("n_points:  68", "points 68"), 2, "expected 'n_points: N'"),
    (lambda t: t.replace("{\n", "", 1), 3, "expected '{', got"),
    (lambda t: t.replace("}\n", ""), 71, "no closing '}' (the file ends after 68 points)"),
    (lambda t: _line(t, 5, "x"), 5, "expected 2 numbers, got 'x'"),
    (lambda t: _line(t, 6, "12.5 abc"), 6, "y 'abc' is not a number"),
    (lambda t: _line(t, 7, "NaN 3.0"), 7, "x 'NaN' is not a finite number"),
    (lambda t: _line(t, 8, "1.0 2.0 3.0"), 8, "expected 2 numbers"),
    (lambda t: _line(t, 9, "}"), 10, "text after the closing '}' (line 9)"),
    (lambda t: t.replace("}\n", "1.0 2.0\n}\n"), 72, "more than the 68 points"),
    (lambda t: _drop(t, 10), 71, "67 points before '}', the header declares 68"),
    (lambda t: t + "pose: 1\n", 73, "text after the closing '}'"),
])
def test_pts_malformed(tmp_path, edit, line, message):
    pts = tmp_path / "ibug" / "img1.pts"
    write_pts(pts, face68(1))
    pts.write_text(edit(pts.read_text()))
    with pytest.raises(AnnotationError, match=at(pts, line) + " " + re.escape(message)):
        read_300w(tmp_path)


def _line(text: str, n: int, new: str) -> str:
    lines = text.split("\n")
    lines[n - 1] = new
    return "\n".join(lines)


def _drop(text: str, n: int) -> str:
    lines = text.split("\n")
    del lines[n - 1]
    return "\n".join(lines)


def test_300w_folder_problems(tmp_path):
    pts = write_pts(tmp_path / "afw" / "134212_1.pts", face68(2), suffix=None)
    with pytest.raises(AnnotationError, match=at(pts) + r": no image beside it \(134212_1\.jpg or \.png\)"):
        read_300w(tmp_path)
    assert read_300w(tmp_path, check_files=False)[0].image == pts.with_suffix(".jpg")
    image(pts.with_suffix(".jpg"))

    loose = write_pts(tmp_path / "lfpw" / "image_0002.pts", face68(3))
    with pytest.raises(AnnotationError, match=at(loose) + ": lfpw files must lie in lfpw/trainset/ or lfpw/testset/"):
        read_300w(tmp_path)

    empty = tmp_path / "empty"
    write_pts(empty / "other" / "x.pts", face68(4))
    with pytest.raises(AnnotationError, match="no .pts files in 300-W's folders"):
        read_300w(empty)
    with pytest.raises(ValueError, match="unknown 300-W split"):
        read_300w(tmp_path, ("test",))


def test_error_messages_are_one_line(tmp_path):
    folder = tmp_path / "odd\nname" / "ibug"
    pts = write_pts(folder / "img.pts", face68(5))
    pts.write_text(_line(pts.read_text(), 4, "x"))
    with pytest.raises(AnnotationError) as caught:
        read_300w(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert "odd\\nname" in message and message.endswith("img.pts:4: expected 2 numbers, got 'x'")


# ---------------------------------------------------------------- AFLW

# The tables and columns of AFLW's aflw.sqlite (as its toolkit, facedbsql, creates and queries them).
AFLW_SCHEMA = """
CREATE TABLE Faces (face_id INTEGER PRIMARY KEY, file_id TEXT, db_id TEXT);
CREATE TABLE FaceImages (image_id INTEGER PRIMARY KEY, db_id TEXT, file_id TEXT, filepath TEXT,
                         bw INTEGER, width INTEGER, height INTEGER);
CREATE TABLE FacePose (face_id INTEGER, roll FLOAT, pitch FLOAT, yaw FLOAT, annot_type_id INTEGER);
CREATE TABLE FaceRect (face_id INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER, annot_type_id INTEGER);
CREATE TABLE FaceMetadata (face_id INTEGER, sex TEXT, occluded INTEGER, glasses INTEGER, bw INTEGER,
                           annot_type_id INTEGER);
CREATE TABLE FeatureCoords (face_id INTEGER, feature_id INTEGER, x FLOAT, y FLOAT);
"""


def write_aflw(root: Path, *, images: bool = True) -> Path:
    """``root/aflw.sqlite`` with three faces on two images, and ``root/flickr/``."""
    db = root / "aflw.sqlite"
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.executescript(AFLW_SCHEMA)
    conn.executemany("INSERT INTO FaceImages VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (1, "flickr", "image00002.jpg", "0/image00002.jpg", 0, 640, 480),
        (2, "flickr", "image13013.jpg", "2/image13013.jpg", 0, 500, 375),
    ])
    conn.executemany("INSERT INTO Faces VALUES (?, ?, ?)", [
        (39341, "image00002.jpg", "flickr"), (39342, "image00002.jpg", "flickr"), (50123, "image13013.jpg", "flickr")])
    conn.executemany("INSERT INTO FacePose VALUES (?, ?, ?, ?, 1)", [
        (39341, -0.1, 0.25, math.pi / 4), (39342, 0.0, -math.pi / 6, -1.2)])  # 50123 has none
    conn.executemany("INSERT INTO FaceRect VALUES (?, ?, ?, ?, ?, 1)", [
        (39341, 441, 84, 102, 103), (39342, 30, 40, 50, 60), (50123, 7, 8, 90, 91)])
    conn.execute("INSERT INTO FeatureCoords VALUES (39341, 1, 450.5, 100.0)")
    conn.commit()
    conn.close()
    if images:
        image(root / "flickr" / "0" / "image00002.jpg")
        image(root / "flickr" / "2" / "image13013.jpg")
    return db


def test_aflw_faces_with_pose_in_degrees(tmp_path):
    db = write_aflw(tmp_path)
    faces = read_aflw(db)
    assert [f.face_id for f in faces] == [39341, 39342, 50123]
    first, second, third = faces
    assert first.image == (tmp_path / "flickr" / "0" / "image00002.jpg").absolute()
    assert third.image.name == "image13013.jpg"
    assert isinstance(first.pose, HeadPose)
    assert first.pose.roll == pytest.approx(-5.729578, abs=1e-6)
    assert first.pose.pitch == pytest.approx(14.323945, abs=1e-6)
    assert first.pose.yaw == pytest.approx(45.0)
    assert tuple(second.pose) == pytest.approx((0.0, -30.0, -68.754935), abs=1e-6)
    assert third.pose is None
    assert first.rect == (441.0, 84.0, 102.0, 103.0) and third.rect == (7.0, 8.0, 90.0, 91.0)
    assert all(f.split == "all" and f.subset == "flickr" and f.points.shape == (0, 2) for f in faces)


def test_aflw_split_file_by_face_id_and_image(tmp_path):
    db = write_aflw(tmp_path)
    split = tmp_path / "test_split.txt"
    split.write_text("39342\n\n2/image13013.jpg\n")
    assert read_aflw_split(split) == ["39342", "2/image13013.jpg"]
    assert [(f.face_id, f.split) for f in read_aflw(db, split_file=split)] == [
        (39341, "train"), (39342, "test"), (50123, "test")]
    split.write_text("image00002.jpg\n")  # an image's file_id: all its faces
    assert [f.split for f in read_aflw(db, split_file=split)] == ["test", "test", "train"]

    split.write_text("39342\n77777\n")
    with pytest.raises(AnnotationError, match=at(split, 2) + " '77777' is neither a face_id nor an image"):
        read_aflw(db, split_file=split)
    split.write_text("39342\n39342\n")
    with pytest.raises(AnnotationError, match=at(split, 2) + " '39342' listed twice"):
        read_aflw(db, split_file=split)


def test_aflw_image_root_and_missing_images(tmp_path):
    db = write_aflw(tmp_path / "data", images=False)
    with pytest.raises(AnnotationError, match="no image folder"):
        read_aflw(db)
    image(tmp_path / "data" / "flickr" / "0" / "image00002.jpg")
    with pytest.raises(AnnotationError, match=at(db) + r": Faces row face_id 50123: image '2/image13013\.jpg' "
                                              "does not exist"):
        read_aflw(db)
    assert len(read_aflw(db, check_files=False)) == 3
    elsewhere = tmp_path / "images"
    image(elsewhere / "0" / "image00002.jpg")
    image(elsewhere / "2" / "image13013.jpg")
    assert read_aflw(db, elsewhere)[2].image == (elsewhere / "2" / "image13013.jpg").absolute()


def test_aflw_not_a_database(tmp_path):
    bad = tmp_path / "aflw.sqlite"
    bad.write_bytes(b"this is not an sqlite file at all, just some text " * 40)
    (tmp_path / "flickr").mkdir()
    with pytest.raises(AnnotationError, match=at(bad) + ": not an SQLite database"):
        read_aflw(bad)
    with pytest.raises(AnnotationError, match="no such file"):
        read_aflw(tmp_path / "missing.sqlite", check_files=False)


def _alter(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_aflw_missing_table_or_column(tmp_path):
    db = write_aflw(tmp_path / "a")
    _alter(db, "DROP TABLE FacePose")
    with pytest.raises(AnnotationError, match=at(db) + ": no table FacePose"):
        read_aflw(db)
    db = write_aflw(tmp_path / "b")
    _alter(db, "ALTER TABLE FacePose RENAME COLUMN yaw TO yaw2")
    with pytest.raises(AnnotationError, match=at(db) + r": table FacePose lacks the column\(s\) \['yaw'\]"):
        read_aflw(db)


@pytest.mark.parametrize("sql, message", [
    ("UPDATE FacePose SET yaw = 'abc' WHERE face_id = 39342", "FacePose row face_id 39342: yaw 'abc' is not a finite"),
    ("UPDATE FacePose SET roll = NULL WHERE face_id = 39341",
     "FacePose row face_id 39341: roll 'None' is not a finite"),
    ("UPDATE FaceRect SET w = 'wide' WHERE face_id = 50123", "FaceRect row face_id 50123: w 'wide' is not a finite"),
    ("DELETE FROM FaceImages WHERE image_id = 2", "face_id 50123: no FaceImages row for file_id 'image13013.jpg'"),
    ("UPDATE FaceImages SET filepath = '../../etc/x.jpg' WHERE image_id = 1", "is not a relative path inside"),
    ("DELETE FROM Faces", "table Faces has no rows"),
])
def test_aflw_malformed_rows(tmp_path, sql, message):
    db = write_aflw(tmp_path)
    _alter(db, sql)
    with pytest.raises(AnnotationError, match=at(db) + ": .*" + re.escape(message)):
        read_aflw(db)


def test_aflw_sqlite_stores_nan_as_null_and_it_is_refused(tmp_path):
    db = write_aflw(tmp_path)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE FacePose SET pitch = ? WHERE face_id = 39341", (float("nan"),))
    conn.commit()
    conn.close()
    with pytest.raises(AnnotationError, match="pitch 'None' is not a finite number"):
        read_aflw(db)


# ---------------------------------------------------------------- scoring


def test_landmark_error_batches_and_refusals():
    true = np.array([[[0.0, 0.0], [3.0, 4.0], [1.0, 5.0], [0.0, 8.0], [3.0, 8.0]]] * 2)
    pred = true.copy()
    pred[1] += [0.5, 0.0]  # face 1: every point 0.5 px off, over an inter-ocular distance of 5
    np.testing.assert_allclose(inter_ocular_distance(true), [5.0, 5.0])
    np.testing.assert_allclose(landmark_error(pred, true), [0.0, 10.0])
    assert isinstance(landmark_error(pred[1], true[1]), float)
    with pytest.raises(ValueError, match="no inter-ocular convention for 21 points"):
        inter_ocular_distance(np.zeros((21, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        landmark_error(pred[0], true)
    with pytest.raises(ValueError, match="inter-ocular distance 0"):
        landmark_error(np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="finite"):
        landmark_error(np.full((5, 2), np.nan), true[0])
