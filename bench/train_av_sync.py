"""Training speed of the audio-visual sync network (thesis ch. 7), in one run on this machine.

    .venv/bin/python bench/train_av_sync.py [--steps 3] [--paper-steps 1] [--data-root D]

Prints, measured now on this machine:
- training steps per second of :class:`tasks.training.av_sync.SyncTask` at
  the `small` and `paper` sizes, batch 24 (the thesis's), on random inputs
  of the right shapes: the visual stream once and the audio stream three
  times per window (the positive, the same-video and the other-video
  negative), the contrastive loss, backward and the Adam step; and each
  step's FLOPs (torch's FlopCounterMode), split into the two streams;
- with ``--data-root`` (a build-pianoyt build with its audio), the window
  loader's windows per second in one process (frames and the 4.2 s audio
  context), a loader worker's rate: a step needs 24 windows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import items_per_second, print_header, step_rate_and_flops  # noqa: E402

BATCH = 24


def step_rate(config: str, steps: int) -> tuple[float, float, float, float]:
    """(steps per second, FLOPs of one training step, of the visual forward, of one audio forward), batch 24."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tasks.training.av_sync import SyncTask

    task = SyncTask(config)
    c = task.net.config
    batch = {"frames": torch.rand(BATCH, c.frames, c.height, c.crop_width),
             "audio": torch.randn(BATCH, task.context_samples) * 0.1,
             "video_id": [f"v{i % 4}" for i in range(BATCH)], "time": [float(i) for i in range(BATCH)]}
    opt = torch.optim.Adam(task.parameters(), 1e-4)

    def step():
        opt.zero_grad()
        task._loss(task.pair_distances(batch)).backward()
        opt.step()

    rate, flops = step_rate_and_flops(step, steps)
    with FlopCounterMode(display=False) as visual, torch.no_grad():
        task.net.visual(batch["frames"])
    with FlopCounterMode(display=False) as audio, torch.no_grad():
        task.net.audio(batch["audio"][:, :c.audio_samples])
    return rate, flops, float(visual.get_total_flops()), float(audio.get_total_flops())


def loader_rate(data_root: str, config: str, windows: int = 300) -> float:
    """Windows per second of the train split's shuffled loader (frames and audio context), in this process."""
    from tasks.training.av_sync import SyncTask, sync_windows
    from tasks.training.piano_onsets import shard_videos

    task = SyncTask(config)
    ds = sync_windows(data_root, task, shard_videos(data_root, "train"), train=True, seed_value=0, buffer_size=64)
    return items_per_second(ds, windows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps at the small size")
    parser.add_argument("--paper-steps", type=int, default=1, help="timed steps at the paper size")
    parser.add_argument("--data-root", help="a build-pianoyt build (with its audio): also time the window loader")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print_header("config", "batch", "steps/s", "s/step", "GFLOP/step", "GFLOP visual fwd", "GFLOP audio fwd",
                 "windows/s (net)")
    for config, steps in (("small", args.steps), ("paper", args.paper_steps)):
        rate, flops, visual, audio = step_rate(config, steps)
        print(f"| {config} | {BATCH} | {rate:.3f} | {1 / rate:.2f} | {flops / 1e9:.1f} | {visual / 1e9:.1f} | "
              f"{audio / 1e9:.1f} | {rate * BATCH:.1f} |", flush=True)
    if args.data_root:
        print()
        print_header("loader", "config", "windows/s, one process")
        for config in ("small", "paper"):
            print(f"| sync windows | {config} | {loader_rate(args.data_root, config):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
