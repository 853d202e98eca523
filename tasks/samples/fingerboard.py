"""A violinist's violin, seen at an angle, whose stopping finger and bow follow the notes.

The picture: a wall and a wooden floor, the player's dark clothes behind the
instrument, and a violin tilted by :data:`TILT_DEGREES` from the horizontal
(scroll up and to the right, chin rest down and to the left) with a mild
perspective (the scroll is a little further from the camera than the
body).  The violin is drawn in its own flat "local" coordinates, in
millimetres of a real full-size violin (``x`` across the instrument,
positive towards the E string; ``y`` along it, from the tip of the scroll
to the end button), and a single homography maps local millimetres to frame
pixels; :func:`local_to_frame` exposes it.  The fingerboard and the string
spacing are drawn :data:`LATERAL_EXAGGERATION` times wider than on a real
violin so that the four strings stay a few pixels apart in a 720p frame.

Strings: G3 D4 A4 E5 (MIDI 55, 62, 69, 76), nut to bridge
:data:`STRING_LENGTH_MM`.  A note is played on the highest string whose open
pitch is not above it (:func:`string_for_note`): G 55-61, D 62-68, A 69-75,
E 76-88, i.e. first position on the three lower strings (up to 6 semitones
above the open string, the fourth finger's reach) and shifts up the E string
above B5 -- what a player reading a simple line does.  Semitone ``n`` above
the open string is stopped at ``L * (1 - 2 ** (-n / 12))`` from the nut, so
the steps shrink towards the bridge as on a real fingerboard.

Per frame, with a note sounding: the stopping finger's round pad presses
that string at that spot (an open string has no stopping finger), the
player's other fingers rest on a neighbouring string near their own places
in the same hand position, the string vibrates (a blurred band from the
finger, or the nut, to the bridge), and the bow's hair crosses the sounding
string between the bridge and the end of the fingerboard at an angle that
depends on the string, sliding back and forth along its length.  With no
note: every finger is lifted off the fingerboard (to the E-string side) and
the bow is lifted away over the tailpiece.  The camera shakes by at most 3
pixels and the light drifts slowly in brightness and colour.

Speed: the room, the player and the violin (textured in local coordinates
and warped once with ``cv2.warpPerspective``) are drawn once into a canvas
slightly larger than the frame; a frame is a canvas copy, a few anti-aliased
OpenCV lines, circles and ellipses (hand, fingers, vibrating string, bow),
a crop (the shake) and a colour lookup table (the light): about 3-4 ms at
1280 x 720.

Lessons learned (OpenCV 5.0):

* ``cv2.line``/``cv2.circle``/``cv2.fillPoly`` with ``lineType=cv2.LINE_AA``
  and ``shift=4`` take fixed-point coordinates (pixels * 16), which keeps
  thin strings and small finger pads smooth and sub-pixel exact; they want
  plain Python ints in the point tuples.
* ``cv2.ellipse`` takes integer axes even with ``shift``; its angle is in
  degrees, clockwise in image coordinates.
* Drawing on a slice of a larger array (``canvas[y0:y1, x0:x1]``) works in
  place, which is how the vibrating string is alpha-blended cheaply.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from tasks.samples.camera import CameraMotion

from .keyboard import _smooth_noise, _wood

OPEN_STRINGS = (55, 62, 69, 76)  # G3 D4 A4 E5
STRING_NAMES = ("G", "D", "A", "E")
LOWEST_NOTE, HIGHEST_NOTE = 55, 88
TILT_DEGREES = 30.0  # the violin's axis against the horizontal
LATERAL_EXAGGERATION = 1.4
MARGIN = 8  # canvas margin around the frame, room for the camera shake
MAX_SHAKE = 3  # pixels

# Local geometry in millimetres (a full-size violin).
Y_NUT = 104.0
STRING_LENGTH_MM = 325.0
Y_BRIDGE = Y_NUT + STRING_LENGTH_MM  # 429
Y_FB_END = Y_NUT + 270.0  # end of the fingerboard
Y_BODY_TOP, Y_END = 234.0, 590.0
Y_TAIL_TOP, Y_TAIL_BOTTOM = 462.0, 572.0
FB_HALF_NUT, FB_HALF_END = 12.0 * LATERAL_EXAGGERATION, 21.0 * LATERAL_EXAGGERATION
STRING_HALF_NUT, STRING_HALF_BRIDGE = 8.25 * LATERAL_EXAGGERATION, 17.0 * LATERAL_EXAGGERATION
Y_CONTACT = Y_BRIDGE - 28.0  # the bow's sounding point on the strings
PERSPECTIVE = 0.10  # the scroll is drawn 1 / (1 + PERSPECTIVE) as large as the end button
FINGER_OFFSETS = (0, 2, 4, 5)  # semitones of fingers 1-4 above the first finger (whole, whole, half)
FINGERTIP_RADIUS_MM = 5.5

# Bow (local millimetres).  The frog is on the E-string side (+x).
BOW_HAIR_MM = 640.0
BOW_STROKE_MM = (250.0, 410.0)  # range of the contact point, measured along the hair from the frog
BOW_TILT_DEGREES = (-9.0, -3.0, 3.0, 9.0)  # tilt of the bow against the normal to the strings, per string
BOW_LIFT_MM = 110.0  # the lifted bow lies this much further down the instrument, over the tailpiece

#: Colour of the stopping finger's pad (and the resting fingers' pads), RGB.
FINGERTIP_RGB = (246, 186, 168)
SKIN_RGB = (178, 118, 92)  # fingers, palm, thumb, face: clearly darker than the pads
SLEEVE_RGB = (38, 44, 66)
STRING_RGB = ((150, 132, 112), (172, 168, 162), (196, 196, 198), (208, 204, 192))  # G D A E


# ----------------------------------------------------------------- notes

def string_for_note(midi: int) -> tuple[int, int]:
    """``(string index 0-3 = G D A E, semitones above the open string)`` for a MIDI note.

    The highest string whose open pitch is not above the note; raises
    ``ValueError`` outside MIDI 55-88.
    """
    midi = int(midi)
    if not LOWEST_NOTE <= midi <= HIGHEST_NOTE:
        raise ValueError(f"MIDI {midi} is outside the violin range {LOWEST_NOTE}-{HIGHEST_NOTE}")
    k = max(i for i, p in enumerate(OPEN_STRINGS) if p <= midi)
    return k, midi - OPEN_STRINGS[k]


def stop_distance_mm(semitones: float) -> float:
    """Distance from the nut (mm along the string) that stops ``semitones`` above the open string."""
    return STRING_LENGTH_MM * (1.0 - 2.0 ** (-float(semitones) / 12.0))


def hand_for_note(midi: int) -> tuple[int, int, int, int]:
    """``(string, semitones, finger, hand)`` for a note: the finger (0 = open string, 1-4) and the
    hand position, given as the semitone where the first finger falls.

    First position (first finger a whole tone above the open string, a half
    tone for the note just above it) up to 7 semitones; higher on the E
    string the hand shifts so that the third finger plays the note.
    """
    k, n = string_for_note(midi)
    if n == 0:
        return k, 0, 0, 2
    if n <= 7:
        hand = 1 if n == 1 else 2
        finger = 1 + int(np.argmin([abs(hand + off - n) for off in FINGER_OFFSETS]))
        return k, n, finger, hand
    return k, n, 3, n - FINGER_OFFSETS[2]


def _string_x(k: int, y):
    """Lateral position (mm) of string ``k`` at ``y`` (it fans out from nut to bridge)."""
    frac = (np.asarray(y, dtype=np.float64) - Y_NUT) / STRING_LENGTH_MM
    half = STRING_HALF_NUT + (STRING_HALF_BRIDGE - STRING_HALF_NUT) * frac
    return half * (-1.0 + 2.0 * k / 3.0)


def _fb_half(y):
    frac = (np.asarray(y, dtype=np.float64) - Y_NUT) / (Y_FB_END - Y_NUT)
    return FB_HALF_NUT + (FB_HALF_END - FB_HALF_NUT) * frac


def stop_point_mm(k: int, semitones: float) -> tuple[float, float]:
    """Local ``(x, y)`` in mm of semitone ``semitones`` on string ``k``."""
    y = Y_NUT + stop_distance_mm(semitones)
    return float(_string_x(k, y)), float(y)


# ----------------------------------------------------------------- geometry

def _body_half_width(y_rel: np.ndarray) -> np.ndarray:
    """Half width (mm) of the body outline at ``y_rel`` mm below its top (0-356)."""
    from scipy.interpolate import PchipInterpolator

    pts = np.array([(0, 0), (1.5, 22), (6, 44), (16, 62), (34, 76), (60, 83), (88, 82), (112, 75),
                    (124, 74), (130, 79), (134, 70), (146, 58), (168, 54), (192, 56), (208, 62),
                    (218, 76), (224, 88), (232, 90), (252, 99), (278, 104), (304, 101), (326, 90),
                    (342, 71), (351, 46), (354.5, 24), (356, 0)], dtype=np.float64)
    return PchipInterpolator(pts[:, 0], pts[:, 1])(np.clip(y_rel, 0, 356))


def _body_outline() -> np.ndarray:
    y = np.concatenate([np.linspace(0, 20, 30), np.linspace(20, 336, 160), np.linspace(336, 356, 30)[1:]])
    w = _body_half_width(y)
    right = np.stack([w, Y_BODY_TOP + y], axis=1)
    left = np.stack([-w[::-1], Y_BODY_TOP + y[::-1]], axis=1)
    return np.concatenate([right, left])


@functools.lru_cache(maxsize=16)
def _layout(width: int, height: int) -> dict:
    """Scale and placement of the violin in a ``width`` x ``height`` frame (no margin)."""
    if width < 320 or height < 180:
        raise ValueError(f"frame {width}x{height} is too small for the violin (min 320x180)")
    th = np.deg2rad(TILT_DEGREES)
    # Rotation: local +y (scroll -> end) points left and down, local +x right and down.
    rot = np.array([[np.sin(th), -np.cos(th)], [np.cos(th), np.sin(th)]])

    def unit(pts: np.ndarray) -> np.ndarray:  # mm -> frame pixels at scale 1, no translation
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        w = 1.0 + PERSPECTIVE * (Y_END - pts[:, 1]) / Y_END
        q = np.stack([pts[:, 0], pts[:, 1] - Y_END], axis=1) / w[:, None]
        return q @ rot.T

    extent = np.concatenate([_body_outline(), _scroll_extent(), *[_bow_extent(k) for k in range(4)]])
    e = unit(extent)
    lo, hi = e.min(axis=0), e.max(axis=0)
    pad = MAX_SHAKE + 4
    scale = min((0.94 * height - 2 * pad) / (hi[1] - lo[1]), (0.80 * width - 2 * pad) / (hi[0] - lo[0]))
    centre = np.array([0.56 * width, 0.5 * height])
    offset = centre - scale * (lo + hi) / 2
    # Homography: local mm -> frame pixels.
    P = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -Y_END], [0.0, -PERSPECTIVE / Y_END, 1.0 + PERSPECTIVE]])
    A = np.eye(3)
    A[:2, :2] = scale * rot
    A[:2, 2] = offset
    H = A @ P
    x0, y0 = scale * lo + offset - pad
    x1, y1 = scale * hi + offset + pad
    box = (max(0, int(np.floor(y0))), min(height, int(np.ceil(y1))), max(0, int(np.floor(x0))),
           min(width, int(np.ceil(x1))))
    return {"H": H, "scale": float(scale), "box": box}


def _scroll_extent() -> np.ndarray:
    return np.array([(-40, 0), (40, 0), (-45, 60), (45, 60), (-45, 100), (45, 100)], dtype=np.float64)


def _bow_points(k: int, s: float, lifted: bool, wobble_deg: float = 0.0) -> dict:
    """Local mm of the bow's parts with its contact point ``s`` mm from the frog along the hair."""
    cx, cy = float(_string_x(k, Y_CONTACT)), Y_CONTACT
    if lifted:
        cy += BOW_LIFT_MM
        cx = 0.0
    a = np.deg2rad(BOW_TILT_DEGREES[k] + wobble_deg + (6.0 if lifted else 0.0))
    d = np.array([np.cos(a), np.sin(a)])  # from the tip towards the frog
    nrm = np.array([d[1], -d[0]])  # towards the scroll (the stick lies on that side of the hair)
    c = np.array([cx, cy])
    frog = c + s * d
    tip = c - (BOW_HAIR_MM - s) * d
    stick_frog = frog + 11.0 * nrm + 40.0 * d  # the stick runs on past the frog to the screw
    stick_tip = tip + 5.0 * nrm - 9.0 * d
    return {"frog": frog, "tip": tip, "stick_frog": stick_frog, "stick_tip": stick_tip, "d": d, "n": nrm}


def _bow_extent(k: int) -> np.ndarray:
    pts = []
    for s in BOW_STROKE_MM:
        for lifted in (False, True):
            for wob in (-2.0, 2.0):
                b = _bow_points(k, s, lifted, wob)
                for key in ("frog", "tip", "stick_frog", "stick_tip"):
                    for off in (-12.0, 12.0):
                        pts.append(b[key] + off * b["n"])
    return np.array(pts)


def local_to_frame(points_mm, width: int = 1280, height: int = 720) -> np.ndarray:
    """Frame pixel coordinates ``(N, 2)`` of local points in mm (camera at rest)."""
    H = _layout(int(width), int(height))["H"]
    p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((p.shape[0], 1))], axis=1) @ H.T
    return q[:, :2] / q[:, 2:3]


def violinist_box(width: int = 1280, height: int = 720) -> tuple[int, int, int, int]:
    """``(min_y, max_y, min_x, max_x)`` of the violinist in a ``width`` x
    ``height`` frame (max exclusive): it holds the whole violin and the bow
    in every position, camera shake included."""
    return _layout(int(width), int(height))["box"]


def finger_position(midi: int, width: int = 1280, height: int = 720) -> tuple[float, float] | None:
    """Frame pixel ``(x, y)`` of the stopping fingertip's centre for ``midi``
    (camera at rest), or None for an open string (no finger stops it)."""
    k, n = string_for_note(midi)
    if n == 0:
        return None
    x, y = local_to_frame([stop_point_mm(k, n)], width, height)[0]
    return float(x), float(y)


def fingertip_radius(width: int = 1280, height: int = 720) -> float:
    """Radius in frame pixels of a fingertip pad."""
    return FINGERTIP_RADIUS_MM * _layout(int(width), int(height))["scale"]


def fingerboard_polygon(width: int = 1280, height: int = 720) -> np.ndarray:
    """Frame pixel corners ``(4, 2)`` of the fingerboard (camera at rest), nut side first."""
    pts = [(-FB_HALF_NUT, Y_NUT), (FB_HALF_NUT, Y_NUT), (FB_HALF_END, Y_FB_END), (-FB_HALF_END, Y_FB_END)]
    return local_to_frame(pts, width, height)


def strings_polygon(width: int = 1280, height: int = 720) -> np.ndarray:
    """Frame pixel corners ``(4, 2)`` of the playing area: from the G to the E
    string, from the nut to the end of the fingerboard (camera at rest).
    Every stopping position lies inside it; no fingertip does when no note sounds."""
    pts = [(_string_x(0, Y_NUT), Y_NUT), (_string_x(3, Y_NUT), Y_NUT), (_string_x(3, Y_FB_END), Y_FB_END),
           (_string_x(0, Y_FB_END), Y_FB_END)]
    return local_to_frame(pts, width, height)


# ----------------------------------------------------------------- drawing helpers

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fx(p) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _line(img, a, b, color, thickness: int) -> None:
    cv2.line(img, _fx(a), _fx(b), color, max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _disc(img, c, r: float, color) -> None:
    cv2.circle(img, _fx(c), max(1, int(round(r * _ONE))), color, -1, cv2.LINE_AA, _SHIFT)


def _poly(img, pts, color) -> None:
    arr = np.round(np.asarray(pts) * _ONE).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [arr], color, cv2.LINE_AA, _SHIFT)


def _ellipse(img, c, axes, angle_deg: float, color) -> None:
    cv2.ellipse(img, _fx(c), (max(1, int(round(axes[0] * _ONE))), max(1, int(round(axes[1] * _ONE)))),
                float(angle_deg), 0.0, 360.0, color, -1, cv2.LINE_AA, _SHIFT)


def _shade(color, f: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(c * f), 0, 255)) for c in color)


class ViolinRenderer:
    """Draw frames of the violinist.  All randomness (textures, tints, bow
    stroke, camera shake, light) comes from ``rng`` at construction, so a
    renderer built from the same seed draws the same frames.

    ``render(midi, t)`` takes the sounding MIDI note (55-88) or None and the
    frame time in seconds and returns a ``height`` x ``width`` x 3 uint8 RGB
    image (C-contiguous).  The geometry depends only on the frame size
    (:func:`violinist_box`, :func:`finger_position`).
    """

    def __init__(self, width: int = 1280, height: int = 720, rng: np.random.Generator | None = None, *,
                 shake_px: float = 2.5, light_drift: float = 0.06):
        self.width, self.height = int(width), int(height)
        rng = np.random.default_rng(0) if rng is None else rng
        lay = _layout(self.width, self.height)
        self.scale = lay["scale"]
        self.box = lay["box"]
        # Local mm -> canvas pixels (the canvas has MARGIN pixels around the frame).
        T = np.array([[1.0, 0, MARGIN], [0, 1.0, MARGIN], [0, 0, 1.0]])
        self.H = T @ lay["H"]
        self._build(rng)
        self.camera = CameraMotion(rng, shake_px, light_drift, max_shake=MAX_SHAKE)
        self._bow = (rng.uniform(2.2, 3.4), rng.uniform(0.0, 1.0), rng.uniform(0.2, 0.4), rng.uniform(0, 2 * np.pi))
        self._ramp = np.arange(256, dtype=np.float32)

    # -- coordinates ------------------------------------------------------
    def canvas_xy(self, points_mm) -> np.ndarray:
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 2)
        q = np.concatenate([p, np.ones((p.shape[0], 1))], axis=1) @ self.H.T
        return q[:, :2] / q[:, 2:3]

    def _px(self, mm: float) -> float:
        return mm * self.scale

    # -- static drawing ---------------------------------------------------
    def _build(self, rng: np.random.Generator) -> None:
        W, H = self.width + 2 * MARGIN, self.height + 2 * MARGIN
        img = self._room(rng, H, W)
        self._player(img, rng)
        violin, alpha = self._violin_layer(rng, H, W)
        # Soft shadow of the violin on the player and the wall.
        sh = cv2.GaussianBlur(alpha, (0, 0), max(2.0, 0.012 * H))
        sh = np.roll(sh, (int(0.012 * H), int(0.008 * W)), axis=(0, 1))
        img *= (1.0 - 0.45 * sh)[..., None]
        img = img * (1.0 - alpha[..., None]) + violin * alpha[..., None]
        self._left_forearm(img)
        self.base = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        self._strings(self.base)

    def _room(self, rng, H: int, W: int) -> np.ndarray:
        floor_y = int(rng.uniform(0.80, 0.86) * H)
        wall = np.array((188, 180, 166), np.float32) * rng.uniform(0.92, 1.04)
        yy = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
        img = wall * (0.86 + 0.10 * _smooth_noise(rng, H, W, 220)[..., None]) * (1.02 - 0.12 * yy)
        # Wall panels: faint vertical seams every ~22% of the width.
        step = int(rng.uniform(0.18, 0.26) * W)
        for x in range(int(rng.integers(20, step)), W, step):
            img[:floor_y, x:x + 3] *= 0.82
            img[:floor_y, x + 3:x + 5] *= 1.06
        # A picture frame on the wall, left of the player.
        fx0, fy0 = int(rng.uniform(0.04, 0.12) * W), int(rng.uniform(0.10, 0.18) * H)
        fw, fh = int(0.16 * W), int(0.22 * H)
        img[fy0:fy0 + fh, fx0:fx0 + fw] = (92, 70, 48)
        inner = _smooth_noise(rng, fh - 16, fw - 16, 30)[..., None]
        img[fy0 + 8:fy0 + fh - 8, fx0 + 8:fx0 + fw - 8] = (70 + 80 * inner) * np.array((0.7, 0.9, 1.0), np.float32)
        floor = _wood(rng, H - floor_y, W, dark=(82, 52, 30), light=(150, 104, 66))
        img[floor_y:] = floor
        img[floor_y:floor_y + 4] *= 0.6  # skirting shadow
        # Room light: brighter towards a random spot.
        cy, cx = rng.uniform(0.2, 0.5) * H, rng.uniform(0.3, 0.7) * W
        r = np.sqrt(((np.arange(H)[:, None] - cy) / H) ** 2 + ((np.arange(W)[None, :] - cx) / W) ** 2)
        img *= (1.06 - 0.40 * r.astype(np.float32) ** 1.4)[..., None]
        return img

    def _player(self, img: np.ndarray, rng) -> None:
        """The player's torso (dark shirt) behind the violin and the head at the chin rest."""
        chin = self.canvas_xy([(-48.0, 548.0)])[0]
        neck_pt = self.canvas_xy([(-20.0, 300.0)])[0]
        s = self.scale
        H, W = img.shape[:2]
        shirt = np.array(SLEEVE_RGB, np.float32) * rng.uniform(0.9, 1.1)
        torso = np.array([
            (chin[0] - 330 * s, H + 10), (chin[0] - 300 * s, chin[1] + 40 * s), (chin[0] - 150 * s, chin[1] - 10 * s),
            (neck_pt[0] - 20 * s, chin[1] - 40 * s), (neck_pt[0] + 140 * s, chin[1] + 30 * s),
            (neck_pt[0] + 230 * s, chin[1] + 160 * s), (neck_pt[0] + 260 * s, H + 10)])
        mask = np.zeros((H, W), np.float32)
        _poly(mask, torso, 1.0)
        folds = 0.75 + 0.35 * _smooth_noise(rng, H, W, 60)
        layer = shirt[None, None, :] * folds[..., None]
        img[:] = img * (1 - mask[..., None]) + layer * mask[..., None]
        # Head: face turned to the violin, hair on top, chin on the chin rest.
        hc = (chin[0] - 70 * s, chin[1] - 115 * s)
        _ellipse(img, (hc[0] + 4 * s, hc[1] + 30 * s), (30 * s, 24 * s), 0, _shade(SKIN_RGB, 0.8))  # neck
        _ellipse(img, hc, (78 * s, 100 * s), -20, SKIN_RGB)
        _ellipse(img, (hc[0] - 14 * s, hc[1] - 52 * s), (84 * s, 62 * s), -20, (48, 34, 26))  # hair
        _ellipse(img, (hc[0] + 40 * s, hc[1] - 5 * s), (8 * s, 4 * s), -20, (60, 44, 40))  # eye

    def _violin_layer(self, rng, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
        """The violin drawn in local coordinates and warped into the canvas: (RGB float, alpha)."""
        q = max(1.0, 1.5 * self.scale)  # local pixels per mm (a little supersampling)
        x0, y0 = -140.0, -10.0
        lw, lh = int(280 * q), int(610 * q)
        L = np.zeros((lh, lw, 3), np.float32)
        A = np.zeros((lh, lw), np.float32)

        def P(pts):
            p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
            return np.stack([(p[:, 0] - x0) * q, (p[:, 1] - y0) * q], axis=1)

        # Body: spruce top under reddish-brown varnish, lighter where it arches, dark edge and purfling.
        outline = _body_outline()
        body_mask = np.zeros((lh, lw), np.float32)
        _poly(body_mask, P(outline), 1.0)
        xs = (np.arange(lw, dtype=np.float32) / q + x0)[None, :]
        ys = (np.arange(lh, dtype=np.float32) / q + y0)[:, None]
        warp = _smooth_noise(rng, lh, lw, int(40 * q)) * 6.0
        grain = 0.5 + 0.5 * np.sin((xs + warp) * rng.uniform(1.3, 1.7))
        arch = np.exp(-((xs / 70.0) ** 2 + ((ys - 420.0) / 190.0) ** 2))
        varnish = np.array((178, 86, 34), np.float32) * rng.uniform(0.9, 1.05)
        tone = 0.62 + 0.28 * arch + 0.08 * grain + 0.08 * _smooth_noise(rng, lh, lw, int(60 * q))
        body = varnish[None, None, :] * tone[..., None]
        L[:] = body
        A[:] = body_mask
        edge = np.zeros((lh, lw), np.float32)
        cv2.polylines(edge, [np.round(P(outline) * _ONE).astype(np.int32).reshape(-1, 1, 2)], True, 1.0,
                      max(1, int(round(2.5 * q))), cv2.LINE_AA, _SHIFT)
        L *= (1.0 - 0.5 * edge)[..., None]
        inner = outline.copy()
        inner[:, 0] *= 0.955
        inner[:, 1] = (inner[:, 1] - 412.0) * 0.975 + 412.0
        cv2.polylines(L, [np.round(P(inner) * _ONE).astype(np.int32).reshape(-1, 1, 2)], True, (40, 22, 14),
                      max(1, int(round(0.9 * q))), cv2.LINE_AA, _SHIFT)
        # f-holes.
        for sgn in (-1.0, 1.0):
            t = np.linspace(0.0, 1.0, 40)
            fy = 386.0 + 76.0 * t
            fx = sgn * (23.0 + 22.0 * t + 5.0 * np.sin(2 * np.pi * t))
            pts = P(np.stack([fx, fy], axis=1))
            cv2.polylines(L, [np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)], False, (22, 12, 8),
                          max(1, int(round(2.2 * q))), cv2.LINE_AA, _SHIFT)
            for j in (0, -1):
                _disc(L, pts[j], 3.0 * q, (22, 12, 8))
            nb = P([(sgn * 30.0, 424.0), (sgn * 40.0, 424.0)])
            _line(L, nb[0], nb[1], (22, 12, 8), 1.0 * q)
        # Neck and pegbox (maple, a little lighter), scroll.
        maple = (168, 96, 46)
        _poly(L, P([(-15, 36), (15, 36), (16, Y_BODY_TOP + 4), (-16, Y_BODY_TOP + 4)]), maple)
        _poly(A, P([(-15, 36), (15, 36), (16, Y_BODY_TOP + 4), (-16, Y_BODY_TOP + 4)]), 1.0)
        _poly(L, P([(-8, 42), (8, 42), (8, 100), (-8, 100)]), (34, 20, 12))  # pegbox hollow
        sc = P([(0.0, 20.0)])[0]
        for img_, col in ((L, maple), (A, 1.0)):
            _ellipse(img_, sc, (19 * q, 22 * q), 0, col)
        for r_, col in ((15, (130, 70, 34)), (10, maple), (6, (120, 64, 30))):
            _ellipse(L, sc, (r_ * q, (r_ + 3) * q), 0, col)
        _line(L, P([(0, 0)])[0], P([(0, 40)])[0], (110, 58, 26), 1.2 * q)
        # Pegs, two on each side.
        ebony = (30, 24, 22)
        for j, (py, side) in enumerate(((54.0, -1), (64.0, 1), (80.0, -1), (90.0, 1))):
            a, b = P([(side * 14, py), (side * 36, py)])
            for img_, col in ((L, ebony), (A, 1.0)):
                _line(img_, a, b, col, 6.0 * q)
                _ellipse(img_, P([(side * 40, py)])[0], (6 * q, 9 * q), 0, col)
            _line(L, a, b, (70, 60, 56), 1.0 * q)
        # Fingerboard: ebony with a soft sheen along its crown.
        fb = [(-FB_HALF_NUT, Y_NUT), (FB_HALF_NUT, Y_NUT), (FB_HALF_END, Y_FB_END), (-FB_HALF_END, Y_FB_END)]
        fb_mask = np.zeros((lh, lw), np.float32)
        _poly(fb_mask, P(fb), 1.0)
        sheen = np.exp(-(((xs + 3.0) / (0.45 * FB_HALF_END)) ** 2))
        fbc = (np.array((26, 23, 22), np.float32) + 22.0 * sheen[..., None]) * np.ones((lh, 1, 1), np.float32)
        L[:] = L * (1 - fb_mask[..., None]) + fbc * fb_mask[..., None]
        A[:] = np.maximum(A, fb_mask)
        _poly(L, P([(-FB_HALF_NUT, Y_NUT - 3), (FB_HALF_NUT, Y_NUT - 3), (FB_HALF_NUT, Y_NUT + 1),
                    (-FB_HALF_NUT, Y_NUT + 1)]), (200, 192, 180))  # nut (bone)
        # Tailpiece with a fine tuner on the E string, chin rest, end button.
        tail = [(-20, Y_TAIL_TOP), (20, Y_TAIL_TOP), (10, Y_TAIL_BOTTOM), (-10, Y_TAIL_BOTTOM)]
        _poly(L, P(tail), ebony)
        _line(L, P([(-18, Y_TAIL_TOP + 2)])[0], P([(18, Y_TAIL_TOP + 2)])[0], (80, 72, 66), 1.5 * q)
        _disc(L, P([(_string_x(3, Y_TAIL_TOP) * 0.85, Y_TAIL_TOP + 10)])[0], 3.5 * q, (190, 190, 196))
        _ellipse(L, P([(-52.0, 545.0)])[0], (40 * q, 26 * q), 8, (22, 18, 17))  # chin rest (bass side)
        _ellipse(L, P([(-48.0, 541.0)])[0], (32 * q, 18 * q), 8, (44, 38, 36))
        _disc(L, P([(0.0, Y_END - 2)])[0], 5.0 * q, ebony)
        # Bridge (maple, across the strings) with its feet.
        bh = STRING_HALF_BRIDGE + 7.0
        _poly(L, P([(-bh, Y_BRIDGE - 2.2), (bh, Y_BRIDGE - 2.2), (bh + 2, Y_BRIDGE + 2.2), (-bh - 2, Y_BRIDGE + 2.2)]),
              (222, 192, 146))
        for sgn in (-1, 1):
            _poly(L, P([(sgn * (bh - 8), Y_BRIDGE - 3.5), (sgn * (bh + 2), Y_BRIDGE - 3.5),
                        (sgn * (bh + 2), Y_BRIDGE + 3.5), (sgn * (bh - 8), Y_BRIDGE + 3.5)]), (200, 168, 120))
        # Warp local -> canvas.
        Alocal = np.array([[q, 0, -x0 * q], [0, q, -y0 * q], [0, 0, 1.0]])
        M = self.H @ np.linalg.inv(Alocal)
        violin = cv2.warpPerspective(L, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        alpha = cv2.warpPerspective(A, M, (W, H), flags=cv2.INTER_LINEAR, borderValue=0)
        return violin, np.clip(alpha, 0.0, 1.0)

    def _strings(self, img: np.ndarray) -> None:
        """Strings from the pegbox over the nut and the bridge to the tailpiece (drawn in frame space)."""
        for k in range(4):
            peg_y = (54.0, 64.0, 80.0, 90.0)[[0, 2, 3, 1][k]]
            nut = (float(_string_x(k, Y_NUT)), Y_NUT)
            bridge = (float(_string_x(k, Y_BRIDGE)), Y_BRIDGE)
            tail = (float(_string_x(k, Y_BRIDGE)) * 0.55, Y_TAIL_TOP)
            pts = self.canvas_xy([(0.0, peg_y), nut, bridge, tail])
            for a, b in zip(pts[:-1], pts[1:]):
                _line(img, a, b, STRING_RGB[k], 1)

    def _left_forearm(self, img: np.ndarray) -> None:
        """The left forearm (sleeve) coming from below the neck, towards the E-string side."""
        s = self.scale
        self._wrist = self.canvas_xy([(FB_HALF_NUT + 62.0, 178.0)])[0]
        elbow = self.canvas_xy([(230.0, 300.0)])[0]
        _line(img, self._wrist, elbow, _shade(SLEEVE_RGB, 1.15), 62 * s)
        _line(img, self._wrist, self._wrist + (elbow - self._wrist) * 0.12, _shade(SKIN_RGB, 0.9), 44 * s)

    # -- per frame --------------------------------------------------------

    def bow_contact(self, t: float) -> float:
        """Contact point along the hair (mm from the frog) at time ``t``: a steady back-and-forth stroke."""
        period, phase, _, _ = self._bow
        u = (t / period + phase) % 1.0
        tri = 1.0 - abs(2.0 * u - 1.0)
        lo, hi = BOW_STROKE_MM
        return lo + (hi - lo) * tri

    def _left_hand(self, img: np.ndarray, midi: int | None) -> None:
        s = self.scale
        if midi is None:
            k, n, finger, hand = -1, 0, 0, 2
        else:
            k, n, finger, hand = hand_for_note(midi)
        y_hand = Y_NUT + stop_distance_mm(hand + 2)
        # Palm under the neck on the E-string side, thumb showing on the G side.
        palm = self.canvas_xy([(_fb_half(y_hand) + 30.0, y_hand + 4.0)])[0]
        _line(img, self._wrist, palm, SKIN_RGB, 40 * s)
        _ellipse(img, palm, (38 * s, 24 * s), TILT_DEGREES - 90.0, SKIN_RGB)
        y_thumb = Y_NUT + stop_distance_mm(hand + 1)
        _ellipse(img, self.canvas_xy([(-_fb_half(y_thumb) - 4.0, y_thumb + 6.0)])[0], (15 * s, 8 * s),
                 TILT_DEGREES - 90.0, _shade(SKIN_RGB, 0.92))
        tips: list[tuple[np.ndarray, bool]] = []
        for f in range(1, 5):
            semis = n if f == finger else hand + FINGER_OFFSETS[f - 1]
            if midi is None:  # lifted clear of the fingerboard, beside the E-string edge
                ty = Y_NUT + stop_distance_mm(semis)
                tip_mm = (_fb_half(ty) + 11.0, ty)
                pressing = False
            elif f == finger:
                tip_mm = stop_point_mm(k, n)
                pressing = True
            else:
                # Resting on a neighbouring string: fingers below the playing one towards the
                # E side, fingers above it towards the G side (the hand's natural shape).
                if f < finger or finger == 0:
                    other = k + 1 if k < 3 else k - 1
                else:
                    other = k - 1 if k > 0 else k + 1
                tip_mm = stop_point_mm(other, semis)
                pressing = False
            ty = tip_mm[1]
            knuckle = self.canvas_xy([(_fb_half(ty) + 16.0, ty - 5.0)])[0]
            tip = self.canvas_xy([tip_mm])[0]
            _line(img, knuckle, tip, _shade(SKIN_RGB, 0.95 if pressing else 1.0), 8.5 * s)
            tips.append((tip, pressing))
        for tip, pressing in tips:
            _disc(img, tip, (FINGERTIP_RADIUS_MM + 0.8) * s, _shade(SKIN_RGB, 0.75))
            _disc(img, tip, FINGERTIP_RADIUS_MM * s, FINGERTIP_RGB)

    def _vibrating_string(self, img: np.ndarray, midi: int) -> None:
        k, n = string_for_note(midi)
        a = self.canvas_xy([stop_point_mm(k, n) if n else (float(_string_x(k, Y_NUT)), Y_NUT)])[0]
        b = self.canvas_xy([(float(_string_x(k, Y_BRIDGE)), Y_BRIDGE)])[0]
        pad = 6
        x0, y0 = int(max(0, min(a[0], b[0]) - pad)), int(max(0, min(a[1], b[1]) - pad))
        x1, y1 = int(min(img.shape[1], max(a[0], b[0]) + pad)), int(min(img.shape[0], max(a[1], b[1]) + pad))
        roi = img[y0:y1, x0:x1]
        blur = roi.copy()
        off = np.array([x0, y0], dtype=np.float64)
        _line(blur, a - off, b - off, STRING_RGB[k], 4 if k < 2 else 3)
        cv2.addWeighted(roi, 0.45, blur, 0.55, 0.0, dst=roi)

    def _bow_draw(self, img: np.ndarray, midi: int | None, t: float) -> None:
        s = self.scale
        _, _, wob_f, wob_p = self._bow
        wobble = 1.5 * np.sin(2 * np.pi * wob_f * t + wob_p)
        if midi is None:
            b = _bow_points(1, self.bow_contact(t), True, wobble)
        else:
            b = _bow_points(string_for_note(midi)[0], self.bow_contact(t), False, wobble)
        frog, tip, sf, st = self.canvas_xy([b["frog"], b["tip"], b["stick_frog"], b["stick_tip"]])
        # Right hand and forearm holding the frog.
        d = (frog - tip) / np.linalg.norm(frog - tip)
        elbow = frog + d * 260 * s + np.array([60.0, 140.0]) * s
        _line(img, frog + d * 20 * s, elbow, _shade(SLEEVE_RGB, 1.1), 58 * s)
        # Hair, stick, frog, tip.
        _line(img, tip, frog, (228, 222, 204), 3.6 * s)
        _line(img, st, sf, (104, 52, 24), 4.6 * s)
        _line(img, st, sf, (150, 84, 44), 1.2 * s)
        fa, fb_ = self.canvas_xy([b["frog"] - 2.0 * b["d"] + 1.0 * b["n"], b["frog"] + 36.0 * b["d"] + 10.0 * b["n"]])
        _line(img, fa, fb_, (22, 20, 20), 11 * s)
        _disc(img, (fa + fb_) / 2, 2.4 * s, (235, 235, 240))
        tip_head = self.canvas_xy([b["tip"] - 8.0 * b["d"] + 2.0 * b["n"]])[0]
        _line(img, tip, tip_head, (236, 232, 222), 6 * s)
        _ellipse(img, frog + d * 14 * s, (26 * s, 18 * s), 0, SKIN_RGB)

    def render(self, midi: int | None, t: float) -> np.ndarray:
        """The frame at time ``t`` with ``midi`` (55-88) sounding, or nothing when None."""
        if midi is not None:
            string_for_note(midi)  # validates the range
        canvas = self.base.copy()
        if midi is not None:
            self._vibrating_string(canvas, midi)
        self._left_hand(canvas, midi)
        self._bow_draw(canvas, midi, t)
        dy, dx = self.camera.shake(t)
        m = MARGIN
        view = canvas[m + dy:m + dy + self.height, m + dx:m + dx + self.width]
        gain, warmth = self.camera.light(t)
        lut = np.stack([self._ramp * gain * (1 + warmth), self._ramp * gain, self._ramp * gain * (1 - warmth)], axis=-1)
        lut = np.clip(lut + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)
        return np.ascontiguousarray(cv2.LUT(view, lut))
