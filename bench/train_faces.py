"""Training speed of the face networks (FAb-Net, X2Face stage I, keypoints, class embedding), in one run here.

    .venv/bin/python bench/train_faces.py [--steps 3] [--paper-steps 1] [--data-root D]

Prints, measured now on this machine:
- training steps per second of FAb-Net (1 source at batch 8, the paper's
  batch without the curriculum; 1 and 3 sources at batch 32 with it) and of
  X2Face stage I (1 source, batch 16) at the ``small`` (64 x 64) and
  ``paper`` (256 x 256) sizes, on random frames of the right shapes:
  forward, the L1 loss (through the curriculum's window where it applies),
  backward and the SGD step; and each step's FLOPs (torch's FlopCounterMode);
- the same for Jakab et al.'s keypoint bottleneck (K = 10, batch 16, the l2
  loss; 64 x 64 small, 128 x 128 paper) and the class embedding (batch 24,
  every warp level active with the cyclic loss: its costliest stage), each
  through its LightningModule's own ``training_step`` and Adam;
- with ``--data-root`` (a build-voxceleb build), the face-pair loader's
  examples per second in one process at each size and source count, to
  compare with what a step needs (``batch`` examples).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import items_per_second, print_header, step_rate_and_flops  # noqa: E402

# (name, sources, batch, curriculum)
NETWORKS = (("fabnet", 1, 8, False), ("fabnet-curriculum", 1, 32, True), ("fabnet-curriculum-3src", 3, 32, True),
            ("x2face", 1, 16, False), ("keypoints-10", 1, 16, False), ("class-embedding", 1, 24, False))


def step_rate(name: str, sources: int, batch: int, curriculum: bool, config: str, steps: int) -> tuple[float, float]:
    """(steps per second, FLOPs of one training step)."""
    import torch

    from models.fabnet import CURRICULUM_WINDOWS, FabNet, FabNetConfig, curriculum_loss, l1_loss
    from models.x2face import X2Face, X2FaceConfig

    if name in ("keypoints-10", "class-embedding"):
        return task_step_rate(name, batch, config, steps)
    if name.startswith("fabnet"):
        net = FabNet(FabNetConfig.named(config, confidence=sources > 1))
    else:
        net = X2Face(X2FaceConfig.named(config))
    s = net.config.image_size
    src, tgt = torch.rand(batch, sources, 3, s, s), torch.rand(batch, 3, s, s)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad()
        per = l1_loss(net(src, tgt).generated, tgt)
        loss = curriculum_loss(per, *CURRICULUM_WINDOWS[0]) if curriculum else per.mean()
        loss.backward()
        opt.step()

    return step_rate_and_flops(step, steps)


def task_step_rate(name: str, batch: int, config: str, steps: int) -> tuple[float, float]:
    """(steps per second, FLOPs of one step) of a face model's LightningModule ``training_step`` and its optimiser."""
    import warnings

    import torch

    from tasks.training.class_embedding import ClassEmbeddingTask
    from tasks.training.keypoints import KeypointTask

    if name == "keypoints-10":
        task = KeypointTask(config, keypoints=10)
    else:
        task = ClassEmbeddingTask(config)
        task.active_levels = task.net.config.levels
    s = task.net.config.image_size
    data = {"sources": torch.rand(batch, 1, 3, s, s), "target": torch.rand(batch, 3, s, s)}
    opt = task.configure_optimizers()

    def step():
        opt.zero_grad()
        with warnings.catch_warnings():  # self.log outside a Trainer warns and does nothing
            warnings.simplefilter("ignore")
            loss = task.training_step(data, 0)
        loss.backward()
        opt.step()

    return step_rate_and_flops(step, steps)


def loader_rate(data_root: str, sources: int, size: int, examples: int = 400) -> float:
    """Examples per second of the shuffled ``train`` face pairs in this process."""
    from tasks.training.windows import FacePairs

    pairs = FacePairs.from_root(data_root, "train", sources=sources, size=size, shuffle=True, buffer_size=64)
    return items_per_second(pairs, examples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps at the small size")
    parser.add_argument("--paper-steps", type=int, default=1, help="timed steps at the paper size")
    parser.add_argument("--data-root", help="a build-voxceleb build: also time the face-pair loader")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print_header("network", "config", "batch", "steps/s", "s/step", "GFLOP/step", "examples/s (net)")
    for config, steps in (("small", args.steps), ("paper", args.paper_steps)):
        for name, sources, batch, curriculum in NETWORKS:
            rate, flops = step_rate(name, sources, batch, curriculum, config, steps)
            print(f"| {name} | {config} | {batch} | {rate:.3f} | {1 / rate:.2f} | {flops / 1e9:.1f} | "
                  f"{rate * batch:.1f} |", flush=True)
    if args.data_root:
        print()
        print_header("loader", "size", "sources", "examples/s, one process")
        for size in (64, 256):
            for sources in (1, 3):
                print(f"| face pairs | {size} | {sources} | {loader_rate(args.data_root, sources, size):.1f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
