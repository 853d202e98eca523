"""Throughput of the visual piano onset model's training, in one run on this machine.

    .venv/bin/python bench/train_piano.py [--frames 480] [--steps 3] [--work DIR] [--device-tflops 400]

Prints, measured now on this machine:
- the window loader's samples per second in one process (a loader worker's
  rate: each worker is one such process), on PNG and on JPEG shards, with
  and without the training augmentation;
- training steps per second (batch 24) of each variant at the `small` and
  `paper` sizes on this CPU, and each step's FLOPs (torch's FlopCounterMode,
  forward and backward);
- from those FLOPs, the step rate the `paper` size implies on a GPU of
  ``--device-tflops`` dense bf16 TFLOP/s at ``--mfu`` utilisation (default 400 and
  35%: an H100-class device), the windows per second it would consume, and how
  many loader workers of the measured rate keep it fed.
The shards are synthetic frames in the build's format (145 x 800 grayscale,
32-frame row groups), written with the build's shard writer.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import items_per_second, step_rate_and_flops  # noqa: E402


def make_shards(root: Path, fmt: str, frames: int) -> Path:
    import pyarrow as pa
    from PIL import Image

    from tasks.datasets.pianoyt import SCHEMA
    from tasks.store.shards import VideoShardWriter

    rng = np.random.default_rng(0)
    shards = root / fmt / "pianoyt" / "shards"
    base = (rng.random((145, 800)) * 60 + 100).astype(np.uint8)
    for v in range(2):
        vid = f"bench{v}"
        with VideoShardWriter(shards, vid, "train", SCHEMA) as writer:
            for a in range(0, frames, 32):
                idx = list(range(a, min(frames, a + 32)))
                images = []
                for i in idx:
                    img = base.copy()
                    img[80:, (i * 7) % 780:(i * 7) % 780 + 20] = 230  # a moving "hand"
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="PNG" if fmt == "png" else "JPEG", quality=90)
                    images.append(buf.getvalue())
                onset = np.zeros((len(idx), 88), np.uint8)
                fixed = pa.FixedSizeListArray.from_arrays(pa.array(onset.reshape(-1), pa.uint8()), 88)
                writer.write(pa.record_batch([pa.array([vid] * len(idx), pa.string()), pa.array(idx, pa.int32()),
                                              pa.array(np.asarray(idx) / 25.0), pa.array(images, pa.binary()),
                                              fixed, fixed], schema=SCHEMA))
            writer.commit()
    return shards


def loader_rate(shards: Path, augment: bool, size=(145, 800)) -> float:
    from tasks.training.windows import FrameWindows

    ds = FrameWindows(str(shards), "train", shuffle=augment, augment=augment, buffer_size=64, size=size,
                      rank=0, world_size=1)
    return items_per_second(ds)


def step_rate(variant: str, config: str, steps: int) -> tuple[float, float]:
    """(steps per second at batch 24, FLOPs of one training step)."""
    import torch

    from models.piano_onsets import PianoOnsets, PianoOnsetsConfig, balanced_bce

    cfg = PianoOnsetsConfig.named(config, variant)
    net = PianoOnsets(cfg)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.rand(24, 5, cfg.height, cfg.crop_width)
    y = (torch.rand(24, 88) < 0.05).float()

    def step():
        opt.zero_grad()
        balanced_bce(net(x), y).backward()
        opt.step()

    return step_rate_and_flops(step, steps)


def _load() -> str:
    """The machine's 1-minute load average beside its core count (the figures mean little on a busy machine)."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=480, help="frames per synthetic video (2 videos)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per variant and size")
    p.add_argument("--work", default=None)
    p.add_argument("--device-tflops", type=float, default=400.0, help="dense bf16 TFLOP/s of the GPU to project to")
    p.add_argument("--mfu", type=float, default=0.35, help="share of that peak a training step reaches")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)  # one loader worker's view; the steps below use every core
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-piano-"))
    print(f"work folder {work}; {torch.get_num_interop_threads()} interop threads; {_load()}")
    rates = {}
    for fmt in ("png", "jpeg"):
        shards = make_shards(work, fmt, args.frames)
        for augment in (False, True):
            rates[(fmt, augment)] = loader_rate(shards, augment)
            print(f"loader, one process, {fmt:4s} shards, augmentation {'on ' if augment else 'off'}: "
                  f"{rates[(fmt, augment)]:7.1f} windows/s")
    torch.set_num_threads(max(1, torch.get_num_threads() if torch.get_num_threads() > 1 else 2))
    print(f"training steps, batch 24, {torch.get_num_threads()} torch threads:")
    paper_flops = {}
    for config in ("small", "paper"):
        for variant in ("resnet", "aggregation", "slope"):
            sps, flops = step_rate(variant, config, args.steps if config == "small" else 1)
            if config == "paper":
                paper_flops[variant] = flops
            print(f"  {config:5s} {variant:11s}: {sps:7.3f} steps/s, {flops / 1e9:8.1f} GFLOP per step")
    feed = rates[("png", True)]
    print(f"projected to a {args.device_tflops:g} TFLOP/s device at {args.mfu:.0%} utilisation (paper size):")
    for variant, flops in paper_flops.items():
        sps = args.device_tflops * 1e12 * args.mfu / flops
        need = sps * 24
        print(f"  {variant:11s}: {sps:6.1f} steps/s = {need:7.0f} windows/s = "
              f"{need / feed:5.1f} loader workers at the measured {feed:.0f} windows/s (PNG, augmented)")
    print(f"ratios: JPEG/PNG loader {rates[('jpeg', True)] / rates[('png', True)]:.2f} (augmented), "
          f"augmented/plain {rates[('png', True)] / rates[('png', False)]:.2f} (PNG)")
    print(f"at the end: {_load()} (any other busy process slows CPU steps many times: read the rates with it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
