"""Random thin-plate-spline warps of image batches: the synthetic pairs of Jakab et al. (NeurIPS 2018, §4.1).

For still images the paper makes a training pair ``(g1 x0, g2 x0)`` by two
random TPS warps ``g1``, ``g2`` of one image, "as in" Thewlis et al. 2017
and Zhang et al. 2018, and discounts the loss where the warped image shows
what lay outside the original.  :func:`random_warp` draws one such warp per
image of a batch and returns the warped batch with that mask.

A warp is a random similarity (rotation, scale, shift) of a ``grid x grid``
lattice of control points over the frame, each control point then moved by
Gaussian noise; the thin-plate spline through the moved points (the
minimum-bending interpolant, solved exactly with ``torch.linalg.solve``)
gives the sampling position of every output pixel, read with
``grid_sample``.  torchvision has random affine and elastic transforms but
no TPS, and neither returns the mask, hence this module.  The default
strengths are chosen here (the papers give none): rotation up to 10
degrees, scale 0.9-1.1, shift up to 0.08 of the half-width, control points
moved by N(0, 0.04^2), all in ``[-1, 1]`` frame units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class WarpStrength:
    """How far :func:`random_warp` moves a frame (``[-1, 1]`` units; rotation in degrees)."""

    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.08
    tps: float = 0.04
    grid: int = 5


def lattice(n: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[n * n, 2]`` points ``(x, y)`` of an ``n x n`` lattice over ``[-1, 1]^2``, row by row."""
    axis = torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), dim=1)


def _radial(d2: torch.Tensor) -> torch.Tensor:
    """The TPS kernel ``U = r^2 log r^2`` of squared distances (0 at 0)."""
    return d2 * torch.log(d2.clamp_min(1e-12))


def tps_sampling_grid(control: torch.Tensor, moved: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size, size, 2]`` sampling positions of the thin-plate spline taking ``control`` to ``moved``.

    ``control``: ``[N, 2]`` points of the output frame; ``moved``: ``[B, N, 2]``,
    where in the input each of them is read.  Every output pixel centre
    (``align_corners=True`` coordinates) gets the spline's value there.
    """
    b, n = moved.shape[:2]
    dtype, device = moved.dtype, moved.device
    k = _radial(torch.cdist(control, control) ** 2)  # [N, N]
    p = torch.cat((torch.ones(n, 1, dtype=dtype, device=device), control), dim=1)  # [N, 3]
    system = torch.zeros(n + 3, n + 3, dtype=dtype, device=device)
    system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
    rhs = torch.cat((moved, torch.zeros(b, 3, 2, dtype=dtype, device=device)), dim=1)  # [B, N+3, 2]
    coef = torch.linalg.solve(system, rhs)  # [B, N+3, 2]: the kernel weights, then the affine part
    pixels = lattice(size, dtype, device)  # [P, 2]: every pixel centre
    basis = torch.cat((_radial(torch.cdist(pixels, control) ** 2),
                       torch.ones(len(pixels), 1, dtype=dtype, device=device), pixels), dim=1)  # [P, N+3]
    return (basis @ coef).view(b, size, size, 2)


def random_warp(images: torch.Tensor, strength: WarpStrength = WarpStrength(),
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One random TPS warp per image of ``[B, C, S, S]``; returns ``(warped, inside)``.

    ``inside`` (``[B, 1, S, S]`` bool) marks the output pixels read from
    within the original frame; outside it the border pixels are repeated,
    and a loss should not count them (the paper's discount).
    """
    b, _, h, w = images.shape
    if h != w:
        raise ValueError(f"random_warp takes square frames, not {h} x {w}")
    dtype, device = images.dtype, images.device

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, dtype=dtype).to(device) * 2 - 1

    control = lattice(strength.grid, dtype, device)  # [N, 2]
    angle = uniform(b) * math.radians(strength.rotation)
    scale = 1 + uniform(b) * strength.scale
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    rotation = torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)  # [B, 2, 2]
    moved = control @ rotation.transpose(1, 2) + uniform(b, 1, 2) * strength.shift
    noise = torch.randn(b, len(control), 2, generator=generator, dtype=dtype).to(device)
    moved = moved + noise * strength.tps
    with torch.autocast(device_type=device.type, enabled=False):  # the spline in full precision under AMP
        grid = tps_sampling_grid(control, moved, h)
        warped = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = (grid.abs() <= 1 + 1e-5).all(dim=-1).unsqueeze(1)  # (float slack at the edge)
    return warped, inside
