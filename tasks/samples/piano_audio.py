"""Rendered piano recordings in MAESTRO's layout, for training Onsets and Frames offline.

``make_piano_audio(out, pieces=N)`` renders excerpts of ``N`` real pieces --
the music21 corpus (piano music, string quartets, chorales, madrigals merged
to one piano part) and the MIDI files that ship inside installed packages
(music21's recording of Mozart's K. 525) -- with a SoundFont, and writes::

    piano-audio.csv                 MAESTRO's columns: canonical_composer, canonical_title,
                                    split, year, midi_filename, audio_filename, duration
    train/piece_000.wav             44.1 kHz mono 16-bit
    train/piece_000.midi            the true notes (times from the start of the audio)
    validation/..., test/...
    render_settings.json            per piece: source, tempo factor, SoundFont and augmentation

so :func:`tasks.datasets.maestro.read_maestro` reads it exactly as it reads MAESTRO.

Splits are by piece and never share a piece: piece ``j`` of the fixed pool
order (:func:`piece_pool`) is ``validation`` when ``j % 8 == 3``, ``test``
when ``j % 8 == 6`` and ``train`` otherwise, so asking for more pieces adds
pieces without moving the earlier ones.

Augmentation (per piece, drawn from ``numpy.random.default_rng([seed, j])``):
the tempo varies by +-8 % around the piece's tempo (plus the humanised
timing and velocities of :mod:`tasks.samples.music`); the rendering gets a
random low/high-shelf equalisation (-6..+6 dB at 250 Hz, -8..+4 dB at 4 kHz),
a synthetic room (RT60 0.2-0.8 s) with probability 0.7, pink or white noise
at 20-40 dB SNR with probability 0.7, and a gain of -12..0 dB after
normalising the peak to 0.8.  Every split is augmented the same way, so the
held-out pieces come from the same distribution as the training pieces.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pretty_midi

from tasks.store.atomic import write_bytes_atomic, write_text_atomic

from . import music
from .render import (add_noise, add_room_reverb, apply_eq, apply_gain, default_soundfont, normalize_peak,
                     render_midi, write_wav)

SAMPLE_RATE = 44100
PAD_SECONDS = 0.5
CSV_NAME = "piano-audio.csv"

# Default tempo (quarter-note BPM) of corpus folders without a listed tempo.
_FOLDER_BPM = {"bach": 80.0, "monteverdi": 90.0, "josquin": 100.0, "palestrina": 90.0}
# Corpus folders used, each read in sorted order; the pool interleaves them.
_CORPUS_FOLDERS = ("beethoven", "mozart", "haydn", "schumann_robert", "schumann_clara", "monteverdi", "josquin",
                   "bach", "schoenberg", "cpebach", "joplin", "chopin", "schubert", "handel", "corelli", "beach",
                   "verdi", "weber", "luca")
_PER_FOLDER = {"bach": 24, "monteverdi": 12}  # the rest: every score of the folder
_PACKAGED_MIDI = (("music21", "omr/k525MIDIMvt1.mid"),)  # real pieces shipped as MIDI inside packages


@functools.lru_cache(maxsize=1)
def piece_pool() -> tuple[str, ...]:
    """Every usable source in a fixed order: listed sample pieces first, then the corpus
    folders interleaved, then packaged MIDI files (as ``midi:<package>/<path>``)."""
    from music21 import corpus

    listed = list(music.PIANO_PIECES) + list(music.UNSEEN_PIANO_PIECES)
    groups = []
    for folder in _CORPUS_FOLDERS:
        paths = sorted(str(p).replace(os.sep, "/").split("/corpus/", 1)[-1] for p in corpus.getComposer(folder))
        by_stem: dict[str, str] = {}
        for p in paths:
            stem, ext = p.rsplit(".", 1)
            if ext not in ("mxl", "xml", "musicxml", "krn", "abc"):
                continue
            if stem not in by_stem or ext == "mxl":  # one format per score, MusicXML preferred
                by_stem[stem] = p
        chosen = [p for p in sorted(by_stem.values()) if p not in listed and not p.endswith(("opus133.mxl",))]
        if folder in _PER_FOLDER and len(chosen) > _PER_FOLDER[folder]:
            step = len(chosen) / _PER_FOLDER[folder]
            chosen = [chosen[int(i * step)] for i in range(_PER_FOLDER[folder])]
        groups.append(chosen)
    pool = list(listed)
    for i in range(max(len(g) for g in groups)):
        pool.extend(g[i] for g in groups if i < len(g))
    for package, rel in _PACKAGED_MIDI:
        if _packaged_midi(package, rel) is not None:
            pool.append(f"midi:{package}/{rel}")
    return tuple(pool)


def _packaged_midi(package: str, rel: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve().parent / rel
    return path if path.is_file() else None


def split_of(j: int) -> str:
    return "validation" if j % 8 == 3 else "test" if j % 8 == 6 else "train"


def midi_file_excerpt(path: str | os.PathLike, rng: np.random.Generator, seconds: float, *, pad: float = 0.0,
                      tempo_spread: float = 0.08) -> pretty_midi.PrettyMIDI:
    """A humanised piano excerpt of any MIDI file: all non-drum parts merged onto one piano,
    times scaled by a tempo factor in ``1 +- tempo_spread``."""
    pm = pretty_midi.PrettyMIDI(str(path))
    notes = [n for inst in pm.instruments if not inst.is_drum for n in inst.notes]
    if not notes:
        raise ValueError(f"{path} has no notes")
    factor = 1.0 / rng.uniform(1 - tempo_spread, 1 + tempo_spread)
    starts = np.array([n.start for n in notes]) * factor
    ends = np.array([n.end for n in notes]) * factor
    pitch = np.array([n.pitch for n in notes], dtype=np.int64)
    length = seconds - 2 * pad
    w0 = music._choose_window(starts, ends, length, rng)
    sel = (starts >= w0 - 1e-9) & (starts < w0 + length)
    s, e, v = music.humanize(starts[sel] - w0 + pad, ends[sel] - starts[sel], pitch[sel], rng)
    s, e, p, v = music.clean_notes(s, e, pitch[sel], v, window_end=seconds - pad)
    if s.size == 0:
        raise ValueError(f"excerpt of {path} has no notes")
    return music.notes_to_midi(s, e, p, v)


def _excerpt(source: str, rng: np.random.Generator, seconds: float) -> pretty_midi.PrettyMIDI:
    if source.startswith("midi:"):
        package, rel = source[5:].split("/", 1)
        return midi_file_excerpt(_packaged_midi(package, rel), rng, seconds, pad=PAD_SECONDS)
    folder = source.split("/", 1)[0]
    bpm = music.PIECE_TEMPO_BPM.get(source, _FOLDER_BPM.get(folder, 100.0))
    return music.piece_excerpt(source, rng, seconds, pad=PAD_SECONDS, bpm=bpm)


def augment(y: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Equalisation, room, noise and gain (see the module docstring); returns ``(audio, settings)``."""
    s: dict = {"eq_low_db": round(float(rng.uniform(-6, 6)), 2), "eq_high_db": round(float(rng.uniform(-8, 4)), 2)}
    y = apply_eq(y, sr, low_db=s["eq_low_db"], high_db=s["eq_high_db"])
    if rng.random() < 0.7:
        s["rt60"] = round(float(rng.uniform(0.2, 0.8)), 3)
        y = add_room_reverb(y, sr, rng, rt60=s["rt60"], drr_db=float(rng.uniform(4.0, 12.0)))
    if rng.random() < 0.7:
        s["snr_db"] = round(float(rng.uniform(20.0, 40.0)), 2)
        s["noise"] = "pink" if rng.random() < 0.5 else "white"
        y = add_noise(y, rng, s["snr_db"], color=s["noise"])
    s["gain_db"] = round(float(rng.uniform(-12.0, 0.0)), 2)
    y = apply_gain(normalize_peak(y, 0.8), s["gain_db"])
    return y, s


def make_piano_audio(out_dir: str | os.PathLike, pieces: int = 48, seconds: float = 30.0, seed: int = 0,
                     soundfonts: list[str | os.PathLike] | None = None, augmentation: bool = True,
                     log=None) -> Path:
    """Render ``pieces`` excerpts of ``seconds`` in MAESTRO's layout under ``out_dir``; return the CSV's path.

    ``soundfonts`` (default: pretty_midi's TimGM6mb.sf2) are used in turn per
    piece.  A piece whose audio and MIDI already exist with the same settings
    is not rendered again.
    """
    from tasks.datasets.maestro import write_maestro_csv

    pool = piece_pool()
    if not 1 <= pieces <= len(pool):
        raise ValueError(f"pieces must be 1..{len(pool)} (the sources available), not {pieces}")
    if seconds <= 2 * PAD_SECONDS + 1.0:
        raise ValueError(f"seconds must exceed {2 * PAD_SECONDS + 1.0}")
    fonts = [Path(f) for f in (soundfonts or [default_soundfont()])]
    for f in fonts:
        if not f.is_file():
            raise FileNotFoundError(f"no such SoundFont: {f}")
    out_dir = Path(out_dir)
    settings_path = out_dir / "render_settings.json"
    old = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    rows, settings = [], {}
    for j in range(pieces):
        source, split = pool[j], split_of(j)
        pid = f"piece_{j:03d}"
        font = fonts[j % len(fonts)]
        key = {"source": source, "seconds": seconds, "seed": seed, "soundfont": font.name, "augment": augmentation}
        wav, mid = out_dir / split / f"{pid}.wav", out_dir / split / f"{pid}.midi"
        prev = old.get(pid, {})
        if wav.is_file() and mid.is_file() and all(prev.get(k) == v for k, v in key.items()):
            settings[pid] = prev
        else:
            rng = np.random.default_rng([seed, j])
            pm = _excerpt(source, rng, seconds)
            pm.instruments[0].name = f"Piano ({source})"
            data = music.midi_bytes(pm)
            y = render_midi(pretty_midi.PrettyMIDI(__import__("io").BytesIO(data)), font, SAMPLE_RATE,
                            duration=seconds)
            aug = {}
            if augmentation:
                y, aug = augment(y, SAMPLE_RATE, rng)
            write_wav(wav, y, SAMPLE_RATE)
            write_bytes_atomic(mid, data)
            settings[pid] = {**key, **aug}
            if log:
                log(f"{pid} [{split}] {source}: {aug}")
        composer = "packaged MIDI" if source.startswith("midi:") else source.split("/")[0]
        rows.append({"canonical_composer": composer, "canonical_title": f"{source} ({font.stem})", "split": split,
                     "year": "", "midi_filename": f"{split}/{pid}.midi", "audio_filename": f"{split}/{pid}.wav",
                     "duration": f"{seconds:.3f}"})
    write_text_atomic(settings_path, json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return write_maestro_csv(out_dir / CSV_NAME, rows)
