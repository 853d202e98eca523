"""Onsets and Frames' own transcription table: a trained checkpoint on a MAESTRO-layout test split.

:func:`transcribe_split` writes one MIDI file per test piece for each
system (Onsets and Frames from a checkpoint of ``train onsets-frames``, and
any other registered labeler, such as transkun, as a reference point);
:func:`transcription_rows` scores them with
:func:`tasks.evaluation.scores.score_transcriptions` (mir_eval: notes by
onset at 50 ms, notes with offsets, frames on a 10 ms grid) and lays the
means over pieces out as one row per system and level, in percent, with the
paper's numbers beside Onsets and Frames' rows.

The paper's numbers (:data:`PAPER`) are Hawthorne et al. 2018, table 1:
Onsets and Frames trained on MAPS' synthesised pianos and tested on its
ENSTDkCl recordings. They are not a seed paper's; they stand beside ours for
scale only (other data, other pianos, ``default`` config, 2 million steps
and more).
"""

from __future__ import annotations

import shutil
from pathlib import Path

# level -> "P/R/F1" (Hawthorne et al. 2018, table 1, Onsets and Frames on MAPS ENSTDkCl)
PAPER = {"note": "84.24/80.67/82.29", "note+offset": "51.32/49.31/50.22", "frame": "88.53/70.89/78.30"}
LEVELS = ("note", "note+offset", "frame")


def transcribe_split(data, systems: dict[str, tuple[str, dict]], out_dir, split: str = "test",
                     log=print) -> tuple[Path, dict[str, Path]]:
    """Transcribe every ``split`` piece of the MAESTRO-layout ``data`` with each system.

    ``systems`` maps a row name to ``(labeler, options)`` for
    :func:`tasks.labels.transcribe.get_transcriber`.  Returns the folder of the
    pieces' true MIDI (copied, one per piece) and each system's folder of
    transcriptions, all under ``out_dir``; a transcription already there is
    not made again.
    """
    from tasks.datasets.maestro import read_maestro
    from tasks.labels.transcribe import get_transcriber, transcribe_file, write_midi

    records = read_maestro(data, (split,))
    if not records:
        raise ValueError(f"{data}: no {split!r} pieces to transcribe")
    out = Path(out_dir)
    ref_dir = out / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    for r in records:
        shutil.copyfile(r.midi, ref_dir / f"{r.name}.mid")
    est_dirs = {}
    for name, (labeler, options) in systems.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        todo = [r for r in records if not (folder / f"{r.name}.mid").is_file()]
        if todo:
            transcriber = get_transcriber(labeler, **options)
            for r in todo:
                write_midi(transcribe_file(r.audio, transcriber), folder / f"{r.name}.mid")
            log(f"transcription: {name} transcribed {len(todo)} {split} pieces into {folder}")
        est_dirs[name] = folder
    return ref_dir, est_dirs


def transcription_rows(ref_dir, est_dirs: dict, paper_system: str = "onsets-frames") -> list[dict]:
    """One row per system and level (note, note+offset, frame): P, R, F1 in percent, pieces, the paper's P/R/F1."""
    from tasks.evaluation.scores import score_transcriptions

    summary, _ = score_transcriptions(ref_dir, {k: str(v) for k, v in est_dirs.items()})
    rows = []
    for s in summary:
        for level in LEVELS:
            rows.append({"system": s["system"], "level": level, "pieces": s["pieces"],
                         "P": round(100 * s[f"{level} P"], 2), "R": round(100 * s[f"{level} R"], 2),
                         "F1": round(100 * s[f"{level} F1"], 2),
                         "paper P/R/F1": PAPER[level] if s["system"] == paper_system else ""})
    return rows


NOTES = """Means over the test pieces of mir_eval's scores: "note" matches onsets within 50 ms (and pitch within
50 cents), "note+offset" also needs the offset within 20% of the note's length or 50 ms, "frame" is multipitch
on a 10 ms grid. The paper's column is Hawthorne et al. 2018, table 1 (Onsets and Frames trained on MAPS'
synthesised pianos, tested on its ENSTDkCl recordings): other data, the `default` config and far more steps, so
for scale only. transkun, where present, is the build's default labeler on the same pieces."""


def write_transcription_table(data, checkpoint, out_dir, title: str, device: str = "auto", log=print) -> str:
    """Transcribe ``data``'s test pieces with the Onsets and Frames ``checkpoint`` and with transkun, score them,
    and write ``out_dir/transcription.md`` and ``.parquet`` with provenance; return the markdown's path.

    The transcriptions are kept beside the data, in a folder per checkpoint content, so a retrained network
    transcribes again and an unchanged one does not.
    """
    import time

    from tasks.datasets.maestro import maestro_files
    from tasks.evaluation.results import provenance, write_results
    from tasks.labels.transcribe import pick_device
    from tasks.store.cache import file_fingerprint

    start = time.monotonic()
    folder = Path(data).parent / "transcriptions" / file_fingerprint(checkpoint).replace(":", "-")[:24]
    ref, ests = transcribe_split(data, {"onsets-frames": ("onsets-frames", {"checkpoint": str(checkpoint),
                                                                            "device": device}),
                                        "transkun": ("transkun", {"device": device})}, folder, log=log)
    prov = provenance(str(data), maestro_files(data), checkpoints=[str(checkpoint)], split="test",
                      wall_s=round(time.monotonic() - start, 1), device=pick_device(device))
    md, _ = write_results(out_dir, "transcription", title, transcription_rows(ref, ests), prov, NOTES)
    return md
