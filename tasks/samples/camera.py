"""Mild camera shake and lighting drift shared by the generated videos (piano keyboard, violin)."""

from __future__ import annotations

import numpy as np


class CameraMotion:
    """Two slow sinusoids per axis for the shake, slow brightness and colour-temperature drift for the light.

    The parameters are drawn from ``rng`` in a fixed order, so a renderer
    that makes one at the same point of its own drawing gets the same video
    bytes for the same seed.
    """

    def __init__(self, rng: np.random.Generator, shake_px: float, light_drift: float, max_shake: int):
        self.max_shake = max_shake
        self._shake = [(rng.uniform(0.5, 1.0) * shake_px, rng.uniform(0.15, 0.5), rng.uniform(0, 2 * np.pi),
                        rng.uniform(0.2, 0.5) * shake_px, rng.uniform(0.6, 1.3), rng.uniform(0, 2 * np.pi))
                       for _ in range(2)]
        self._light = (light_drift * rng.uniform(0.6, 1.0), rng.uniform(0.02, 0.08), rng.uniform(0, 2 * np.pi),
                       0.4 * light_drift, rng.uniform(0.1, 0.25), rng.uniform(0, 2 * np.pi),
                       0.025, rng.uniform(0.01, 0.05), rng.uniform(0, 2 * np.pi))

    def shake(self, t: float) -> tuple[int, int]:
        """Integer camera offset ``(dy, dx)`` at time ``t`` (|offset| <= ``max_shake`` px)."""
        out = []
        for a1, f1, p1, a2, f2, p2 in self._shake:
            v = a1 * np.sin(2 * np.pi * f1 * t + p1) + a2 * np.sin(2 * np.pi * f2 * t + p2)
            out.append(int(np.clip(np.round(v), -self.max_shake, self.max_shake)))
        return out[0], out[1]

    def light(self, t: float) -> tuple[float, float]:
        """``(gain, warmth)`` of the light at time ``t``."""
        a1, f1, p1, a2, f2, p2, a3, f3, p3 = self._light
        gain = 1.0 + a1 * np.sin(2 * np.pi * f1 * t + p1) + a2 * np.sin(2 * np.pi * f2 * t + p2)
        warmth = a3 * np.sin(2 * np.pi * f3 * t + p3)
        return float(gain), float(warmth)
