"""Generated talking-face sample media (VoxCeleb layout): files, metadata formats,
reproducibility, faces that dlib's HOG detector finds where the metadata says, and the
per-frame truth (landmarks, pose, mouth opening) where dlib's predictor finds the face."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import zipfile
from pathlib import Path

import cv2  # noqa: F401  (before decord: decord bundles an old zlib; see tasks/__init__.py)
import numpy as np
import pytest

from tasks.samples import faces
from tasks.samples.faces import (DLIB_MIRROR, JAW_POINTS, LIP_CORNERS, MANIFEST_COLUMNS, PHOTO_INFO, PHOTO_NAMES,
                                 PHOTOS, frame_truth, make_face_samples, render_face_clip, write_voxceleb_txt)
from tests.conftest import assert_sample_video

dlib = pytest.importorskip("dlib")

IDENTITIES, UTTERANCES, SECONDS, SEED, W, H, FPS = 3, 2, 2.0, 0, 640, 360, 25


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("face_samples")
    manifest = make_face_samples(out, identities=IDENTITIES, utterances=UTTERANCES, seconds=SECONDS, seed=SEED)
    assert manifest == out / "manifest.csv"
    return out


@pytest.fixture(scope="module")
def detector():
    return dlib.get_frontal_face_detector()


@pytest.fixture(scope="module")
def predictor():
    models = pytest.importorskip("face_recognition_models")
    return dlib.shape_predictor(models.pose_predictor_model_location())


def _shape(predictor, img: np.ndarray, box) -> np.ndarray:
    """dlib's 68 points (68 x 2) for the face in ``box`` (x, y, w, h, or a dlib rectangle)."""
    if not isinstance(box, dlib.rectangle):
        x, y, w, h = box
        box = dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
    shape = predictor(np.ascontiguousarray(img), box)
    return np.array([[shape.part(k).x, shape.part(k).y] for k in range(68)], float)


def _error(points: np.ndarray, truth: np.ndarray) -> float:
    """Mean point distance over the distance of the outer eye corners (36, 45) of ``truth``."""
    return float(np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45]))


def _manifest(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        assert tuple(next(reader)) == MANIFEST_COLUMNS
        return [dict(zip(MANIFEST_COLUMNS, row)) for row in reader]


def _parse_txt(path: Path) -> tuple[dict, list[tuple]]:
    """VoxCeleb metadata: the header fields and the rows (frame, x, y, w, h) as strings."""
    lines = path.read_text().split("\n")
    assert lines[-1] == ""
    head = {}
    for line, key in zip(lines[:5], ("Identity  ", "Reference ", "Offset    ", "FV Conf   ", "ASD Conf  ")):
        k, v = line.split(": \t", 1)
        assert k == key
        head[k.strip()] = v
    assert lines[5] == ""
    assert lines[6] == "FRAME \tX \tY \tW \tH "
    rows = []
    for line in lines[7:-1]:
        assert line.endswith(" ")
        fields = line[:-1].split(" \t")
        assert len(fields) == 5 and re.fullmatch(r"\d{6}", fields[0])
        rows.append(tuple(fields))
    return head, rows


def _iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _rect(r) -> tuple[int, int, int, int]:
    return r.left(), r.top(), r.width(), r.height()


def _hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "manifest.csv":  # urls are absolute paths of this folder
                data = data.replace(str(root.resolve()).encode(), b"ROOT")
            out[p.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def test_photos_ship_with_packages_and_match_their_annotation(detector):
    assert len(PHOTOS) >= 3 and {"astronaut", "grace_hopper"} <= set(PHOTOS)
    for name in PHOTO_NAMES:
        img = PHOTOS[name]()
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        info = PHOTO_INFO[name]
        dets = detector(img, 1)
        best = max(_iou(_rect(r), info.box) for r in dets)
        assert best > 0.9, (name, [_rect(r) for r in dets], info.box)


def test_layout(samples):
    rows = _manifest(samples / "manifest.csv")
    truth = json.loads((samples / "truth.json").read_text())
    assert len(rows) == IDENTITIES * UTTERANCES == len(truth["utterances"])
    identities = sorted({r["identity"] for r in rows})
    assert identities == [f"id{10001 + i}" for i in range(IDENTITIES)]
    videos = sorted({r["video_id"] for r in rows})
    assert sorted(p.stem for p in (samples / "videos").glob("*.mp4")) == videos
    by_video = {v["video_id"]: v for v in truth["videos"]}
    txt_files = []
    for r, t in zip(rows, truth["utterances"]):
        vid = r["video_id"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", vid)
        assert Path(r["url"]).is_absolute() and Path(r["url"]) == (samples / "videos" / f"{vid}.mp4").resolve()
        assert r["split"] == ""
        assert re.fullmatch(r"\d{5}", r["utterance"])
        assert (t["video_id"], t["utterance"], t["identity"]) == (vid, r["utterance"], r["identity"])
        assert float(r["start"]) == pytest.approx(t["first_frame"] / FPS)
        assert float(r["end"]) == pytest.approx((t["last_frame"] + 1) / FPS)
        assert t["last_frame"] - t["first_frame"] + 1 == round(SECONDS * FPS)
        assert t["last_frame"] < by_video[vid]["frames"]
        x, y, w, h = (float(r[k]) for k in "xywh")
        assert 0 <= x and 0 <= y and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9 and w > 0.1 and h > 0.1
        for sub in ("txt", "txt_vox2"):
            assert (samples / sub / r["identity"] / vid / f"{r['utterance']}.txt").is_file()
        txt_files.append(f"txt/{r['identity']}/{vid}/{r['utterance']}.txt")
    # every identity has its utterances in one video (two per video), numbered 00001, 00002
    for ident in identities:
        utts = [r for r in rows if r["identity"] == ident]
        assert len({r["video_id"] for r in utts}) == 1
        assert [r["utterance"] for r in utts] == ["00001", "00002"]
        assert float(utts[1]["start"]) - float(utts[0]["end"]) >= 1.0  # a silent gap between them
    with zipfile.ZipFile(samples / "vox1.zip") as zf:
        names = zf.namelist()
        assert names == sorted(txt_files)
        for n in names:
            assert zf.read(n) == (samples / n).read_bytes()
            assert zf.getinfo(n).date_time == (1980, 1, 1, 0, 0, 0)
    for v in truth["videos"]:
        assert_sample_video(samples / "videos" / f"{v['video_id']}.mp4", v["frames"], (H, W), FPS)


def test_same_seed_same_bytes(samples, tmp_path):
    again = tmp_path / "again"
    make_face_samples(again, identities=IDENTITIES, utterances=UTTERANCES, seconds=SECONDS, seed=SEED)
    first, second = _hashes(samples), _hashes(again)
    assert len(first) == 2 * IDENTITIES * UTTERANCES + 2 * IDENTITIES + 3  # + one truth_frames file a video
    assert sum(k.startswith("truth_frames/") for k in first) == IDENTITIES
    assert first == second


def test_render_face_clip_is_deterministic():
    for mode in ("talking", "none"):
        a_frames, a_boxes = render_face_clip("astronaut", 0.4, 3, mode, width=320, height=180)
        b_frames, b_boxes = render_face_clip("astronaut", 0.4, 3, mode, width=320, height=180)
        assert np.array_equal(np.stack(list(a_frames)), np.stack(list(b_frames)))
        assert np.array_equal(a_boxes, b_boxes)
    c_frames, _ = render_face_clip("astronaut", 0.4, 4, "talking", width=320, height=180)
    a_frames, _ = render_face_clip("astronaut", 0.4, 3, "talking", width=320, height=180)
    assert not np.array_equal(next(a_frames), next(c_frames))


def test_metadata_parses_back_in_both_conventions(samples):
    truth = json.loads((samples / "truth.json").read_text())
    rows = _manifest(samples / "manifest.csv")
    for r, t in zip(rows, truth["utterances"]):
        rel = Path(r["identity"]) / r["video_id"] / f"{r['utterance']}.txt"
        head1, rows1 = _parse_txt(samples / "txt" / rel)
        head2, rows2 = _parse_txt(samples / "txt_vox2" / rel)
        assert head1 == head2
        assert head1["Identity"] == r["identity"] and head1["Reference"] == r["video_id"]
        assert re.fullmatch(r"-?\d+", head1["Offset"])
        assert re.fullmatch(r"\d+\.\d{3}\t\(1\)", head1["FV Conf"])
        assert re.fullmatch(r"\d+\.\d{3}", head1["ASD Conf"])
        frames = list(range(t["first_frame"], t["last_frame"] + 1))
        assert [int(f[0]) for f in rows1] == frames == [int(f[0]) for f in rows2]
        assert len(t["boxes"]) == len(frames)
        for f1, f2, box in zip(rows1, rows2, t["boxes"]):
            assert all(re.fullmatch(r"-?\d+", v) for v in f1[1:])  # VoxCeleb1: integer pixels
            assert all(re.fullmatch(r"-?\d+\.\d{3}", v) for v in f2[1:])  # VoxCeleb2: 3 decimals
            assert [int(v) for v in f1[1:]] == [math.floor(v * 360 / H + 0.5) for v in box]
            assert [float(v) for v in f2[1:]] == pytest.approx(
                [box[0] / W, box[1] / H, box[2] / W, box[3] / H], abs=0.0005 + 1e-9)
            x, y, w, h = box  # inside the frame while talking
            assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        b = np.array(t["boxes"])
        union = [b[:, 0].min() / W, b[:, 1].min() / H, (b[:, 0] + b[:, 2]).max() / W - b[:, 0].min() / W,
                 (b[:, 1] + b[:, 3]).max() / H - b[:, 1].min() / H]
        assert [float(r[k]) for k in "xywh"] == pytest.approx(union, abs=2e-6)
        # smooth motion: the box moves a few pixels a frame at most
        assert np.abs(np.diff(b, axis=0)).max() < 6


def test_write_voxceleb_txt_scales_to_a_360_high_frame(tmp_path):
    rows = [(245, 454.0, 122.0, 252.0, 252.0), (246, 455.0, 123.0, 251.0, 253.0)]
    p1 = write_voxceleb_txt(tmp_path / "a" / "00001.txt", "id10001", "1zcIwhmdeo4", rows, "vox1", (720, 1280))
    assert p1.read_text() == ("Identity  : \tid10001\nReference : \t1zcIwhmdeo4\nOffset    : \t1\n"
                              "FV Conf   : \t17.910\t(1)\nASD Conf  : \t4.513\n\nFRAME \tX \tY \tW \tH \n"
                              "000245 \t227 \t61 \t126 \t126 \n000246 \t228 \t62 \t126 \t127 \n")
    p2 = write_voxceleb_txt(tmp_path / "b.txt", "id00012", "21Uxsk56VDQ", rows[:1], "vox2", (720, 1280))
    assert p2.read_text().splitlines()[-1] == "000245 \t0.355 \t0.169 \t0.197 \t0.350 "
    with pytest.raises(ValueError):
        write_voxceleb_txt(tmp_path / "c.txt", "id1", "x", rows, "vox3")


def test_dlib_finds_one_face_in_the_box(samples, detector):
    import decord

    truth = json.loads((samples / "truth.json").read_text())
    hits = total = crop_hits = 0
    misses = []
    for t in truth["utterances"]:
        vr = decord.VideoReader(str(samples / "videos" / f"{t['video_id']}.mp4"))
        idx = list(range(t["first_frame"], t["last_frame"] + 1, FPS // 2))  # two frames a second
        frames = vr.get_batch(idx).asnumpy()
        for j, frame in zip(idx, frames):
            box = t["boxes"][j - t["first_frame"]]
            dets = detector(frame, 1)
            ok = len(dets) == 1 and _iou(_rect(dets[0]), box) > 0.3
            hits += ok
            total += 1
            if not ok:
                misses.append((t["video_id"], j, [_rect(d) for d in dets], box))
            # the build's view: a square crop around the box, resized to 256 x 256
            cx, cy, side = box[0] + box[2] / 2, box[1] + box[3] / 2, 1.8 * max(box[2], box[3])
            k = 256 / side
            crop = cv2.warpAffine(frame, np.array([[k, 0, 128 - k * cx], [0, k, 128 - k * cy]]), (256, 256))
            crop_hits += len(detector(crop, 1)) == 1
    assert total >= 20
    assert hits >= 0.95 * total, misses
    assert crop_hits >= 0.95 * total


def test_edge_case_clips(detector):
    seconds = 3.0
    n = int(seconds * FPS)
    for i, name in enumerate(PHOTO_NAMES):
        # no face: the same background, nothing detected, a static claimed box
        frames, boxes = render_face_clip(name, seconds, i, "none")
        frames = list(frames)
        assert len(frames) == n and boxes.shape == (n, 4) and np.all(boxes == boxes[0])
        assert all(len(detector(frames[j], 1)) == 0 for j in range(0, n, FPS))
        # the face leaves: found at first, gone (and its box past the right edge) at the end
        frames, boxes = render_face_clip(name, seconds, i, "leaves")
        frames = list(frames)
        assert len(detector(frames[0], 1)) == 1
        assert len(detector(frames[-1], 1)) == 0
        assert boxes[-1, 0] > W
        assert frames[-1].shape == (H, W, 3)
    with pytest.raises(ValueError):
        render_face_clip("astronaut", 1.0, 0, "sideways")
    with pytest.raises(KeyError):
        render_face_clip("nobody", 1.0, 0)


def test_photos_repeat_mirrored_beyond_the_third_identity(tmp_path, detector, predictor):
    import decord

    make_face_samples(tmp_path, identities=4, utterances=1, seconds=1.0, seed=7, width=320, height=180)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert [(v["photo"], v["mirrored"]) for v in truth["videos"]] == [
        ("astronaut", False), ("grace_hopper", False), ("luispedro", False), ("astronaut", True)]
    t = truth["utterances"][3]
    frame = decord.VideoReader(str(tmp_path / "videos" / f"{t['video_id']}.mp4"))[t["first_frame"]].asnumpy()
    box = t["boxes"][0]
    dets = detector(frame, 1)
    assert len(dets) == 1 and _iou(_rect(dets[0]), box) > 0.3
    # VoxCeleb1 boxes are pixels of a 360-high frame: twice the 180-high frame's
    _, rows = _parse_txt(tmp_path / "txt" / t["identity"] / t["video_id"] / "00001.txt")
    assert [int(v) for v in rows[0][1:]] == [math.floor(v * 2 + 0.5) for v in box]
    # the mirrored face's true landmarks keep dlib's image-based order: 36 is the eye corner on the image's left
    ft = frame_truth(tmp_path, t["video_id"])
    true = ft["landmarks"][t["first_frame"]]
    assert true[36, 0] < true[39, 0] < true[42, 0] < true[45, 0] and true[0, 0] < true[8, 0] < true[16, 0]
    assert true[48, 0] < true[54, 0] and true[31, 0] < true[35, 0]
    found = _shape(predictor, frame, box)
    assert _error(found, true) < 0.04  # measured 0.014 (0.013-0.016 over the clip's frames)
    assert _error(found, true[list(DLIB_MIRROR)]) > 0.3  # the photograph's own order would be far off


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_face_samples(tmp_path, identities=0)
    with pytest.raises(ValueError):
        make_face_samples(tmp_path, seconds=0.5)
    assert faces.FPS == FPS


# --------------------------------------------------------------------------- per-frame truth


def test_photo_landmarks_are_dlibs_and_agree_with_the_other_measurements(predictor):
    for name in PHOTO_NAMES:
        info = PHOTO_INFO[name]
        pts = np.array(info.landmarks, float)
        assert pts.shape == (68, 2)
        assert np.array_equal(_shape(predictor, info.load(), dlib.rectangle(
            info.box[0], info.box[1], info.box[0] + info.box[2] - 1, info.box[1] + info.box[3] - 1)), pts)
        assert np.abs(pts[60:68].mean(0) - info.mouth).max() <= 0.5
        assert round(float(np.linalg.norm(pts[54] - pts[48]))) == info.mouth_width
        assert tuple(pts[8]) == info.chin and (pts[4, 0], pts[12, 0]) == info.jaw_x


def test_mirror_index_map_matches_dlib_on_mirrored_photographs(predictor):
    assert sorted(DLIB_MIRROR) == list(range(68)) and all(DLIB_MIRROR[DLIB_MIRROR[i]] == i for i in range(68))
    assert (DLIB_MIRROR[36], DLIB_MIRROR[39], DLIB_MIRROR[48], DLIB_MIRROR[8], DLIB_MIRROR[30]) == (45, 42, 54, 8, 30)
    for name in PHOTO_NAMES:
        info = PHOTO_INFO[name]
        img = info.load()[:, ::-1]
        pw = img.shape[1]
        x, y, w, h = info.box
        found = _shape(predictor, img, dlib.rectangle(pw - x - w, y, pw - x - 1, y + h - 1))
        want = np.array(info.landmarks, float)[list(DLIB_MIRROR)]
        want[:, 0] = pw - 1 - want[:, 0]
        assert _error(found, want) < 0.05, name  # measured 0.009, 0.026, 0.012


def _carried(ft: dict, info, mirrored: bool) -> np.ndarray:
    """The photograph's 68 points carried to every frame without the jaw drop (n x 68 x 2)."""
    pts = np.array(info.landmarks, float)
    if mirrored:
        pts = pts[list(DLIB_MIRROR)]  # photograph pixels, in the order the mirrored video shows them
    yaw = np.deg2rad(ft["yaw"])[:, None]
    a, m = ft["turn_axis_x"], -1.0 if mirrored else 1.0
    x = a + (pts[None, :, 0] - a) * np.cos(yaw) + m * ft["depth"][None] * np.sin(yaw)
    y = np.broadcast_to(pts[None, :, 1], x.shape)
    if np.isfinite(ft["turn_axis_y"]):  # a set made with a pitch
        pitch, b = np.deg2rad(ft["pitch"])[:, None], ft["turn_axis_y"]
        z1 = -m * (pts[None, :, 0] - a) * np.sin(yaw) + ft["depth"][None] * np.cos(yaw)
        y = b + (y - b) * np.cos(pitch) + z1 * np.sin(pitch)
    turned = np.stack([x, y], axis=-1)
    p = np.concatenate([turned, np.ones(turned.shape[:-1] + (1,))], axis=-1) @ np.transpose(ft["homography"],
                                                                                             (0, 2, 1))
    return p[..., :2] / p[..., 2:3]


def test_frame_truth_layout_pose_and_opening(samples):
    truth = json.loads((samples / "truth.json").read_text())
    for v in truth["videos"]:
        assert v["frame_truth"] == f"truth_frames/{v['video_id']}.json.gz"
        assert (samples / v["frame_truth"]).is_file()
        ft = frame_truth(samples, v["video_id"])
        n = v["frames"]
        assert ft["landmarks"].shape == (n, 68, 2) and ft["homography"].shape == (n, 3, 3)
        assert ft["boxes"].shape == (n, 4) and np.array_equal(ft["frame"], np.arange(n))
        for key in ("roll", "yaw", "pitch", "opening", "utterance"):
            assert ft[key].shape == (n,), key
        assert np.abs(ft["roll"]).max() <= 10.0 and np.abs(ft["yaw"]).max() <= faces.YAW_DEGREES
        assert np.abs(ft["roll"]).max() > 1.0 and np.abs(ft["yaw"]).max() > 1.0  # they do move
        assert np.all(ft["pitch"] == 0.0) and np.isnan(ft["turn_axis_y"])  # made without a pitch
        assert np.all(np.abs(np.diff(ft["roll"])) < 1.0) and np.all(np.abs(np.diff(ft["yaw"])) < 2.0)
        assert np.all((0.0 <= ft["opening"]) & (ft["opening"] <= 1.0))
        assert np.all(ft["opening"][ft["utterance"] == 0] == 0.0)  # silent lead, gaps and tail: closed
        utts = [t for t in truth["utterances"] if t["video_id"] == v["video_id"]]
        assert sorted(set(ft["utterance"].tolist())) == list(range(len(utts) + 1))
        for u, t in enumerate(utts, 1):
            frames = np.flatnonzero(ft["utterance"] == u)
            assert (frames[0], frames[-1], len(frames)) == (t["first_frame"], t["last_frame"],
                                                           t["last_frame"] - t["first_frame"] + 1)
            talking = ft["opening"][frames]
            assert talking.max() > 0.4 and (talking > 0).mean() > 0.5  # syllables, short pauses between
            np.testing.assert_allclose(ft["boxes"][frames], t["boxes"], atol=0.005 + 1e-9)
        # the turn, then the homography, carry the photograph's points the jaw leaves alone (eyes, brows,
        # nose, upper lip): the recipe of the module docstring
        info = PHOTO_INFO[v["photo"]]
        still = [k for k in range(68) if k not in JAW_POINTS and k not in LIP_CORNERS]
        carried = _carried(ft, info, v["mirrored"])
        assert np.abs(carried[:, still] - ft["landmarks"][:, still]).max() < 0.006
        # the jaw drops (down the face) by at most JAW_DROP of the box's height; closed, it stays
        drop = ft["landmarks"][:, JAW_POINTS] - carried[:, JAW_POINTS]
        height = ft["boxes"][:, 3:4]
        closed = ft["opening"] == 0
        assert np.abs(drop[closed]).max() < 0.006
        assert np.linalg.norm(drop, axis=-1).max() <= faces.JAW_DROP * height.max() * 1.1
        assert np.linalg.norm(drop[:, 8], axis=-1)[ft["opening"] > 0.5].min() > 0.5  # the chin moves
        # eyes and nose inside the face box (the photograph's box through the same homography)
        x, y, w, h = (ft["boxes"][:, k:k + 1] for k in range(4))
        inner = ft["landmarks"][:, 27:48]
        assert np.all((inner[..., 0] > x) & (inner[..., 0] < x + w) & (inner[..., 1] > y) & (inner[..., 1] < y + h))


def test_a_pitched_set_nods_and_its_truth_carries_the_points(tmp_path, predictor):
    """``pitch_degrees``: the heads nod, the truth says by how much, and the file's recipe carries the points."""
    import decord

    out = tmp_path / "pitched"
    make_face_samples(out, identities=4, utterances=1, seconds=3, seed=2, pitch_degrees=10.0)
    truth = json.loads((out / "truth.json").read_text())
    for v in truth["videos"]:
        ft = frame_truth(out, v["video_id"])
        assert np.abs(ft["pitch"]).max() <= 10.0 and np.abs(ft["pitch"]).max() > 1.0
        assert np.isfinite(ft["turn_axis_y"])
        still = [k for k in range(68) if k not in JAW_POINTS and k not in LIP_CORNERS]
        carried = _carried(ft, PHOTO_INFO[v["photo"]], v["mirrored"])
        assert np.abs(carried[:, still] - ft["landmarks"][:, still]).max() < 0.006
        # the nod is in the picture: dlib's points on the most nodded frame agree with the truth
        j = int(np.argmax(np.abs(ft["pitch"])))
        frame = decord.VideoReader(str(out / "videos" / f"{v['video_id']}.mp4"))[j].asnumpy()
        assert _error(_shape(predictor, frame, ft["boxes"][j]), ft["landmarks"][j]) < 0.06, (v["photo"], j)


def test_more_motion_turns_the_heads_further_and_the_truth_still_carries_the_points(tmp_path, predictor):
    """``motion``: the same draws, the roll and the turn scaled; the points still lie where the picture has them."""
    import decord

    sets = {m: tmp_path / f"motion-{m}" for m in (1.0, 2.0)}
    for m, out in sets.items():
        make_face_samples(out, identities=2, utterances=1, seconds=2, seed=2, motion=m)
    truth = json.loads((sets[2.0] / "truth.json").read_text())
    for v in truth["videos"]:
        one, two = frame_truth(sets[1.0], v["video_id"]), frame_truth(sets[2.0], v["video_id"])
        for angle in ("roll", "yaw"):
            np.testing.assert_allclose(two[angle], 2 * one[angle], atol=0.002)  # (3 decimals each)
        assert np.abs(two["yaw"]).max() <= 2 * faces.YAW_DEGREES and np.all(two["pitch"] == 0)
        still = [k for k in range(68) if k not in JAW_POINTS and k not in LIP_CORNERS]
        carried = _carried(two, PHOTO_INFO[v["photo"]], v["mirrored"])
        assert np.abs(carried[:, still] - two["landmarks"][:, still]).max() < 0.006
        j = int(np.argmax(np.abs(two["yaw"])))  # the most turned frame: dlib agrees with the truth
        frame = decord.VideoReader(str(sets[2.0] / "videos" / f"{v['video_id']}.mp4"))[j].asnumpy()
        assert _error(_shape(predictor, frame, two["boxes"][j]), two["landmarks"][j]) < 0.06, (v["photo"], j)
    with pytest.raises(ValueError, match="motion must be in"):
        make_face_samples(tmp_path / "x", motion=3.0)


def test_true_landmarks_lie_where_dlib_finds_them(samples, detector, predictor):
    import decord

    truth = json.loads((samples / "truth.json").read_text())
    for v in truth["videos"]:
        ft = frame_truth(samples, v["video_id"])
        vr = decord.VideoReader(str(samples / "videos" / f"{v['video_id']}.mp4"))
        idx = list(range(0, v["frames"], 5))
        # and the widest-open frames of a nearly frontal face: on turned faces dlib's chin is off by as much
        # as the drop (astronaut at -11.7 deg yaw: 4.1 px from the truth, 4.5 px from the undropped points)
        opened = [int(j) for j in np.argsort(-np.where(np.abs(ft["yaw"]) < 6.0, ft["opening"], -1.0))[:4]]
        frames = dict(zip(idx + opened, vr.get_batch(idx + opened).asnumpy()))
        on_box, on_det = [], []
        for j in idx:
            true = ft["landmarks"][j]
            on_box.append(_error(_shape(predictor, frames[j], ft["boxes"][j]), true))
            if j % 10 == 0:  # dlib's own detection, as a crop's landmarks would come
                dets = detector(frames[j], 1)
                assert dets, (v["video_id"], j)
                best = max(dets, key=lambda r: _iou(_rect(r), ft["boxes"][j]))
                on_det.append(_error(_shape(predictor, frames[j], best), true))
        # measured (predictor on the carried box) per video: mean 0.018, 0.036, 0.015; worst frame 0.025-0.070.
        # The error grows with the turn (its correlation with |yaw| is 0.76-0.94): dlib's points on a turned
        # face drift towards the outline, and the sample's head is a rough relief, not a face model.  Nearly
        # frontal frames keep the bound of the flat faces before the turn (0.06).
        frontal = [e for j, e in zip(idx, on_box) if abs(ft["yaw"][j]) < 6.0]
        assert np.mean(on_box) < 0.04 and max(on_box) < 0.08, (v["photo"], on_box)
        assert frontal and max(frontal) < 0.06, (v["photo"], frontal)
        # on dlib's own boxes: median 0.011, 0.022, 0.013 before the turn, grace_hopper 0.042 with it;
        # grace_hopper's outliers (up to 0.23) are dlib fitting a detection 15 % larger than the face, the
        # truth sits on the face (looked at)
        assert np.median(on_det) < 0.05, (v["photo"], on_det)
        # the jaw drop is where the image shows it: on the widest-open frames dlib's chin and lower lip are
        # 0.9-2.0 px from the truth, 4.2-6.9 px from the same points carried without the drop (measured)
        lower = list(range(5, 12)) + list(range(55, 60)) + list(range(65, 68))
        undropped = _carried(ft, PHOTO_INFO[v["photo"]], v["mirrored"])[opened]
        for k, j in enumerate(opened):
            assert ft["opening"][j] > 0.5
            found = _shape(predictor, frames[j], ft["boxes"][j])[lower]
            assert (np.linalg.norm(found - ft["landmarks"][j][lower], axis=1).mean()
                    < 0.7 * np.linalg.norm(found - undropped[k][lower], axis=1).mean()), (v["photo"], j)


def test_frame_truth_unknown_video(samples):
    with pytest.raises(KeyError):
        frame_truth(samples, "nosuchvideo")
