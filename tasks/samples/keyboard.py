"""A top view of an 88-key piano whose keys go down with the notes.

The picture is a camera looking straight down on a grand piano's keyboard:
room floor and wall, the glossy black piano body with a sheet of music on
the desk, red felt, 52 white and 36 black keys (MIDI 21-108, A0-C8) at their
real positions, and the key slip in front.  Sounding keys are drawn pressed:
shifted a little away from the camera, darker, with shadowed sides and a dark
gap at the back.  The camera shakes a few pixels (smoothly) and the light
drifts slowly in brightness and colour.

Speed: everything static is drawn once into two canvases, one with every key
up and one with every key down, plus a boolean mask per key.  A frame is one
canvas copy, a masked paste per sounding key, a crop (the shake) and a
colour lookup table (the light): about 2-3 ms at 1280 x 720.

Black keys sit where a real keyboard puts them: at the back of the keys the
octave is split into 12 equal slots (7/12 of a white key each), one per
semitone, so C# and F# lean left of their white-key boundary and D# and A#
lean right.
"""

from __future__ import annotations

import cv2
import numpy as np

from tasks.samples.camera import CameraMotion

N_KEYS = 88
LOWEST = 21  # A0
N_WHITE = 52
_WHITE_PC = {0: 0, 2: 1, 4: 2, 5: 3, 7: 4, 9: 5, 11: 6}  # pitch class -> white index within the octave
MARGIN = 8  # canvas margin around the frame, room for the camera shake


def is_black(midi: int) -> bool:
    return (midi % 12) not in _WHITE_PC


def _geometry(width: int, height: int) -> dict:
    if width < 320 or height < 180:
        raise ValueError(f"frame {width}x{height} is too small for an 88-key keyboard (min 320x180)")
    kb_w = int(round(0.92 * width))
    min_x = (width - kb_w) // 2
    white_w = kb_w / N_WHITE
    white_len = int(round(white_w * 6.2))
    min_y = int(round(0.56 * height))
    if min_y + white_len + 0.08 * height > height:
        min_y = int(height - white_len - 0.08 * height)
    return dict(kb_w=kb_w, min_x=min_x, max_x=min_x + kb_w, white_w=white_w, min_y=min_y,
                max_y=min_y + white_len, white_len=white_len, black_len=int(round(0.64 * white_len)))


def keyboard_box(width: int, height: int) -> tuple[int, int, int, int]:
    """``(min_y, max_y, min_x, max_x)`` of the keys in a ``width`` x ``height``
    frame, with the camera at rest (max exclusive, as in a slice).

    The camera shake moves the picture by at most 3 pixels from this box.
    """
    g = _geometry(width, height)
    return g["min_y"], g["max_y"], g["min_x"], g["max_x"]


def key_rects(width: int, height: int) -> np.ndarray:
    """Top-view rectangle of every key, ``(88, 4)`` int array of
    ``(y0, y1, x0, x1)`` (exclusive ends), with the camera at rest.  White keys
    span their full length; the black keys lie on top of them."""
    g = _geometry(width, height)
    unit = g["kb_w"] / N_WHITE
    out = np.zeros((N_KEYS, 4), dtype=np.int64)
    for k in range(N_KEYS):
        m = LOWEST + k
        octave, pc = m // 12 - 1, m % 12
        if pc in _WHITE_PC:
            w = octave * 7 + _WHITE_PC[pc] - 5  # A0 is white key 0
            x0 = g["min_x"] + int(round(w * unit))
            x1 = g["min_x"] + int(round((w + 1) * unit))
            out[k] = (g["min_y"], g["max_y"], x0, x1)
        else:
            pos = octave * 7 + pc * 7.0 / 12.0 - 5
            x0 = g["min_x"] + int(round(pos * unit))
            x1 = g["min_x"] + int(round((pos + 7.0 / 12.0) * unit))
            out[k] = (g["min_y"], g["min_y"] + g["black_len"], x0, x1)
    return out


def key_probe_boxes(width: int, height: int, inset: int = 4) -> np.ndarray:
    """A small ``(y0, y1, x0, x1)`` box per key that shows only that key whatever
    the camera shake: white keys in front of the black keys, black keys in
    their middle, ``inset`` pixels in from the sides."""
    g = _geometry(width, height)
    rects = key_rects(width, height)
    out = rects.copy()
    for k in range(N_KEYS):
        y0, y1, x0, x1 = rects[k]
        if is_black(LOWEST + k):
            bevel = max(4, g["black_len"] // 10)  # the lit front slope, see _draw_black
            out[k] = (y0 + int(0.25 * g["black_len"]), y1 - bevel - 4, x0 + inset, x1 - inset)
        else:
            out[k] = (g["min_y"] + g["black_len"] + 8, g["max_y"] - 8, x0 + inset, x1 - inset - 1)
    return out


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled with cubic interpolation."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.random((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0.0, 1.0)


def _wood(rng: np.random.Generator, h: int, w: int, dark, light) -> np.ndarray:
    """Floor boards: horizontal grain warped by noise, boards of varying tone."""
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    warp = _smooth_noise(rng, h, w, 48) * 9.0 + _smooth_noise(rng, h, w, 12) * 1.5
    freq = rng.uniform(0.22, 0.32)
    grain = 0.5 + 0.5 * np.sin((y + warp) * freq + 0.002 * x)
    grain = grain**3
    board_h = int(rng.integers(46, 64))
    boards = rng.uniform(-0.12, 0.12, size=h // board_h + 2).astype(np.float32)
    tone = boards[(np.arange(h) // board_h)][:, None]
    t = np.clip(0.55 * grain + 0.3 * _smooth_noise(rng, h, w, 90) + tone, 0.0, 1.0)
    dark = np.array(dark, np.float32)
    light = np.array(light, np.float32)
    img = dark + (light - dark) * t[..., None]
    seams = (np.arange(h) % board_h) < 2
    img[seams] *= 0.55
    return img


class KeyboardRenderer:
    """Draw frames of the keyboard.  All randomness (textures, tints, camera
    shake, light) comes from ``rng`` at construction, so a renderer built from
    the same seed draws the same frames.

    ``render(active, t)`` takes a length-88 boolean vector (key index 0-87 =
    MIDI 21-108, True = sounding) and the frame time in seconds, and returns an
    ``height`` x ``width`` x 3 uint8 RGB image (C-contiguous).
    """

    def __init__(self, width: int = 1280, height: int = 720, rng: np.random.Generator | None = None, *,
                 shake_px: float = 2.5, light_drift: float = 0.07):
        self.width, self.height = int(width), int(height)
        rng = np.random.default_rng(0) if rng is None else rng
        self.geometry = _geometry(self.width, self.height)
        self.rects = key_rects(self.width, self.height)
        self._build(rng)
        # Camera shake (|offset| <= 3 px) and lighting drift.
        self.camera = CameraMotion(rng, shake_px, light_drift, max_shake=min(3, MARGIN))
        self._ramp = np.arange(256, dtype=np.float32)

    # -- static drawing -------------------------------------------------
    def _build(self, rng: np.random.Generator) -> None:
        g = self.geometry
        m = MARGIN
        H, W = self.height + 2 * m, self.width + 2 * m
        min_y, max_y = g["min_y"] + m, g["max_y"] + m
        min_x, max_x = g["min_x"] + m, g["max_x"] + m
        ww = g["white_w"]

        img = _wood(rng, H, W, dark=(70, 42, 24), light=(150, 100, 62))
        # Wall at the top, fading into the floor.
        wall_h = int(0.18 * H)
        yy = np.arange(H, dtype=np.float32)[:, None, None]
        wall = np.array((196, 186, 170), np.float32) * (0.85 + 0.1 * _smooth_noise(rng, H, W, 160)[..., None])
        blend = np.clip((yy - wall_h) / 30.0, 0.0, 1.0)
        img = wall * (1 - blend) + img * blend
        # Vignette / uneven room light.
        cy, cx = rng.uniform(0.35, 0.6) * H, rng.uniform(0.35, 0.65) * W
        r = np.sqrt(((np.arange(H)[:, None] - cy) / H) ** 2 + ((np.arange(W)[None, :] - cx) / W) ** 2)
        img *= (1.05 - 0.45 * r.astype(np.float32) ** 1.5)[..., None]

        # Piano: body behind the keys, cheeks at the sides, key slip in front.
        body_top = int(min_y - 0.75 * g["white_len"])
        body_x0, body_x1 = int(min_x - 1.6 * ww), int(max_x + 1.6 * ww)
        rail_h = max(6, int(0.45 * ww))
        body_bot = max_y + rail_h
        # Soft shadow of the piano on the floor.
        shadow = np.zeros((H, W), np.float32)
        cv2.rectangle(shadow, (body_x0 + 6, body_top + 10), (body_x1 + 10, body_bot + 14), 1.0, -1)
        shadow = cv2.GaussianBlur(shadow, (0, 0), 9)
        img *= (1.0 - 0.55 * shadow)[..., None]
        body = np.zeros((body_bot - body_top, body_x1 - body_x0, 3), np.float32)
        by = np.linspace(0, 1, body.shape[0], dtype=np.float32)[:, None, None]
        body[:] = 16 + 14 * by
        # Glossy reflection streaks on the lacquer.
        for _ in range(3):
            yc = rng.uniform(0.1, 0.55) * body.shape[0]
            band = np.exp(-((np.arange(body.shape[0]) - yc) / rng.uniform(2, 6)) ** 2)[:, None, None]
            body += rng.uniform(10, 28) * band.astype(np.float32)
        img[body_top:body_bot, body_x0:body_x1] = body
        # Sheet music on the desk.
        sheet_w, sheet_h = int(9 * ww), int(0.5 * g["white_len"])
        for j, sx in enumerate((0.5 * (min_x + max_x) - sheet_w - 3, 0.5 * (min_x + max_x) + 3)):
            sx = int(sx)
            sy = body_top + int(0.08 * g["white_len"])
            paper = np.array((232, 228, 214), np.float32) * rng.uniform(0.93, 1.0)
            img[sy:sy + sheet_h, sx:sx + sheet_w] = paper
            for st in range(3):
                y0 = sy + 8 + st * (sheet_h - 12) // 3
                for ln in range(5):
                    yl = y0 + ln * 2
                    if yl < sy + sheet_h - 2:
                        img[yl, sx + 6:sx + sheet_w - 6] = (90, 90, 90)
                for _ in range(int(rng.integers(10, 22))):
                    nx = int(rng.integers(sx + 8, sx + sheet_w - 8))
                    ny = int(y0 + rng.integers(-2, 10))
                    cv2.circle(img, (nx, ny), 1, (30, 30, 30), -1)
        # Red felt strip at the back of the keys.
        img[min_y - 4:min_y, min_x - 2:max_x + 2] = (120, 22, 28)
        # Key slip in front, with a highlight line.
        img[max_y:body_bot, body_x0:body_x1] = (22, 22, 24)
        img[max_y + 1:max_y + 2, body_x0:body_x1] = (70, 70, 74)
        # Cheek blocks.
        for x0, x1 in ((body_x0, min_x - 2), (max_x + 2, body_x1)):
            img[min_y - 4:body_bot, x0:x1] = (26, 26, 28)
            img[min_y - 4:body_bot, x0 + 2:x0 + 3] = (60, 60, 64)

        up = img.copy()
        down = img.copy()
        self.masks: list[tuple[tuple[slice, slice], np.ndarray]] = []
        black_union = np.zeros((H, W), bool)
        for k in range(N_KEYS):
            if is_black(LOWEST + k):
                y0, y1, x0, x1 = self.rects[k] + (m, m, m, m)
                black_union[y0:y1, x0:x1] = True

        # White keys.
        white_len = max_y - min_y
        along = np.linspace(0.0, 1.0, white_len, dtype=np.float32)[:, None, None]
        for k in range(N_KEYS):
            if is_black(LOWEST + k):
                continue
            y0, y1, x0, x1 = self.rects[k] + (m, m, m, m)
            kw = x1 - x0 - 1  # one pixel gap on the right
            ivory = np.array((238, 233, 221), np.float32) * rng.uniform(0.97, 1.02)
            key = np.empty((white_len, kw, 3), np.float32)
            key[:] = ivory * (0.93 + 0.07 * np.minimum(along * 4, 1.0))  # shade under the fallboard
            key[-3:] = ivory * 0.80  # front lip
            up[y0:y1, x0:x1 - 1] = key
            up[y0:y1, x1 - 1] = (95, 90, 84)
            # Pressed: moved 3 px back under the fallboard, darker, shadowed sides.
            pk = np.empty_like(key)
            pk[:] = ivory * (0.80 - 0.08 * along)
            pk[:3] = (50, 46, 44)
            pk[-2:] = ivory * 0.62
            side = min(3, kw // 4)
            for s in range(side):
                f = 0.55 + 0.15 * s
                pk[3:, s] *= f
                pk[3:, kw - 1 - s] *= f
            down[y0:y1, x0:x1 - 1] = pk
            down[y0:y1, x1 - 1] = (60, 56, 52)
            mask = np.zeros((y1 - y0, x1 - x0), bool)
            mask[:, :kw] = True
            mask &= ~black_union[y0:y1, x0:x1]
            self.masks.append(((slice(y0, y1), slice(x0, x1)), mask))

        # Shadows of the black keys on the white keys (both canvases).
        sh = np.zeros((H, W), np.float32)
        for k in range(N_KEYS):
            if is_black(LOWEST + k):
                y0, y1, x0, x1 = self.rects[k] + (m, m, m, m)
                sh[y0:y1 + 3, x0 + 2:x1 + 3] = 1.0
        sh = cv2.GaussianBlur(sh, (0, 0), 1.6)
        keys_area = np.zeros((H, W), np.float32)
        keys_area[min_y:max_y, min_x:max_x] = 1.0
        factor = (1.0 - 0.35 * sh * keys_area)[..., None]
        up *= factor
        down *= factor

        # Black keys.
        for k in range(N_KEYS):
            if not is_black(LOWEST + k):
                continue
            y0, y1, x0, x1 = self.rects[k] + (m, m, m, m)
            self._draw_black(up, y0, y1, x0, x1, pressed=False, rng=rng)
            self._draw_black(down, y0, y1, x0, x1, pressed=True, rng=rng)
            mask = np.ones((y1 - y0, x1 - x0), bool)
            self.masks.append(((slice(y0, y1), slice(x0, x1)), mask))
        # Reorder masks by key index (whites were appended first).
        whites = [k for k in range(N_KEYS) if not is_black(LOWEST + k)]
        blacks = [k for k in range(N_KEYS) if is_black(LOWEST + k)]
        order = whites + blacks
        by_key = [None] * N_KEYS
        for entry, k in zip(self.masks, order):
            by_key[k] = entry
        self.masks = by_key

        self.up = np.clip(up + 0.5, 0, 255).astype(np.uint8)
        down_u8 = np.clip(down + 0.5, 0, 255).astype(np.uint8)
        # Keep only the pressed pixels of each key, as small patches.
        self.patches = [down_u8[sl] for sl, _ in self.masks]
        self._mask3 = [mk[..., None] for _, mk in self.masks]

    @staticmethod
    def _draw_black(img: np.ndarray, y0: int, y1: int, x0: int, x1: int, *, pressed: bool, rng) -> None:
        h, w = y1 - y0, x1 - x0
        key = np.empty((h, w, 3), np.float32)
        key[:] = (10, 10, 12)  # sides of the key, seen from above
        inset = max(1, w // 6)
        bevel = max(4, h // 10)
        t = np.linspace(0.0, 1.0, h - bevel, dtype=np.float32)[:, None, None]
        if not pressed:
            top = 26 + 20 * t
            key[: h - bevel, inset:w - inset] = top
            # Glossy streak along the key and the lit front slope.
            hx = inset + max(1, (w - 2 * inset) // 3)
            key[2: h - bevel, hx:hx + 2] += 28
            key[h - bevel:, 1:w - 1] = (92, 92, 98)
            key[h - 1:, 1:w - 1] = (55, 55, 60)
        else:
            top = 12 + 8 * t
            key[3: h - bevel + 2, inset:w - inset] = top[: h - bevel - 1]
            key[:3] = (4, 4, 5)
            key[h - bevel + 2:, 1:w - 1] = (34, 34, 37)
        img[y0:y1, x0:x1] = key

    # -- per frame ----------------------------------------------------------

    def render(self, active, t: float) -> np.ndarray:
        """The frame at time ``t`` with the keys where ``active`` is True pressed."""
        active = np.asarray(active, dtype=bool)
        if active.shape != (N_KEYS,):
            raise ValueError(f"active must have shape (88,), got {active.shape}")
        canvas = self.up.copy()
        for k in np.flatnonzero(active):
            sl, _ = self.masks[k]
            np.copyto(canvas[sl], self.patches[k], where=self._mask3[k])
        dy, dx = self.camera.shake(t)
        m = MARGIN
        view = canvas[m + dy:m + dy + self.height, m + dx:m + dx + self.width]
        gain, warmth = self.camera.light(t)
        lut = np.stack([self._ramp * gain * (1 + warmth), self._ramp * gain, self._ramp * gain * (1 - warmth)], axis=-1)
        lut = np.clip(lut + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)
        return np.ascontiguousarray(cv2.LUT(view, lut))
