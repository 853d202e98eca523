"""Issue 13: the old hand-written Onsets and Frames loop and the shared trainer in lock step, dropout on.

    git worktree add /tmp/old765 765038b
    .venv/bin/python bench/onsets_frames_lockstep.py --data PA --old-tree /tmp/old765 --out RUN [--steps 240]
        [--seed 0] [--validate-every 250]

PA is ``sightsound samples piano-audio --out PA --pieces 80 --seconds 30 --seed 0``.  Both loops start from the
same initial weights (the shared trainer's for ``--seed``), read the old loop's label rolls
(:func:`bench.onsets_frames_port.old_note_labels`), take the same windows, and draw their dropout masks from one
generator state: the old loop's generator is reseeded right before its first step, as Lightning's ``fit``
reseeds it, and advanced by the one draw a DataLoader's iterator takes.  A validation's loader takes one draw
too, so with ``--validate-every`` the old loop draws once as each of its validations starts.  Each loop runs in
its own process (the two trees share module names) with one torch thread, the two at once; the per-step losses
(the old loop prints five decimals) and the validation onset F1s are then compared.

Our own script: no library compares two training loops; it reads each loop's own log (Lightning's
``metrics.csv``, the old loop's ``losses.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))


def _new_side(args) -> None:
    """The shared trainer with the old rolls; its initial weights saved for the old side first."""
    import torch

    import tasks.datasets.maestro as maestro
    from bench.onsets_frames_port import old_note_labels
    from tasks.training.onsets_frames import OnsetsFramesTask, TrainSettings, train
    from tasks.training.trainer import seed

    torch.set_num_threads(1)
    maestro.note_labels = old_note_labels  # cache_features calls it through the module
    settings = TrainSettings(data=args.data, out_dir=str(Path(args.out) / "new"), config="small",
                             max_steps=args.steps, validate_every=args.validate_every or args.steps + 1, log_every=1,
                             seed=args.seed, threads=1, progress_bar=False)
    seed(settings.trainer_settings())  # what train() does before it builds the network
    init = Path(args.out) / "init.pt"
    torch.save(OnsetsFramesTask("small").net.state_dict(), init.with_suffix(".part"))
    init.with_suffix(".part").rename(init)  # whole, for the old side waiting on it
    train(settings)


def _old_side(args) -> None:
    """The hand-written loop of ``--old-tree`` from those weights, its generator reseeded before the first step."""
    sys.path.insert(0, str(Path(args.old_tree).resolve()))
    import time

    import torch

    import models.onsets_frames as of
    import tasks.training.onsets_frames as loop
    from tasks.training.onsets_frames import TrainSettings, train

    assert of.__file__.startswith(str(Path(args.old_tree).resolve())), of.__file__
    torch.set_num_threads(1)
    while not (Path(args.out) / "init.pt").is_file():  # written by the new side before it trains
        time.sleep(1)
    init = torch.load(Path(args.out) / "init.pt", weights_only=True)
    scored = loop.validate

    def drawn_then_scored(*a, **kw):
        torch.empty((), dtype=torch.int64).random_()  # the draw of the validation loader's iterator
        return scored(*a, **kw)

    loop.validate = drawn_then_scored
    build = of.OnsetsAndFrames.__init__

    def built_then_reseeded(self, *a, **kw):
        build(self, *a, **kw)
        self.load_state_dict(init)
        torch.manual_seed(args.seed)  # as lightning's seed_everything at the start of fit
        torch.empty((), dtype=torch.int64).random_()  # the draw of the DataLoader iterator's base seed

    of.OnsetsAndFrames.__init__ = built_then_reseeded
    train(TrainSettings(data=args.data, out_dir=str(Path(args.out) / "old"), config="small", max_steps=args.steps,
                        validate_every=args.validate_every or args.steps + 1, log_every=1, seed=args.seed, threads=1))


def _losses(path: Path, column: str) -> list[float]:
    with open(path, newline="") as f:
        return [float(r[column]) for r in csv.DictReader(f) if r.get(column)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a MAESTRO-layout folder (samples piano-audio)")
    parser.add_argument("--old-tree", required=True, help="a checkout of tree 765038b (git worktree add)")
    parser.add_argument("--out", required=True, help="a folder for both runs")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate-every", type=int, default=0, help="steps between validations (0: none)")
    parser.add_argument("--side", choices=("new", "old"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "new":
        _new_side(args)
        return 0
    if args.side == "old":
        _old_side(args)
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "init.pt").unlink(missing_ok=True)
    sides = {}
    for side in ("new", "old"):  # at once; the old side waits for the initial weights the new side writes
        cmd = [sys.executable, str(HERE), "--data", args.data, "--old-tree", args.old_tree, "--out", args.out,
               "--steps", str(args.steps), "--seed", str(args.seed), "--validate-every", str(args.validate_every),
               "--side", side]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = open(Path(args.out) / f"{side}.log", "w")
        sides[side] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
    for side, (proc, log) in sides.items():
        code = proc.wait()
        log.close()
        if code:
            print(f"the {side} side failed: {Path(args.out) / f'{side}.log'}")
            return 1
    new = _losses(Path(args.out) / "new" / "metrics.csv", "train_loss")
    old = _losses(Path(args.out) / "old" / "losses.csv", "total")
    n = min(len(new), len(old))
    diffs = [abs(round(a, 5) - b) for a, b in zip(new[:n], old[:n])]
    first = next((i + 1 for i, d in enumerate(diffs) if d > 1e-5), None)
    new_f1 = _losses(Path(args.out) / "new" / "metrics.csv", "val_onset_f1")
    old_f1 = _losses(Path(args.out) / "old" / "metrics.csv", "onset_f1")[:len(new_f1)]  # (and one at its end)
    summary = {"steps": n, "max_abs_diff": max(diffs) if diffs else None, "first_step_differing": first,
               "validation_onset_f1": {"new": [round(x, 4) for x in new_f1], "old": old_f1},
               "new_first": [round(x, 5) for x in new[:5]], "old_first": old[:5],
               "new_last": round(new[n - 1], 5) if n else None, "old_last": old[n - 1] if n else None}
    (Path(args.out) / "lockstep.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
