"""Faces in VoxCeleb frames: dlib detection, the square crop, 68 landmarks, and the shard rows.

For every sampled frame of an utterance (one per second of its face track):

1. decode it (decord) and look for faces with dlib near the metadata box (a
   region twice the box's size around it, upsampled once when the face is
   small): the HOG detector by default, or the CNN (MMOD) detector from
   ``face_recognition_models`` (``detector="cnn"``: slow on a CPU, meant for
   GPU machines with a CUDA build of dlib);
2. keep the detection that overlaps the metadata box best; when none
   overlaps it by at least ``min_iou`` (intersection over union), use the
   metadata box itself and record ``found_by = "metadata"``.  A CSV row's box
   is one region for the whole utterance rather than a per-frame track, so
   there the overlap is the fraction of the detection inside the region;
3. crop a square around that box, ``margin`` of its size added on every
   side (black where it leaves the frame), resize to 256 x 256 RGB, JPEG;
4. find dlib's 68 landmarks in the crop (shape predictor from
   ``face_recognition_models``), stored as x0, y0, x1, y1, ... in crop pixels.

A frame whose metadata box lies mostly (over half) outside the picture, or
past the end of the video, is skipped and counted.  An utterance where no
frame is left, or where dlib found no face in any frame, fails with that
reason instead of writing crops of background.
"""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

from tasks import media
from tasks.shards import VideoShardWriter
from tasks.voxceleb import META_FPS, box_to_pixels

CROP = 256
N_LANDMARKS = 68

SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("video_id", pa.string()),
        ("utterance", pa.string()),
        ("frame_index", pa.int32()),  # frame of the downloaded video
        ("meta_frame", pa.int32()),  # VoxCeleb's frame number (25 fps)
        ("time", pa.float64()),
        ("image", pa.binary()),  # JPEG, 256 x 256 RGB
        ("box", pa.list_(pa.float32(), 4)),  # the face box used: x, y, w, h in video pixels
        ("meta_box", pa.list_(pa.float32(), 4)),  # the metadata's box, same units
        ("landmarks", pa.list_(pa.float32(), 2 * N_LANDMARKS)),  # x0, y0, x1, y1, ... in crop pixels
        ("found_by", pa.string()),  # dlib-hog | dlib-cnn | metadata
        ("overlap", pa.float32()),  # IoU of the best detection with the metadata box (0: none);
        # for a CSV row's region box, the fraction of the detection inside it
    ]
)

_local = threading.local()


def _models():
    import face_recognition_models  # noqa: F401  (carries dlib's model files)

    return face_recognition_models


class FaceFinder:
    """dlib's detector (HOG or CNN) and its 68-point shape predictor, one set per thread."""

    def __init__(self, detector: str = "hog"):
        import dlib

        if detector not in ("hog", "cnn"):
            raise ValueError(f"unknown face detector {detector!r} (hog or cnn)")
        self.kind = detector
        models = _models()
        if detector == "hog":
            self._detect = dlib.get_frontal_face_detector()
        else:
            self._detect = dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())
        self._shape = dlib.shape_predictor(models.pose_predictor_model_location())
        self._dlib = dlib

    @classmethod
    def for_thread(cls, detector: str = "hog") -> "FaceFinder":
        cache = getattr(_local, "finders", None)
        if cache is None:
            cache = _local.finders = {}
        if detector not in cache:
            cache[detector] = cls(detector)
        return cache[detector]

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[tuple[float, float, float, float]]:
        """Face boxes ``(x, y, w, h)`` in pixels of ``rgb``."""
        img = np.ascontiguousarray(rgb)
        found = self._detect(img, upsample)
        rects = [d.rect for d in found] if self.kind == "cnn" else list(found)
        return [(r.left(), r.top(), r.width(), r.height()) for r in rects]

    def landmarks(self, rgb: np.ndarray, box) -> np.ndarray:
        """68 (x, y) points of the face in ``box`` of ``rgb``, float32 (136,)."""
        x, y, w, h = box
        rect = self._dlib.rectangle(int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h)))
        shape = self._shape(np.ascontiguousarray(rgb), rect)
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(N_LANDMARKS)], np.float32).ravel()


def _intersection(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    return iw * ih


def iou(a, b) -> float:
    inter = _intersection(a, b)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def inside(det, region) -> float:
    """The fraction of ``det``'s area inside ``region``."""
    return float(_intersection(det, region) / (det[2] * det[3])) if det[2] * det[3] > 0 else 0.0


def inside_fraction(box, width: int, height: int) -> float:
    x, y, w, h = box
    iw = max(0.0, min(x + w, width) - max(x, 0.0))
    ih = max(0.0, min(y + h, height) - max(y, 0.0))
    return float(iw * ih / (w * h)) if w > 0 and h > 0 else 0.0


def square_around(box, margin: float) -> tuple[int, int, int]:
    """``(x0, y0, side)`` of the square centred on ``box`` with ``margin`` of its size on each side."""
    x, y, w, h = box
    side = max(2, int(round(max(w, h) * (1 + 2 * margin))))
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    return x0, y0, side


def crop_square(frame: np.ndarray, x0: int, y0: int, side: int, size: int = CROP) -> np.ndarray:
    """The ``side`` x ``side`` square at ``(x0, y0)`` of ``frame`` (black outside it), resized to ``size``."""
    import cv2

    H, W = frame.shape[:2]
    out = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + side), min(H, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = frame[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_LINEAR
    return cv2.resize(out, (size, size), interpolation=interp)


def find_face(finder: FaceFinder, frame: np.ndarray, meta_box, min_iou: float, upsample: int | None = None,
              region: bool = False):
    """The best-overlapping dlib detection near ``meta_box``: ``(box, found_by, overlap, n_detections)``.

    ``region``: ``meta_box`` is an area the face moves in (overlap = the
    fraction of the detection inside it), not the face's own box (IoU).
    """
    H, W = frame.shape[:2]
    x, y, w, h = meta_box
    pad = 0 if region else max(w, h)
    rx0, ry0 = int(max(0, x - pad)), int(max(0, y - pad))
    rx1, ry1 = int(min(W, x + w + pad)), int(min(H, y + h + pad))
    if upsample is None:
        face = min(w, h) / 2 if region else max(w, h)
        upsample = 1 if face < 120 else 0  # dlib's HOG window is 80 x 80 pixels
    dets = finder.detect(frame[ry0:ry1, rx0:rx1], upsample) if rx1 > rx0 and ry1 > ry0 else []
    dets = [(dx + rx0, dy + ry0, dw, dh) for dx, dy, dw, dh in dets]
    score = inside if region else iou
    scored = sorted(((score(d, meta_box), d) for d in dets), key=lambda t: -t[0])
    best = scored[0][0] if scored else 0.0
    if scored and best >= min_iou:
        return scored[0][1], f"dlib-{finder.kind}", best, len(dets)
    return tuple(float(v) for v in meta_box), "metadata", best, len(dets)


def _frames_at(video_path: str, info, wanted: list[int]) -> dict[int, np.ndarray]:
    """The pictures of frames ``wanted`` (indices on the probe's grid), read by their timestamps.

    One ffmpeg pass from the first wanted frame to the last (it seeks there);
    a wanted frame that does not decode is absent from the result.
    """
    if not wanted:
        return {}
    want, out = set(wanted), {}
    for indices, frames in media.iter_frames(video_path, info, start=wanted[0], stop=wanted[-1] + 1, chunk=8):
        for i, frame in zip(indices.tolist(), frames):
            if i in want:
                out[i] = frame.copy()
    return out


def build_utterance(
    video_path: str,
    utt: dict,
    shards_dir: str,
    split: str,
    *,
    detector: str = "hog",
    min_iou: float = 0.3,
    margin: float = 0.4,
    per_second: float = 1.0,
    upsample: int | None = None,
    probe: dict | None = None,
) -> dict:
    """Crop one utterance's faces (see the module docstring) and write its shard part.

    ``utt`` is :class:`tasks.voxceleb.Utterance` as a plain dict (identity,
    video_id, utterance, boxes, units, key, region).  ``probe`` is the
    video's :class:`tasks.media.Probe` as a dict when the caller has it (the
    flow probes each video once for all its utterances).  Returns the counts
    for the status table.
    """
    from tasks.voxceleb import Utterance, sample_frames

    u = Utterance(utt["identity"], utt["video_id"], utt["utterance"], "", tuple(map(tuple, utt["boxes"])), utt["units"])
    info = media.Probe(**probe) if probe else media.probe(video_path)
    wanted = sample_frames(u, per_second)
    finder = FaceFinder.for_thread(detector)
    counts = {"sampled": len(wanted), "outside": 0, "past_end": 0, "undecoded": 0, "detected": 0, "fallback": 0}
    todo = []
    for meta_frame, box in wanted:
        t = meta_frame / META_FPS
        index = int(round(t * info.fps))
        if index >= info.frames:
            counts["past_end"] += 1
            continue
        px = box_to_pixels(box, u.units, info.width, info.height)
        if inside_fraction(px, info.width, info.height) < 0.5:
            counts["outside"] += 1
            continue
        todo.append((meta_frame, index, t, px))
    rows = []
    decoded = _frames_at(video_path, info, sorted({i for _, i, _, _ in todo}))
    counts["undecoded"] = sum(i not in decoded for _, i, _, _ in todo)
    for meta_frame, index, t, px in todo:
        frame = decoded.get(index)
        if frame is not None:
            face, found_by, overlap, _ = find_face(finder, frame, px, min_iou, upsample, bool(utt.get("region")))
            x0, y0, side = square_around(face, margin)
            crop = crop_square(frame, x0, y0, side)
            s = CROP / side
            in_crop = ((face[0] - x0) * s, (face[1] - y0) * s, face[2] * s, face[3] * s)
            counts["detected" if found_by != "metadata" else "fallback"] += 1
            rows.append((meta_frame, index, t, crop, face, px, finder.landmarks(crop, in_crop), found_by, overlap))
    if not rows:
        why = []
        if counts["outside"]:
            why.append(f"face box outside the picture in {counts['outside']}")
        if counts["past_end"]:
            why.append(f"past the video's end in {counts['past_end']}")
        if counts["undecoded"]:
            why.append(f"not decodable in {counts['undecoded']}")
        raise ValueError(f"no usable frame: {' and '.join(why) or 'no frames'} of {counts['sampled']} sampled frames")
    if counts["detected"] == 0:
        raise ValueError(f"dlib ({detector}) found no face near the track in any of {len(rows)} frames")

    import cv2

    n = len(rows)
    batch = pa.record_batch(
        [
            pa.array([u.identity] * n, pa.string()),
            pa.array([u.video_id] * n, pa.string()),
            pa.array([u.utterance] * n, pa.string()),
            pa.array([r[1] for r in rows], pa.int32()),
            pa.array([r[0] for r in rows], pa.int32()),
            pa.array([r[2] for r in rows], pa.float64()),
            pa.array([media.encode_image(cv2.cvtColor(r[3], cv2.COLOR_RGB2BGR), "jpeg") for r in rows], pa.binary()),
            pa.array([list(map(float, r[4])) for r in rows], pa.list_(pa.float32(), 4)),
            pa.array([list(map(float, r[5])) for r in rows], pa.list_(pa.float32(), 4)),
            pa.array([r[6].tolist() for r in rows], pa.list_(pa.float32(), 2 * N_LANDMARKS)),
            pa.array([r[7] for r in rows], pa.string()),
            pa.array([r[8] for r in rows], pa.float32()),
        ],
        schema=SCHEMA,
    )
    with VideoShardWriter(shards_dir, utt["key"], split, SCHEMA) as writer:
        writer.write(batch)
        parts = writer.commit()
    return {
        "key": utt["key"],
        "frames": n,
        "seconds": (u.last_frame - u.first_frame + 1) / META_FPS,
        **counts,
        "mean_overlap": float(np.mean([r[8] for r in rows if r[7] != "metadata"] or [0.0])),
        "expected_frames": len(todo),
        "lost_frames": counts["undecoded"],
        "lost": (f"{counts['undecoded']} of {len(todo)} sampled frames not decodable" if counts["undecoded"] else ""),
        "parts": parts,
    }


def redetect(images: list[bytes], detector: str = "hog") -> dict:
    """How many 256 x 256 crops dlib finds exactly one face in again (the sample set's check)."""
    finder = FaceFinder.for_thread(detector)
    found = [len(finder.detect(media.decode_image(b), 0)) for b in images]
    exactly_one = sum(1 for k in found if k == 1)
    return {"crops": len(found), "exactly_one": exactly_one, "none": sum(1 for k in found if k == 0),
            "several": sum(1 for k in found if k > 1), "rate": exactly_one / max(1, len(found))}
