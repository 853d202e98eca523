"""Training speed of the violin pitch networks (thesis ch. 5), in one run on this machine.

    .venv/bin/python bench/train_violin.py [--steps 3] [--paper-steps 1] [--data-root D]

Prints, measured now on this machine:
- training steps per second of the teacher, the 1-frame and the 5-frame
  student at the `small` and `paper` sizes, at the thesis's batch sizes (64,
  64, 24), on random inputs of the right shapes: forward, backward and the
  Adam step, with the frozen teacher's forward inside each distilled
  student step (as in training); and each step's FLOPs (torch's
  FlopCounterMode);
- with ``--data-root`` (a build-violinyt build), the window loader's windows
  per second in one process for each network's input (a loader worker's
  rate), so the two can be compared: a step needs ``batch`` windows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import items_per_second, print_header, step_rate_and_flops  # noqa: E402

BATCH = {"teacher": 64, "student-1": 64, "student-5": 24}


def step_rate(name: str, config: str, steps: int) -> tuple[float, float]:
    """(steps per second at the thesis's batch, FLOPs of one training step)."""
    import torch
    import torch.nn.functional as F

    from models.violin_pitch import PitchStudent, PitchTeacher, ViolinPitchConfig, distillation_loss

    teacher = PitchTeacher(ViolinPitchConfig.named(config, "teacher"))
    b = BATCH[name]
    audio = torch.randn(b, teacher.config.segment_samples) * 0.1
    y = torch.randint(0, 34, (b,))
    if name == "teacher":
        net, x = teacher, audio
    else:
        net = PitchStudent(ViolinPitchConfig.named(config, "student", int(name[-1])))
        c = net.config
        x = torch.rand(b, c.frames, 3, c.height, c.width)
        teacher.eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), 1e-3)

    def step():
        opt.zero_grad()
        logits, feats = net.forward_features(x)
        loss = F.cross_entropy(logits, y)
        if net is not teacher:
            with torch.no_grad():
                _, t_feats = teacher.forward_features(audio)
            loss = loss + distillation_loss(feats, t_feats, loss)[0]
        loss.backward()
        opt.step()

    return step_rate_and_flops(step, steps)


def loader_rate(data_root: str, name: str, config: str, windows: int = 400) -> float:
    """Windows per second of the ``train`` split's augmented loader for network ``name``, in this process."""
    from models.violin_pitch import ViolinPitchConfig
    from tasks.datasets.violinyt import layout
    from tasks.training.windows import FrameWindows, PitchLabels

    lay = layout(data_root)
    t = ViolinPitchConfig.named(config, "teacher")
    labels = PitchLabels(lay.root, audio_samples=t.segment_samples)
    if name == "teacher":
        ds = FrameWindows(lay.shards, "train", labels=labels, images=False, shuffle=True, buffer_size=64)
    else:
        c = ViolinPitchConfig.named(config, "student", int(name[-1]))
        ds = FrameWindows(lay.shards, "train", labels=labels, color="rgb", frames=c.frames, size=(c.height, c.width),
                          shuffle=True, augment=True, buffer_size=64)
    return items_per_second(ds, windows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps at the small size")
    parser.add_argument("--paper-steps", type=int, default=1, help="timed steps at the paper size")
    parser.add_argument("--data-root", help="a build-violinyt build: also time the window loader")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print_header("network", "config", "batch", "steps/s", "s/step", "GFLOP/step", "windows/s (net)")
    for config, steps in (("small", args.steps), ("paper", args.paper_steps)):
        for name in BATCH:
            rate, flops = step_rate(name, config, steps)
            print(f"| {name} | {config} | {BATCH[name]} | {rate:.3f} | {1 / rate:.2f} | {flops / 1e9:.1f} | "
                  f"{rate * BATCH[name]:.1f} |", flush=True)
    if args.data_root:
        print()
        print_header("loader for", "config", "windows/s, one process")
        for config in ("small", "paper"):
            for name in BATCH:
                print(f"| {name} | {config} | {loader_rate(args.data_root, name, config):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
