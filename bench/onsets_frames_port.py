"""Issue 13's comparison run: Onsets and Frames on the shared trainer, with note_seq's label rolls or the old loop's.

    .venv/bin/python bench/onsets_frames_port.py --data PA --out RUN [--labels old|note_seq] [--seed 0]
        [--steps 2483] [--validate-every 250] [--threads 1]

PA is ``sightsound samples piano-audio --out PA --pieces 80 --seconds 30 --seed 0``.  ``--labels old`` swaps
``tasks.datasets.maestro.note_labels`` for the rolls of the hand-written loop of tree ``765038b`` (a note's
frames from ``round(onset * fps)`` up to ``round(offset * fps)``, at least one; its offset frame the first
after the note), which note_seq's rolls replaced (their frame target runs one frame longer).  The run is
resumable (rerun the same command).  Its validation onset F1 by step is in ``RUN/metrics.csv``; a step that
is not a multiple of ``--validate-every`` can be scored with ``--score-last`` after the run.  The numbers it
gave are in docs/training.md, "Before and after the port".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def old_note_labels(notes, n_frames, fps=None):
    """The hand-written loop's rolls (tree 765038b): ``round`` on both ends of a note."""
    from models import onsets_frames as of

    fps = of.FRAMES_PER_SECOND if fps is None else fps
    rolls = {k: np.zeros((n_frames, of.N_KEYS), dtype=np.uint8) for k in ("onset", "offset", "frame", "velocity")}
    for n in notes:
        k = n.pitch - of.MIN_MIDI
        if not 0 <= k < of.N_KEYS:
            continue
        t0 = int(round(n.onset * fps))
        t1 = max(t0 + 1, int(round(n.offset * fps)))
        if t0 >= n_frames:
            continue
        rolls["frame"][t0:min(t1, n_frames), k] = 1
        rolls["onset"][t0, k] = 1
        rolls["velocity"][t0, k] = max(int(rolls["velocity"][t0, k]), int(n.velocity))
        if t1 < n_frames:
            rolls["offset"][t1, k] = 1
    return rolls


def score_last(settings) -> dict:
    """The run's own validation scores of ``RUN/checkpoints/last.ckpt``."""
    import torch

    from tasks.training.onsets_frames import OnsetsFramesTask, ValidationPieces, _prepare

    _, val_feats, val_refs = _prepare(settings, print)
    ckpt = torch.load(Path(settings.out_dir) / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    task = OnsetsFramesTask(settings.config)
    task.load_state_dict(ckpt["state_dict"])
    task.eval()
    pieces = ValidationPieces(val_feats, val_refs)
    with torch.no_grad():
        for i in range(len(pieces)):
            task.validation_step(pieces[i], i)
    return {"step": int(ckpt["global_step"]), "onset_f1": float(np.mean([r["onset_f1"] for r in task._scores]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a MAESTRO-layout folder (samples piano-audio)")
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--labels", choices=("old", "note_seq"), default="old")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2483)
    parser.add_argument("--validate-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--score-last", action="store_true", help="only score last.ckpt of a finished run")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.labels == "old":
        import tasks.datasets.maestro as maestro

        maestro.note_labels = old_note_labels  # cache_features calls it through the module
    from tasks.training.onsets_frames import TrainSettings, train

    settings = TrainSettings(data=args.data, out_dir=args.out, config="small", max_steps=args.steps,
                             validate_every=args.validate_every, seed=args.seed, threads=args.threads,
                             progress_bar=False)
    print(score_last(settings) if args.score_last else train(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
