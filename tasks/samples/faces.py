"""Sample talking-head media for the VoxCeleb build: real face photographs moved like speakers.

``make_face_samples`` writes a small set in VoxCeleb's published layout: one
MP4 per "YouTube video" (identity ``id10001``, ``id10002``, ...), the per-frame
face boxes of every utterance as VoxCeleb1 and VoxCeleb2 metadata text files,
``vox1.zip`` (the VoxCeleb1 ``txt/`` tree as it is distributed), a manifest CSV,
``truth.json`` and, per video, the true landmarks, pose and mouth opening of
every frame (``truth_frames/<video_id>.json.gz``; read back with
:func:`frame_truth`).  ``render_face_clip`` renders one clip for edge-case
fixtures (a face that leaves the frame; no face at all).

Photographs (:data:`PHOTOS`) are loaded from the installed packages at run
time, never copied into the repository:

* ``astronaut``: scikit-image's ``skimage.data.astronaut()`` (Eileen Collins,
  NASA, public domain), 512 x 512;
* ``grace_hopper``: matplotlib's sample data ``grace_hopper.jpg`` (Grace
  Hopper, US Navy photograph, public domain), 512 x 600;
* ``luispedro``: mahotas' demo image ``mahotas/demos/data/luispedro.jpg``
  (``mahotas.demos.load('luispedro')``, "a colour photograph"; the name is
  that of mahotas' author, Luis Pedro Coelho; mahotas is MIT-licensed),
  300 x 377.  Found by listing the image files of candidate wheels; the other
  face photographs found there (insightface's ``t1.jpg``, a TV-series still,
  and ``Tom_Hanks_54745.png``, 112 x 112; mahotas' ``lena.jpg``) were left out
  for their licences or size.

The face box and landmarks of each photograph were measured once with dlib
20.0.1 (``get_frontal_face_detector()``, upsampling 1, the highest-scoring
box; the 68-point predictor of face_recognition_models 0.3.0 on that box:
all 68 points, and from them the mouth, chin and jaw) and are written below
as constants (``Photo.landmarks``; the earlier mouth, chin, jaw_x and
mouth_width constants agree with them to the rounding).

A video is a static, smooth, face-free background (low-frequency colour
noise, soft panels and stripes) with a head-and-shoulders cut-out of the
photograph (a feathered ellipse around the face) composited on it.  Per
frame the cut-out turns by a yaw (+-20 deg, about a vertical axis through the
face: :meth:`_Head.turn`, below) and then goes through a homography photo ->
frame: translation, scale (+-12 %) and in-plane rotation (+-10 deg), each a
normalised sum of
three slow sinusoids (0.04-0.3 Hz; the centre wanders at most 12 % of the
width and 6 % of the height, at 0.04-0.2 Hz), so the motion is smooth and the
face box stays inside the frame.  While the person "talks" the jaw drops (a smooth
downward displacement of the lower lip and chin, at most 6 % of the face
height) and the gap between the lips darkens, following a syllable envelope
(3-5 syllables a second); the audio is a buzzy harmonic vowel whose loudness
follows the same envelope, silent (a -60 dB noise floor) between utterances.

The yaw is a real out-of-plane turn, not a flat photograph's foreshortening
(which an earlier version used: at 64 x 64 it moved the face by a pixel or two
and no probe, dlib's points included, could read it back).  The head gets a
relief: a paraboloid over the head (half a face width high) and a nose ridge
of Gaussian bumps on dlib's nose points; a pixel at ``x`` with relief ``z``
moves to ``cx + (x - cx) cos(yaw) + z sin(yaw)`` (orthographic, the axis
through the face box's centre on the head's outline plane).  The face's
features slide across the head while its outline stays: the nose tip moves
about 0.22 face widths at 20 deg, the far cheek narrows.  It is a rough head,
not a face model (the ears and hair move with the paraboloid; nothing is
occluded), enough to make yaw visible.

The face box of a frame is the photograph's face box, turned at the mean
relief of the eyes and nose (points 27-47) and carried through that frame's
homography (axis-aligned bounds of its four corners; the jaw warp is left
out).  Everything is drawn from ``numpy.random.default_rng`` seeded
with ``(seed, identity, video)``: the same arguments give byte-identical
files (the MP4s with the same ffmpeg build; see :mod:`tasks.samples.encode`;
the gzipped truth with the same zlib).

Per-frame truth (for landmark, pose and mouth probes):

* landmarks: the photograph's 68 dlib points, mirrored where the video is
  (x -> width - 1 - x, then re-indexed by :data:`DLIB_MIRROR` so that the
  order stays dlib's image-based one: point 36 is still the outer corner of
  the eye on the image's left, which is what dlib itself reports on the
  frame), moved by the jaw drop (jaw and lower lip with their pixels, the lip
  corners half as far, the upper lip not: :meth:`_Head.carried_landmarks`),
  then turned by the frame's yaw (:meth:`_Head.turn_points`), then through
  the frame's homography; frame pixels, dlib's convention
  (pixel centres at integers).  Against dlib's own 68 points on rendered
  frames (640 x 360, detector upsampling 1), the mean distance is 1-3.5 %
  of the outer eye corners' distance (36-45), the same closed or open;
  most of it is dlib's own wobble on resampled (and mirrored) faces;
* pose, degrees: ``roll`` the homography's in-plane rotation (positive turns
  the face clockwise on screen, image y pointing down), ``yaw`` the head's
  turn about its vertical axis (positive moves the face's front towards the
  frame's right: the face looks towards the frame's right and its image-right
  half turns away), ``pitch`` 0 unless the set was made with one
  (``pitch_degrees``: the same relief turned about the horizontal axis
  after the yaw, positive looking down; without it no pitch is
  generated).  All are relative to the photograph's own pose (luispedro's
  photograph is itself turned ~30 deg; mirroring flips that turn, not these
  angles);
* ``opening`` in [0, 1]: the syllable envelope the frame was drawn with (0
  where the mouth was drawn closed: outside utterances, between syllables,
  and below 0.001).

To carry a photograph's point to a frame by hand (the truth file has what it
takes): turn it, ``x' = a + (x - a) cos(yaw) + m * depth * sin(yaw)`` with
``a`` the file's ``turn_axis_x``, ``depth`` the point's entry of the file's
``depth`` (dlib's order, as the video shows it) and ``m`` -1 for a mirrored
video, +1 otherwise (all photograph pixels); in a set made with a pitch
(``samples faces --pitch``), then ``y' = b + (y - b) cos(pitch) + z' sin(pitch)``
with ``z' = -m (x - a) sin(yaw) + depth cos(yaw)`` and ``b`` the file's
``turn_axis_y``; then apply the frame's ``homography``.  Points the jaw moves
need the jaw drop first.

Lessons learned (dlib 20.0.1 HOG detector):

* On the astronaut photograph the detector also fires (score 0.12, upsampling
  1) on her suit below the face, which is why only a feathered ellipse around
  the head is used, never the whole photograph.
* ``luispedro`` is turned ~30 deg to one side; dlib still scores it 3.19 on
  the photograph, and the yaw added here is kept within +-12 deg.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from tasks.store.atomic import write_bytes_atomic, write_text_atomic

from .encode import encode_video

FPS = 25
FRAME_TRUTH_DIR = "truth_frames"  # per-video per-frame truth: <out_dir>/truth_frames/<video_id>.json.gz
SAMPLE_RATE = 44100
VOX1_FRAME_HEIGHT = 360  # VoxCeleb1 boxes are pixels of a 360-pixel-high frame
FIRST_IDENTITY = 10001  # id10001, id10002, ... like VoxCeleb1's development set
UTTERANCES_PER_VIDEO = 2  # an identity's utterances fill videos of at most this many
LEAD_SECONDS = 1.0  # face visible, silent, before a video's first utterance
GAP_SECONDS = 1.0  # ... between two utterances (plus up to 0.4 s, whole frames)
TAIL_SECONDS = 0.5  # ... after the last one
FACE_WIDTH_FRACTION = 0.36  # the face box is ~36 % of the frame height wide
SCALE_RANGE = 0.12
ROLL_DEGREES = 10.0
YAW_DEGREES = 20.0
# The head's relief for the yaw turn (fractions of the face box's width): a paraboloid over the head, centred a
# little below the box's centre, and a nose ridge of Gaussian bumps on dlib's nose points (27-35).
HEAD_DEPTH = 0.5  # the paraboloid's height at its centre
HEAD_AXES = (0.75, 1.05)  # its semi-axes across and down (the second a fraction of the box's height)
NOSE_HEIGHTS = {27: 0.04, 28: 0.08, 29: 0.12, 30: 0.16, 31: 0.05, 32: 0.08, 33: 0.1, 34: 0.08, 35: 0.05}
NOSE_SIGMA = 0.1
MOVE_X, MOVE_Y = 0.12, 0.06  # the face's centre wanders at most this far (fractions of width, height)
JAW_DROP = 0.06  # of the face box's height, at full mouth opening
MANIFEST_COLUMNS = ("video_id", "url", "start", "end", "x", "y", "w", "h", "identity", "split", "utterance")
# dlib's 68 points of a mirrored face: point i of the mirror image is point DLIB_MIRROR[i] of the face
# (jaw 0-16 reversed, brows 17-21 <-> 26-22, nose 27-30 kept, 31-35 reversed, eyes 36-41 <-> 45-42, 47-46,
# lips 48-54 reversed, 55-59 reversed, 60-64 reversed, 65-67 reversed): dlib's order is image-based.
DLIB_MIRROR: tuple[int, ...] = (
    *range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, *range(35, 30, -1),
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    *range(54, 47, -1), *range(59, 54, -1), *range(64, 59, -1), 67, 66, 65)
# The jaw drop moves the jaw (0-16) and the lower lip (55-59, 65-67) with the pixels they sit on, the lip
# corners (48, 54, 60, 64) half as far; the upper lip (49-53, 61-63) stays (see _Head.carried_landmarks).
JAW_POINTS: tuple[int, ...] = (*range(0, 17), *range(55, 60), *range(65, 68))
LIP_CORNERS: tuple[int, ...] = (48, 54, 60, 64)
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# --------------------------------------------------------------------------- photographs


def _astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[..., :3])


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


def _luispedro() -> np.ndarray:
    from PIL import Image

    # find_spec locates the installed package without importing it (and its C extension).
    spec = importlib.util.find_spec("mahotas")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the 'luispedro' face photograph ships with mahotas: pip install mahotas==1.4.19")
    path = Path(list(spec.submodule_search_locations)[0]) / "demos" / "data" / "luispedro.jpg"
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass(frozen=True)
class Photo:
    """A face photograph and its annotation, in pixels of the photograph.

    ``box`` is dlib's HOG face box (x, y, w, h); ``mouth`` the centre of the
    inner lips (mean of landmarks 60-67), ``mouth_width`` the corner-to-corner
    distance (48-54), ``chin`` landmark 8, ``jaw_x`` the x of landmarks 4 and
    12 (all rounded from ``landmarks``).  ``landmarks`` are dlib's 68 points
    ``(x, y)``, integer pixels, in dlib's order.  ``f0`` is the pitch (Hz) of
    the synthetic voice.
    """

    name: str
    loader: Callable[[], np.ndarray]
    box: tuple[int, int, int, int]
    mouth: tuple[int, int]
    mouth_width: int
    chin: tuple[int, int]
    jaw_x: tuple[int, int]
    f0: float
    source: str
    landmarks: tuple[tuple[int, int], ...] = ()

    def load(self) -> np.ndarray:
        return _load_photo(self.name)


# Measured once with dlib 20.0.1: get_frontal_face_detector().run(img, 1, 0), the
# highest-scoring box (scores 1.16, 1.27, 3.19), then the 68-point shape predictor of
# face_recognition_models 0.3.0 on that box: its 68 points (x, y) in pixels of the
# photograph, dlib's order (0-16 jaw, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 lips;
# image-based: 36 is the outer corner of the eye on the image's left).  mouth, chin,
# jaw_x and mouth_width are these points' (rounded) summaries; see Photo.
_LANDMARKS_ASTRONAUT = (
    (179, 104), (180, 116), (181, 127), (182, 139), (185, 150), (191, 160), (200, 168), (209, 176), (220, 178),
    (232, 177), (243, 171), (253, 163), (260, 154), (265, 143), (268, 131), (270, 120), (272, 108), (186, 94),
    (192, 88), (200, 87), (208, 89), (216, 92), (236, 93), (244, 91), (252, 91), (260, 92), (265, 99), (226, 102),
    (225, 111), (225, 119), (225, 127), (214, 131), (219, 133), (224, 134), (229, 133), (234, 132), (195, 101),
    (200, 98), (207, 98), (212, 104), (206, 104), (199, 104), (237, 106), (243, 100), (250, 100), (255, 105),
    (250, 107), (244, 107), (201, 139), (209, 139), (218, 139), (224, 141), (230, 140), (238, 140), (246, 141),
    (238, 151), (229, 155), (222, 156), (216, 155), (208, 150), (204, 141), (218, 143), (223, 144), (230, 143),
    (243, 142), (229, 150), (223, 151), (217, 150),
)
_LANDMARKS_GRACE_HOPPER = (
    (178, 203), (181, 226), (186, 248), (192, 270), (199, 291), (209, 310), (226, 323), (245, 331), (269, 333),
    (293, 329), (312, 319), (329, 304), (340, 284), (347, 262), (351, 241), (353, 218), (355, 195), (189, 188),
    (196, 172), (211, 165), (228, 165), (243, 171), (284, 168), (298, 161), (315, 161), (331, 167), (340, 181),
    (265, 188), (265, 205), (266, 221), (267, 238), (247, 246), (257, 249), (268, 252), (278, 249), (287, 246),
    (210, 195), (218, 187), (228, 187), (238, 194), (229, 195), (219, 196), (291, 192), (300, 184), (310, 184),
    (319, 190), (311, 192), (301, 193), (233, 281), (245, 274), (258, 272), (267, 274), (277, 271), (288, 273),
    (300, 277), (289, 284), (278, 287), (269, 289), (259, 288), (246, 285), (238, 279), (258, 278), (268, 279),
    (277, 278), (296, 278), (277, 278), (268, 279), (258, 279),
)
_LANDMARKS_LUISPEDRO = (
    (44, 185), (43, 205), (44, 225), (48, 246), (52, 267), (59, 289), (69, 308), (82, 324), (104, 328), (130, 323),
    (157, 311), (184, 296), (207, 277), (221, 253), (227, 226), (229, 199), (230, 172), (42, 166), (45, 153),
    (56, 146), (69, 144), (82, 146), (107, 140), (126, 132), (148, 130), (169, 136), (185, 149), (90, 163), (87, 177),
    (83, 191), (78, 206), (77, 224), (82, 228), (90, 230), (100, 225), (110, 220), (56, 179), (61, 170), (71, 167),
    (82, 172), (73, 177), (62, 180), (127, 165), (135, 156), (148, 155), (159, 160), (149, 165), (137, 166),
    (73, 265), (77, 256), (86, 249), (95, 250), (102, 246), (117, 248), (135, 254), (119, 263), (106, 269), (97, 271),
    (89, 272), (80, 271), (77, 264), (88, 258), (96, 258), (104, 256), (128, 255), (104, 258), (96, 260), (88, 260),
)
_PHOTO_LIST = (
    Photo("astronaut", _astronaut, box=(175, 76, 91, 91), mouth=(223, 146), mouth_width=45, chin=(220, 178),
          jaw_x=(185, 260), f0=205.0, source="scikit-image: skimage.data.astronaut() (NASA, public domain)",
          landmarks=_LANDMARKS_ASTRONAUT),
    Photo("grace_hopper", _grace_hopper, box=(180, 139, 187, 187), mouth=(268, 278), mouth_width=67, chin=(269, 333),
          jaw_x=(199, 340), f0=185.0,
          source="matplotlib: cbook.get_sample_data('grace_hopper.jpg') (US Navy, public domain)",
          landmarks=_LANDMARKS_GRACE_HOPPER),
    Photo("luispedro", _luispedro, box=(15, 98, 187, 187), mouth=(98, 259), mouth_width=63, chin=(104, 328),
          jaw_x=(52, 207), f0=115.0, source="mahotas (MIT): mahotas/demos/data/luispedro.jpg",
          landmarks=_LANDMARKS_LUISPEDRO),
)
PHOTOS: dict[str, Callable[[], np.ndarray]] = {p.name: p.loader for p in _PHOTO_LIST}
PHOTO_INFO: dict[str, Photo] = {p.name: p for p in _PHOTO_LIST}
PHOTO_NAMES: tuple[str, ...] = tuple(p.name for p in _PHOTO_LIST)


@functools.lru_cache(maxsize=8)
def _load_photo(name: str) -> np.ndarray:
    img = PHOTOS[name]()
    img.setflags(write=False)
    return img


# --------------------------------------------------------------------------- smooth motion


def _smooth(rng: np.random.Generator, t: np.ndarray, n: int = 3, fmin: float = 0.04, fmax: float = 0.3) -> np.ndarray:
    """A smooth signal in [-1, 1]: a sum of ``n`` sinusoids divided by the sum of their amplitudes."""
    freqs = rng.uniform(fmin, fmax, n)
    phases = rng.uniform(0.0, 2.0 * np.pi, n)
    amps = rng.uniform(0.5, 1.0, n)
    y = sum(a * np.sin(2.0 * np.pi * f * t + p) for f, p, a in zip(freqs, phases, amps))
    return y / amps.sum()


def _syllables(rng: np.random.Generator, spans: Sequence[tuple[float, float]]) -> list[tuple[float, float, float]]:
    """Syllables ``(start, duration, peak)`` filling each talking span ``(t0, t1)`` (seconds)."""
    out = []
    for t0, t1 in spans:
        t = t0 + rng.uniform(0.0, 0.1)
        while True:
            dur = rng.uniform(0.15, 0.32)
            if t + dur > t1:
                break
            out.append((t, dur, rng.uniform(0.45, 1.0)))
            t += dur + (rng.uniform(0.2, 0.45) if rng.random() < 0.12 else rng.uniform(0.0, 0.06))
    return out


def _envelope(syllables: Sequence[tuple[float, float, float]], t: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] at times ``t`` (sorted): a raised-cosine bump per syllable."""
    env = np.zeros(len(t))
    for s, d, a in syllables:
        lo, hi = np.searchsorted(t, s), np.searchsorted(t, s + d)
        env[lo:hi] = np.maximum(env[lo:hi], a * np.sin(np.pi * (t[lo:hi] - s) / d) ** 2)
    return env


def _voice(syllables, n_samples: int, sr: int, f0: float, rng: np.random.Generator) -> np.ndarray:
    """A buzzy vowel (harmonics shaped by three formants) whose loudness follows the syllables."""
    t = np.arange(n_samples) / sr
    env = _envelope(syllables, t)
    f = f0 * (1.0 + 0.06 * np.sin(2.0 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi))
              + 0.02 * np.sin(2.0 * np.pi * 5.3 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2.0 * np.pi * np.cumsum(f) / sr
    formants = np.array([rng.uniform(550, 750), rng.uniform(1100, 1700), rng.uniform(2300, 2900)])
    y = np.zeros(n_samples)
    for k in range(1, int(4500 // (f0 * 1.1)) + 1):
        fk = k * f0
        gain = np.exp(-0.5 * ((fk - formants[:, None]) / 180.0) ** 2).sum() + 0.05
        y += gain / k * np.sin(k * phase)
    y *= env
    peak = np.abs(y).max()
    if peak > 0:
        y *= 0.3 / peak
    return y + 0.001 * rng.standard_normal(n_samples)


# --------------------------------------------------------------------------- background


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A face-free room-like backdrop (float32 RGB in [0, 255]): smooth colour noise, panels, stripes."""
    base = rng.uniform(60, 200, 3)
    coarse = base + rng.normal(0.0, 25.0, (4, 6, 3))
    bg = cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(2, 5))):  # soft panels (windows, shelves, doors)
        x0, x1 = np.sort(rng.uniform(-0.1, 1.1, 2) * width)
        y0, y1 = np.sort(rng.uniform(-0.1, 1.1, 2) * height)
        soft = 2.0 + rng.uniform(0, 6)
        m = (np.clip((xx - x0) / soft, 0, 1) * np.clip((x1 - xx) / soft, 0, 1)
             * np.clip((yy - y0) / soft, 0, 1) * np.clip((y1 - yy) / soft, 0, 1))
        colour = np.clip(base + rng.normal(0.0, 40.0, 3), 10, 245).astype(np.float32)
        alpha = rng.uniform(0.3, 0.7)
        bg += (alpha * m)[..., None] * (colour - bg)
    if rng.random() < 0.6:  # vertical stripes (curtain, wallpaper)
        period = rng.uniform(18, 60)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * xx / period + rng.uniform(0, 2 * np.pi))
        bg *= (1.0 - 0.12 * stripes)[..., None]
    return np.clip(bg, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------- head cut-out and motion


class _Head:
    """A feathered head-and-shoulders cut-out of a photograph and its jaw-drop warp."""

    def __init__(self, photo: Photo, mirror: bool = False):
        img = photo.load()
        ph, pw = img.shape[:2]
        bx, by, bw, bh = photo.box
        mouth, chin, jaw = np.array(photo.mouth, float), np.array(photo.chin, float), np.array(photo.jaw_x, float)
        points = np.array(photo.landmarks, float).reshape(-1, 2)
        if mirror:
            img = img[:, ::-1]
            bx = pw - bx - bw
            mouth[0], chin[0], jaw = pw - 1 - mouth[0], pw - 1 - chin[0], np.sort(pw - 1 - jaw)
            points = points[list(DLIB_MIRROR)]  # keep dlib's image-based order (see DLIB_MIRROR)
            points[:, 0] = pw - 1 - points[:, 0]
        cx, cy = bx + bw / 2.0, by + bh / 2.0 + 0.2 * bw
        rx, ry = 1.0 * bw, 1.3 * bw
        x0, x1 = max(0, int(cx - rx) - 2), min(pw, int(math.ceil(cx + rx)) + 2)
        y0, y1 = max(0, int(cy - ry) - 2), min(ph, int(math.ceil(cy + ry)) + 2)
        rgb = img[y0:y1, x0:x1].astype(np.float32)
        h, w = rgb.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        feather = 0.08 * bw
        r = np.sqrt(((xx + x0 - cx) / rx) ** 2 + ((yy + y0 - cy) / ry) ** 2)
        alpha = np.clip((1.0 - r) * min(rx, ry) / feather, 0.0, 1.0)
        # fade out at the photograph's own edges where the ellipse runs past them
        edge = np.minimum.reduce([xx + x0, pw - 1 - (xx + x0), yy + y0, ph - 1 - (yy + y0)])
        alpha *= np.clip(edge / feather, 0.0, 1.0)
        self.rgb, self.alpha = rgb, alpha.astype(np.float32)
        self._closed: np.ndarray | None = None
        self.xx, self.yy = xx, yy
        self.origin = (x0, y0)
        # photograph pixels -> cut-out pixels (mirrored: x -> pw - 1 - x first)
        self.from_photo = (np.array([[-1.0, 0, pw - 1 - x0], [0, 1, -y0], [0, 0, 1]]) if mirror
                           else np.array([[1.0, 0, -x0], [0, 1, -y0], [0, 0, 1]]))
        self.landmarks = points - (x0, y0)  # dlib's 68 points of the photograph, in cut-out pixels
        self.centre = np.array([bx + bw / 2.0 - x0, by + bh / 2.0 - y0])  # the face box's centre, cut-out pixels
        self._relief = (self.centre[0], self.centre[1] + 0.1 * bh, HEAD_AXES[0] * bw, HEAD_AXES[1] * bh,
                        HEAD_DEPTH * bw, [(self.landmarks[k], h * bw) for k, h in NOSE_HEIGHTS.items()],
                        NOSE_SIGMA * bw)
        self.depth = self.depth_at(xx, yy).astype(np.float32)
        self.box = np.array([bx - x0, by - y0, bw, bh], float)  # in cut-out pixels
        self.mouth = mouth - (x0, y0)
        self.mouth_width = float(photo.mouth_width)
        self.drop = JAW_DROP * bh
        # jaw weight: 0 above the mouth, 1 from just below it to the chin, fading on the neck;
        # across, 1 between the jaw corners, fading at the cheeks.
        mx, my = self.mouth
        jl, jr = jaw - x0
        self._jaw_args = (my, bh, chin[1] - y0, jl, jr)
        self.jaw = self.jaw_weight(xx, yy).astype(np.float32)
        # the mouth's neighbourhood, where the lips part (a small window keeps it cheap)
        r_x, r_y = int(0.6 * self.mouth_width) + 2, int(self.drop + 0.2 * self.mouth_width) + 2
        self.mouth_win = (max(0, int(mx) - r_x), min(w, int(mx) + r_x + 1),
                          max(0, int(my) - r_y), min(h, int(my) + 2 * r_y + 1))

    def depth_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The head's relief (towards the camera, cut-out pixels) at cut-out pixels ``(x, y)``: 0 at its outline.

        A paraboloid over the head (:data:`HEAD_DEPTH`, :data:`HEAD_AXES`) plus
        the nose (:data:`NOSE_HEIGHTS`, Gaussian bumps of :data:`NOSE_SIGMA`).
        Its steepest slope is about 1.3 (the paraboloid's rim), so the turn's
        inverse (:meth:`turn`) is a contraction for every yaw up to
        :data:`YAW_DEGREES` (|slope x tan(yaw)| < 0.5).
        """
        cx, cy, ax, ay, height, nose, sigma = self._relief
        z = height * np.maximum(0.0, 1.0 - ((x - cx) / ax) ** 2 - ((y - cy) / ay) ** 2)
        for (px, py), h in nose:
            z = z + h * np.exp(-0.5 * ((x - px) ** 2 + (y - py) ** 2) / sigma ** 2)
        return z

    def turn_points(self, points: np.ndarray, yaw: np.ndarray, pitch: np.ndarray | None = None) -> np.ndarray:
        """Cut-out points (n x k x 2) where :meth:`turn` shows them at ``yaw`` and ``pitch`` (n,, radians).

        The forward turn (orthographic; ``(cx, cy)`` the face box's centre, on
        the head's outline plane): first the yaw about the vertical axis,
        ``x' = cx + (x - cx) cos(yaw) + z sin(yaw)`` with ``z = depth(x, y)``
        and the relief after it ``z' = -(x - cx) sin(yaw) + z cos(yaw)``; then
        the pitch about the horizontal axis, ``y' = cy + (y - cy) cos(pitch)
        + z' sin(pitch)`` (positive: the face looks down).  Without a pitch
        ``y' = y``.
        """
        pts = np.asarray(points, float)
        shape = (-1, *([1] * (pts.ndim - 2)))
        yaw = np.asarray(yaw, float).reshape(shape)
        z = self.depth_at(pts[..., 0], pts[..., 1])
        out = pts.copy()
        out[..., 0] = self.centre[0] + (pts[..., 0] - self.centre[0]) * np.cos(yaw) + z * np.sin(yaw)
        if pitch is not None and np.any(np.asarray(pitch) != 0):
            pitch = np.asarray(pitch, float).reshape(shape)
            z1 = -(pts[..., 0] - self.centre[0]) * np.sin(yaw) + z * np.cos(yaw)
            out[..., 1] = self.centre[1] + (pts[..., 1] - self.centre[1]) * np.cos(pitch) + z1 * np.sin(pitch)
        return out

    def turn(self, patch: np.ndarray, yaw: float, pitch: float = 0.0) -> np.ndarray:
        """The cut-out ``patch`` (h x w x c) turned by ``yaw`` radians about the head's vertical axis
        (and, given a ``pitch``, then about its horizontal axis: :meth:`turn_points`).

        Each output pixel ``x'`` shows the patch's pixel ``x`` with
        ``x' = cx + (x - cx) cos + depth(x, y) sin`` (:meth:`turn_points`),
        found by fixed-point iteration ``x <- cx + (x' - cx - depth(x, y) sin) / cos``
        (a contraction: see :meth:`depth_at`; 12 steps leave well under 0.01
        pixel).  With a pitch, ``x`` and ``y`` are iterated together (16
        steps), inverting both turns of :meth:`turn_points`.  The depth map is
        sampled bilinearly by ``cv2.remap``.
        """
        if pitch:
            return self._turn_both(patch, yaw, pitch)
        if abs(yaw) < 1e-9:
            return patch
        c, sn = math.cos(yaw), math.sin(yaw)
        cx = float(self.centre[0])
        x = self.xx.copy()
        for _ in range(12):
            z = cv2.remap(self.depth, x, self.yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            x = (cx + (self.xx - cx - z * sn) / c).astype(np.float32)
        return cv2.remap(patch, x, self.yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def _turn_both(self, patch: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
        cyaw, syaw, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        cx, cy = float(self.centre[0]), float(self.centre[1])
        x, y = self.xx.copy(), self.yy.copy()
        for _ in range(16):
            z = cv2.remap(self.depth, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            x = (cx + (self.xx - cx - z * syaw) / cyaw).astype(np.float32)
            z1 = -(x - cx) * syaw + z * cyaw
            y = (cy + (self.yy - cy - z1 * sp) / cp).astype(np.float32)
        return cv2.remap(patch, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def jaw_weight(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The jaw drop's weight in [0, 1] at cut-out pixels ``(x, y)`` (arrays of one shape)."""
        my, bh, chin_y, jl, jr = self._jaw_args
        wy = np.clip((y - (my - 0.015 * bh)) / (0.05 * bh), 0, 1)
        wy *= np.clip(1.0 - (y - chin_y) / (0.35 * bh), 0, 1)
        half = max(8.0, (jr - jl) / 2.0)
        wx = np.exp(-(((x - (jl + jr) / 2.0) / half) ** 4))
        return wy * wx

    def carried_landmarks(self, openings: np.ndarray) -> np.ndarray:
        """The 68 landmarks (n x 68 x 2, cut-out pixels) where :meth:`patch` shows them at each opening.

        The warp shows at ``(x, y')`` the pixel of ``(x, y' - d * jaw(x, y'))``
        (``d = drop * opening``), so a point at ``(x, y)`` appears at the
        ``y'`` in ``[y, y + d]`` with ``y' - d * jaw(x, y') = y`` (x does not
        change).  That map is no contraction (the weight's ramp below the
        mouth rises by 1 over 5 % of the box's height and the drop reaches
        6 %, so near full opening the warp folds a sliver of upper lip over
        the ramp), so ``y'`` is found by bisection on ``[y, y + d]`` (40
        halvings: to within 1e-10 pixel), not by fixed-point iteration.  A
        point past the ramp's start has a single root; a point whose weight
        is 0 stays put (it is its own root, the one on the unmoved side of a
        fold).

        The points of :data:`JAW_POINTS` (jaw, lower lip) go where the warp
        takes their pixels; the lip corners (:data:`LIP_CORNERS`) half as
        far; all others stay, the upper lip included although its inner edge
        (61-63) lies on the warp's ramp in closed-mouth photographs: dlib
        puts the upper lip above the darkened gap and the corners between
        the two lips (measured on rendered frames at openings 0.7-1, error
        over the outer eye corners' distance: 61-63 moved by the warp 5-9 %,
        unmoved 1-1.5 %; the corners moved half-way matched dlib as well as
        or better than unmoved or fully moved, on every photograph).
        """
        op = np.asarray(openings, float)
        n = len(op)
        d = np.where(op > 1e-3, self.drop * op, 0.0)[:, None]  # patch() draws openings <= 1e-3 closed
        idx = list(JAW_POINTS) + list(LIP_CORNERS)
        x = np.broadcast_to(self.landmarks[idx, 0], (n, len(idx)))
        y = np.broadcast_to(self.landmarks[idx, 1], (n, len(idx)))
        lo, hi = y.copy(), y + d
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            short = mid - d * self.jaw_weight(x, mid) < y  # the root lies past mid (larger y)
            lo, hi = np.where(short, mid, lo), np.where(short, hi, mid)
        moved = (d > 0) & (self.jaw_weight(x, y) > 0)
        out = np.broadcast_to(self.landmarks, (n, *self.landmarks.shape)).copy()
        warped = np.where(moved, 0.5 * (lo + hi), y)
        k = len(JAW_POINTS)
        warped[:, k:] = 0.5 * (warped[:, k:] + y[:, k:])  # the corners: half-way
        out[:, idx, 1] = warped
        return out

    def patch(self, opening: float) -> np.ndarray:
        """RGBA cut-out (float32, RGB premultiplied by alpha) with the mouth ``opening`` in [0, 1]."""
        if opening <= 1e-3:
            if self._closed is None:
                self._closed = np.dstack([self.rgb * self.alpha[..., None], self.alpha])
            return self._closed
        d = self.drop * opening
        src = np.dstack([self.rgb, self.alpha])
        mapy = self.yy - d * self.jaw
        out = cv2.remap(src, self.xx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # darken the opening between the lips
        a0, a1, b0, b1 = self.mouth_win
        mx, my = self.mouth
        sx, sy = 0.32 * self.mouth_width, max(1.0, 0.5 * d)
        wx = self.xx[b0:b1, a0:a1]
        wy = self.yy[b0:b1, a0:a1]
        g = np.exp(-0.5 * (((wx - mx) / sx) ** 2 + ((wy - (my + 0.5 * d)) / sy) ** 2)) ** 2
        out[b0:b1, a0:a1, :3] *= (1.0 - 0.6 * min(1.0, opening) * g)[..., None]
        out[..., :3] *= out[..., 3:4]
        return out


def _homographies(head: _Head, n: int, rng: np.random.Generator, width: int, height: int,
                  leave_from: float | None = None,
                  pitch_degrees: float = 0.0, motion: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame homographies cut-out -> frame (n x 3 x 3), face boxes (n x 4: x, y, w, h, frame pixels)
    and pose (n x 3: roll, yaw, pitch in degrees; the pitch is drawn last, and only when
    ``pitch_degrees`` is given, so that sets without one stay byte for byte what they were).
    ``motion`` scales the roll's and the yaw's amplitudes (``ROLL_DEGREES``, ``YAW_DEGREES``); 1 draws
    what sets made before it drew.

    The homography is the planar part (scale, roll, translation); the yaw is
    the head's turn (:meth:`_Head.turn`), applied to the cut-out before it.
    The box is the photograph's face box turned at the mean depth of the
    eyes and nose (points 27-47: where a tracker would put it, on the face
    rather than on the head's outline) and carried through the homography.

    The face box stays inside the frame (a margin of 4 % of the width) unless
    ``leave_from`` (a fraction of the clip) is given, from which the head
    slides out to the right until none of it is left in the frame.
    """
    t = np.arange(n) / FPS
    bx, by, bw, bh = head.box
    fcx, fcy = bx + bw / 2.0, by + bh / 2.0
    s = FACE_WIDTH_FRACTION * height / bw * (1.0 + SCALE_RANGE * _smooth(rng, t))
    roll = np.deg2rad(ROLL_DEGREES * motion) * _smooth(rng, t)
    yaw = np.deg2rad(YAW_DEGREES * motion) * _smooth(rng, t)
    ux, uy = _smooth(rng, t, fmax=0.2), _smooth(rng, t, fmax=0.2)
    pitch = np.deg2rad(pitch_degrees) * _smooth(rng, t) if pitch_degrees else np.zeros(n)
    z_face = float(head.depth_at(head.landmarks[27:48, 0], head.landmarks[27:48, 1]).mean())

    def local(i: int) -> np.ndarray:
        c, sn = math.cos(roll[i]), math.sin(roll[i])
        rot = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1]])
        sc = np.diag([s[i], s[i], 1.0])
        centre = np.array([[1, 0, -fcx], [0, 1, -fcy], [0, 0, 1]])
        return sc @ rot @ centre

    def turned(i: int) -> np.ndarray:  # the face box's corners after the turn (see the docstring)
        c, sn = math.cos(yaw[i]), math.sin(yaw[i])
        x = fcx + (np.array([bx, bx + bw, bx + bw, bx]) - fcx) * c + z_face * sn
        y = np.array([by, by, by + bh, by + bh], float)
        if pitch[i]:
            z1 = -(np.array([bx, bx + bw, bx + bw, bx]) - fcx) * sn + z_face * c
            y = fcy + (y - fcy) * math.cos(pitch[i]) + z1 * math.sin(pitch[i])
        return np.c_[x, y]

    loc = [local(i) for i in range(n)]
    ext = np.array([_box_of(loc[i], turned(i)) for i in range(n)])  # boxes around the origin
    x_lo, x_hi = ext[:, 0].min(), (ext[:, 0] + ext[:, 2]).max()
    y_lo, y_hi = ext[:, 1].min(), (ext[:, 1] + ext[:, 3]).max()
    margin = 0.04 * width
    ax = min(MOVE_X * width, max(0.0, 0.5 * width - margin - max(-x_lo, x_hi)))
    ay = min(MOVE_Y * height, max(0.0, 0.47 * height - margin - max(-y_lo, y_hi)))
    cx = 0.5 * width + ax * ux
    cy = 0.47 * height + ay * uy
    if leave_from is not None:
        u = np.clip((t / max(t[-1], 1e-9) - leave_from) / (0.85 - leave_from), 0.0, 1.0)
        ease = u * u * (3 - 2 * u)
        hh, hw = head.alpha.shape
        reach = s.max() * math.hypot(hw, hh) * 1.2  # past any corner of the cut-out
        cx = cx + ease * (width - cx + reach)
    hs = np.empty((n, 3, 3))
    boxes = np.empty((n, 4))
    for i in range(n):
        hs[i] = np.array([[1, 0, cx[i]], [0, 1, cy[i]], [0, 0, 1]]) @ loc[i]
        boxes[i] = _box_of(hs[i], turned(i))
    return hs, boxes, np.rad2deg(np.c_[roll, yaw, pitch])


def _carry(hs: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (n x k x 2) through per-frame homographies ``hs`` (n x 3 x 3)."""
    p = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1) @ np.transpose(hs, (0, 2, 1))
    return p[..., :2] / p[..., 2:3]


def _box_of(h: np.ndarray, corners: np.ndarray) -> tuple[float, float, float, float]:
    p = np.c_[corners, np.ones(len(corners))] @ h.T
    p = p[:, :2] / p[:, 2:3]
    x0, y0 = p.min(0)
    x1, y1 = p.max(0)
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _frames(bg: np.ndarray, head: _Head | None, hs: np.ndarray, opening: np.ndarray,
            yaw: np.ndarray, pitch: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Rendered frames: the head's patch at each opening, turned by each ``yaw`` (and ``pitch``; degrees),
    through each homography."""
    height, width = bg.shape[:2]
    bg_u8 = np.clip(bg + 0.5, 0, 255).astype(np.uint8)
    for i in range(len(hs)):
        if head is None:
            yield bg_u8.copy()
            continue
        patch = head.turn(head.patch(float(opening[i])), math.radians(float(yaw[i])),
                          math.radians(float(pitch[i])) if pitch is not None else 0.0)
        fg = cv2.warpPerspective(patch, hs[i], (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
        out = fg[..., :3] + bg * (1.0 - fg[..., 3:4])
        yield np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % (1 << 63), *keys])


def render_face_clip(photo_name: str, seconds: float, seed: int, mode: str = "talking",
                     width: int = 640, height: int = 360) -> tuple[Iterator[np.ndarray], np.ndarray]:
    """One clip of ``seconds`` at 25 fps: ``(frames, boxes)``.

    ``frames`` is an iterator of ``height`` x ``width`` x 3 uint8 RGB frames
    (rendered lazily; pass it to :func:`encode_video` or ``np.stack(list(...))``),
    ``boxes`` an (n, 4) float array of face boxes x, y, w, h in pixels of the
    frame.  Modes:

    * ``"talking"``: the face talks through the whole clip and its box stays
      inside the frame;
    * ``"leaves"``: as "talking", but from the middle of the clip the head
      slides out to the right and is entirely outside the frame from 85 % of
      the clip on; ``boxes`` are the true (unclipped) boxes, so they run past
      the frame's right edge;
    * ``"none"``: the same background (same seed) with no face; ``boxes`` are
      what a tracker would have claimed: a static box of the usual face size
      in the middle of the frame.
    """
    if photo_name not in PHOTOS:
        raise KeyError(f"unknown photo {photo_name!r}; known: {', '.join(PHOTO_NAMES)}")
    if mode not in ("talking", "leaves", "none"):
        raise ValueError(f"mode must be 'talking', 'leaves' or 'none', not {mode!r}")
    n = int(round(seconds * FPS))
    if n < 1:
        raise ValueError("seconds must give at least one frame")
    rng = _rng(seed, 1_000_003, PHOTO_NAMES.index(photo_name))
    bg = _background(rng, width, height)
    head = _Head(PHOTO_INFO[photo_name])
    hs, boxes, pose = _homographies(head, n, rng, width, height, leave_from=0.5 if mode == "leaves" else None)
    opening = _envelope(_syllables(rng, [(0.0, n / FPS)]), np.arange(n) / FPS)
    if mode == "none":
        side = FACE_WIDTH_FRACTION * height
        boxes = np.tile([(width - side) / 2.0, (height - side) / 2.0, side, side], (n, 1))
        return _frames(bg, None, hs, opening, pose[:, 1]), boxes
    return _frames(bg, head, hs, opening, pose[:, 1]), boxes


# --------------------------------------------------------------------------- per-frame truth


def _rounded(a, decimals: int) -> list:
    return (np.round(np.asarray(a, float), decimals) + 0.0).tolist()  # + 0.0: no "-0.0"


def _write_frame_truth(path: Path, head: _Head, hs: np.ndarray, boxes: np.ndarray, pose: np.ndarray,
                       opening: np.ndarray, spans: Sequence[tuple[int, int]], meta: dict) -> Path:
    """One video's per-frame truth as gzipped JSON (see :func:`make_face_samples`); fixed gzip header."""
    n = len(hs)
    drawn = np.where(opening > 1e-3, opening, 0.0)  # what patch() drew
    utterance = np.zeros(n, int)
    for u, (a, b) in enumerate(spans):
        utterance[a:b + 1] = u + 1
    homography = hs @ head.from_photo
    homography = homography / homography[:, 2:3, 2:3]
    turned = head.turn_points(head.carried_landmarks(drawn), np.deg2rad(pose[:, 1]), np.deg2rad(pose[:, 2]))
    depth = head.depth_at(head.landmarks[:, 0], head.landmarks[:, 1])  # cut-out and photograph pixels alike
    axis = np.linalg.solve(head.from_photo, [*head.centre, 1.0])  # the turns' axes, photograph pixels
    data = dict(meta, landmarks=_rounded(_carry(hs, turned), 2), depth=_rounded(depth, 4), turn_axis_x=round(float(axis[0]), 4),
                roll=_rounded(pose[:, 0], 3), yaw=_rounded(pose[:, 1], 3), pitch=_rounded(pose[:, 2], 3),
                opening=_rounded(drawn, 4), boxes=_rounded(boxes, 2), utterance=utterance.tolist(),
                homography=[[[float(f"{v:.9g}") for v in row] for row in m] for m in homography])
    if np.any(pose[:, 2] != 0):  # only sets made with a pitch: the others keep their bytes
        data["turn_axis_y"] = round(float(axis[1]), 4)
    text = json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"
    return write_bytes_atomic(path, gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))


def frame_truth(samples_dir: str | os.PathLike, video_id: str) -> dict[str, np.ndarray]:
    """The per-frame truth of one video of a face sample set, as numpy arrays indexed by frame.

    Keys: ``frame`` (n,) the MP4's frame index (25 fps); ``landmarks``
    (n, 68, 2) dlib's 68 points in frame pixels, dlib's order; ``roll``,
    ``yaw``, ``pitch`` (n,) degrees; ``opening`` (n,) in [0, 1];
    ``utterance`` (n,) the utterance number (1, 2, ...; 0 outside
    utterances); ``boxes`` (n, 4) the face box x, y, w, h; ``homography``
    (n, 3, 3) photograph pixels -> frame pixels (after the turn); ``depth``
    (68,) each landmark's relief, ``turn_axis_x`` (float) the yaw's axis and
    ``turn_axis_y`` the pitch's (NaN in a set made without a pitch),
    photograph pixels.  See :func:`make_face_samples` and the module docstring.
    """
    root = Path(samples_dir)
    truth = json.loads((root / "truth.json").read_text(encoding="utf-8"))
    rel = next((v["frame_truth"] for v in truth["videos"] if v["video_id"] == video_id), None)
    if rel is None:
        raise KeyError(f"no video {video_id!r} in {root / 'truth.json'}")
    data = json.loads(gzip.decompress((root / rel).read_bytes()).decode("utf-8"))
    n = int(data["frames"])
    out = {"frame": np.arange(n), "landmarks": np.array(data["landmarks"], float).reshape(n, 68, 2),
           "utterance": np.array(data["utterance"], int), "boxes": np.array(data["boxes"], float).reshape(n, 4),
           "homography": np.array(data["homography"], float).reshape(n, 3, 3),
           "depth": np.array(data["depth"], float).reshape(68), "turn_axis_x": float(data["turn_axis_x"]),
           "turn_axis_y": float(data.get("turn_axis_y", "nan"))}
    for key in ("roll", "yaw", "pitch", "opening"):
        out[key] = np.array(data[key], float).reshape(n)
    return out


# --------------------------------------------------------------------------- metadata files


def write_voxceleb_txt(path: str | os.PathLike, identity: str, reference: str,
                       rows: Iterable[tuple[int, float, float, float, float]], convention: str = "vox1",
                       frame_hw: tuple[int, int] = (360, 640), *, offset: int = 1, fv_conf: float = 17.910,
                       asd_conf: float = 4.513) -> Path:
    """Write one utterance's metadata in VoxCeleb's text format; return the path.

    ``rows`` are ``(frame, x, y, w, h)``: the absolute frame index in the
    video (25 fps) and the face box in pixels of a frame of ``frame_hw``
    (height, width).  ``convention="vox1"`` writes integer pixels of a
    360-pixel-high frame (boxes scaled by ``360 / height``, rounded half up);
    ``"vox2"`` writes floats normalised by the frame's width and height, three
    decimals.  The file (UTF-8, ``\\n`` line ends) looks like::

        Identity  : \\tid10001
        Reference : \\t1zcIwhmdeo4
        Offset    : \\t1
        FV Conf   : \\t17.910\\t(1)
        ASD Conf  : \\t4.513

        FRAME \\tX \\tY \\tW \\tH 
        000245 \\t227 \\t61 \\t126 \\t126 
    """
    if convention not in ("vox1", "vox2"):
        raise ValueError(f"convention must be 'vox1' or 'vox2', not {convention!r}")
    fh, fw = frame_hw
    lines = [f"Identity  : \t{identity}", f"Reference : \t{reference}", f"Offset    : \t{int(offset)}",
             f"FV Conf   : \t{fv_conf:.3f}\t(1)", f"ASD Conf  : \t{asd_conf:.3f}", "", "FRAME \tX \tY \tW \tH "]
    for frame, x, y, w, h in rows:
        if convention == "vox1":
            k = VOX1_FRAME_HEIGHT / fh
            vals = [str(int(math.floor(v * k + 0.5))) for v in (x, y, w, h)]
        else:
            vals = [f"{v / d:.3f}" for v, d in ((x, fw), (y, fh), (w, fw), (h, fh))]
        lines.append(f"{int(frame):06d} \t" + " \t".join(vals) + " ")
    return write_text_atomic(path, "\n".join(lines) + "\n")


def _zip_files(root: Path, names: Iterable[str], out: Path) -> Path:
    """Zip the files ``root/<name>`` under their ``name`` (sorted), with fixed timestamps and modes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(names):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            zf.writestr(info, (root / name).read_bytes())
    return write_bytes_atomic(out, buf.getvalue())


def _video_id(rng: np.random.Generator, taken: set[str]) -> str:
    while True:
        vid = "".join(_ID_ALPHABET[i] for i in rng.integers(0, 64, 11))
        if vid not in taken:
            taken.add(vid)
            return vid


def make_face_samples(out_dir: str | os.PathLike, identities: int = 3, utterances: int = 2, seconds: float = 4.0,
                      seed: int = 0, width: int = 640, height: int = 360, pitch_degrees: float = 0.0,
                      motion: float = 1.0) -> Path:
    """Write a VoxCeleb-style talking-face sample set; return the manifest's path.

    ``pitch_degrees`` (default 0: no pitch) nods each head by up to that
    many degrees (a smooth signal like the others), which moves the face's
    features up and down in its crop as the yaw moves them across.
    ``motion`` (default 1, up to 2) scales how far the heads roll and turn:
    the face crop follows the head, so the roll and the turn are what moves
    the features inside it (at 1, about 1.5 pixels of a 64-pixel crop within
    an utterance).

    Identity ``i`` (``id10001`` + i) shows photograph ``PHOTO_NAMES[i % 3]``
    (from the fourth identity on the photographs come again, mirrored) and has
    ``utterances`` utterances of ``seconds`` each, in videos of at most
    ``UTTERANCES_PER_VIDEO`` (2) utterances: a video starts with 1 s of the
    silent face, then the utterances one after another with 1-1.4 s of silent
    face between them, and ends with 0.5 s.  Layout under ``out_dir``::

        videos/<video_id>.mp4       H.264 yuv420p 25 fps + AAC mono 44.1 kHz, width x height
        txt/<identity>/<video_id>/00001.txt       VoxCeleb1 metadata (pixels of a 360-high frame)
        txt_vox2/<identity>/<video_id>/00001.txt  VoxCeleb2 metadata (boxes normalised to [0, 1])
        vox1.zip                    the txt/ tree (zip paths txt/...), fixed timestamps
        manifest.csv                video_id,url,start,end,x,y,w,h,identity,split,utterance
        truth.json                  per video and utterance: photograph, frames, seeds; per
                                    utterance frame the unrounded box (x, y, w, h; frame pixels);
                                    per video "frame_truth": the path below, relative to out_dir
        truth_frames/<video_id>.json.gz   per frame of the MP4 (gzipped JSON, lists indexed by frame)

    A ``truth_frames`` file holds the video's ``video_id``, ``identity``,
    ``photo``, ``mirrored``, ``fps``, ``frames``, ``width``, ``height``,
    ``depth`` (68: each landmark's relief, photograph pixels, the order of
    ``landmarks``), ``turn_axis_x`` (the yaw's axis, photograph x) and, per
    frame: ``landmarks`` (68 x 2, frame pixels, 2 decimals, dlib's
    order), ``roll``, ``yaw``, ``pitch`` (degrees, 3 decimals), ``opening``
    (4 decimals), ``boxes`` (x, y, w, h, 2 decimals), ``utterance`` (1, 2, ...;
    0 in the silent lead, gaps and tail) and ``homography`` (3 x 3,
    photograph pixels -> frame pixels, mirroring included, 9 significant
    digits; the planar part, applied after the yaw's turn: see the module
    docstring).  For the default ``sightsound samples faces`` (3 identities x 2
    utterances x 4 s, 640 x 360: 3 videos of 264-272 frames) the three files
    are 111-117 kB each (~330 kB of JSON each); inside truth.json (indent 1)
    they would have made it ~2.1 MB instead of 69 kB.  The module docstring
    says what the landmarks and angles mean; :func:`frame_truth` reads a file
    back as numpy arrays.

    Video ids are 11 YouTube-like characters drawn from the seed; utterances
    are numbered per video (00001, 00002, ...).  A manifest row is one
    utterance: ``url`` the video's absolute path, ``start = first frame / 25``,
    ``end = (last frame + 1) / 25`` (seconds), ``x, y, w, h`` the union of its
    per-frame face boxes normalised by the frame's width and height, ``split``
    empty.
    """
    if identities < 1 or utterances < 1:
        raise ValueError("identities and utterances must be at least 1")
    if not 0 <= motion <= 2:
        raise ValueError(f"motion must be in [0, 2], not {motion}")
    n_utt = int(round(seconds * FPS))
    if n_utt < FPS:
        raise ValueError("seconds must be at least 1")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    manifest_rows, truth_videos, truth_utts, vox1_files = [], [], [], []
    for i in range(identities):
        identity = f"id{FIRST_IDENTITY + i}"
        photo = PHOTO_INFO[PHOTO_NAMES[i % len(PHOTO_NAMES)]]
        mirror = (i // len(PHOTO_NAMES)) % 2 == 1
        head = _Head(photo, mirror=mirror)
        f0 = photo.f0 * (1.0 + 0.08 * (i // len(PHOTO_NAMES)))
        n_videos = -(-utterances // UTTERANCES_PER_VIDEO)
        for k in range(n_videos):
            rng = _rng(seed, i, k)
            vid = _video_id(rng, taken)
            count = min(UTTERANCES_PER_VIDEO, utterances - k * UTTERANCES_PER_VIDEO)
            spans, f = [], int(round(LEAD_SECONDS * FPS))
            for u in range(count):
                if u:
                    f += int(round(GAP_SECONDS * FPS)) + int(rng.integers(0, 11))
                spans.append((f, f + n_utt - 1))
                f += n_utt
            n = f + int(round(TAIL_SECONDS * FPS))
            bg = _background(rng, width, height)
            hs, boxes, pose = _homographies(head, n, rng, width, height, pitch_degrees=pitch_degrees, motion=motion)
            syll = _syllables(rng, [(a / FPS, (b + 1) / FPS) for a, b in spans])
            opening = _envelope(syll, np.arange(n) / FPS)
            audio = _voice(syll, int(round(n / FPS * SAMPLE_RATE)), SAMPLE_RATE, f0, rng)
            video_path = out_dir / "videos" / f"{vid}.mp4"
            encode_video(_frames(bg, head, hs, opening, pose[:, 1], pose[:, 2]), audio, SAMPLE_RATE, FPS, video_path, width, height)
            frame_rel = f"{FRAME_TRUTH_DIR}/{vid}.json.gz"
            _write_frame_truth(out_dir / frame_rel, head, hs, boxes, pose, opening, spans,
                               {"video_id": vid, "identity": identity, "photo": photo.name, "mirrored": mirror,
                                "fps": FPS, "frames": n, "width": width, "height": height})
            for u, (a, b) in enumerate(spans):
                utt = f"{u + 1:05d}"
                rows = [(j, *boxes[j]) for j in range(a, b + 1)]
                offset, fv, asd = 0, float(rng.uniform(12.0, 20.0)), float(rng.uniform(3.0, 6.0))
                for sub, conv in (("txt", "vox1"), ("txt_vox2", "vox2")):
                    write_voxceleb_txt(out_dir / sub / identity / vid / f"{utt}.txt", identity, vid, rows, conv,
                                       (height, width), offset=offset, fv_conf=fv, asd_conf=asd)
                vox1_files.append(f"txt/{identity}/{vid}/{utt}.txt")
                seg = boxes[a:b + 1]
                x0, y0 = seg[:, 0].min(), seg[:, 1].min()
                x1, y1 = (seg[:, 0] + seg[:, 2]).max(), (seg[:, 1] + seg[:, 3]).max()
                nx0, nx1 = max(0.0, x0 / width), min(1.0, x1 / width)
                ny0, ny1 = max(0.0, y0 / height), min(1.0, y1 / height)
                manifest_rows.append([vid, str(video_path.resolve()), f"{a / FPS:.2f}", f"{(b + 1) / FPS:.2f}",
                                      f"{nx0:.6f}", f"{ny0:.6f}", f"{nx1 - nx0:.6f}", f"{ny1 - ny0:.6f}",
                                      identity, "", utt])
                truth_utts.append({"video_id": vid, "utterance": utt, "identity": identity, "photo": photo.name,
                                   "mirrored": mirror, "first_frame": a, "last_frame": b, "start": a / FPS,
                                   "end": (b + 1) / FPS, "boxes": seg.tolist()})
            truth_videos.append({"video_id": vid, "identity": identity, "photo": photo.name, "mirrored": mirror,
                                 "frames": n, "fps": FPS, "width": width, "height": height, "seed": [seed, i, k],
                                 "utterances": count, "f0": round(f0, 3), "frame_truth": frame_rel})
    _zip_files(out_dir, vox1_files, out_dir / "vox1.zip")  # only this call's files, not stale ones
    truth = {"seed": seed, "fps": FPS, "sample_rate": SAMPLE_RATE, "photos": {p.name: p.source for p in _PHOTO_LIST},
             "videos": truth_videos, "utterances": truth_utts}
    write_text_atomic(out_dir / "truth.json", json.dumps(truth, indent=1, sort_keys=True) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows(manifest_rows)
    return write_text_atomic(out_dir / "manifest.csv", buf.getvalue())
