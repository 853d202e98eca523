"""Faces in VoxCeleb frames: dlib detection, the square crop and 68 landmarks (the recipe in tasks.datasets.voxceleb calls them).

For every sampled frame of an utterance (one per second of its face track):

1. decode it (by its timestamp, tasks.media.decode.iter_frames) and look for faces with dlib near the metadata box (a
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

from tasks.media import decode as media

CROP = 256
N_LANDMARKS = 68

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


def redetect(images: list[bytes], detector: str = "hog") -> dict:
    """How many 256 x 256 crops dlib finds exactly one face in again (the sample set's check)."""
    finder = FaceFinder.for_thread(detector)
    found = [len(finder.detect(media.decode_image(b), 0)) for b in images]
    exactly_one = sum(1 for k in found if k == 1)
    return {"crops": len(found), "exactly_one": exactly_one, "none": sum(1 for k in found if k == 0),
            "several": sum(1 for k in found if k > 1), "rate": exactly_one / max(1, len(found))}
