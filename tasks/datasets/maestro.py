"""Training data for Onsets and Frames in MAESTRO's published layout.

MAESTRO (Hawthorne et al. 2019) is a folder holding ``maestro-v<N>.csv``
with one row per performance::

    canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration

``split`` is ``train``, ``validation`` or ``test``; the file names are
relative to the folder (e.g. ``2018/MIDI-...-01.midi`` and ``2018/...-01.wav``).
:func:`read_maestro` reads that CSV (extra columns are ignored, missing
required ones refused), so a user with MAESTRO trains on it unchanged, and
``sightsound samples piano-audio`` writes its rendered pieces in the same
layout (:mod:`tasks.samples.piano_audio`).  A CSV that is not UTF-8 text,
not CSV, names a file outside the folder (or with a control character in its
name), or gives a duration that is not a finite number of seconds is refused
with a one-line :class:`MaestroError` naming the file and row.

Labels are made with Magenta's ``note_seq``: the MIDI is read as a
NoteSequence, note offsets are extended by the sustain pedal (CC 64 >= 64)
until the pedal lifts or the key is struck again
(``sequences_lib.apply_sustain_control_changes``), and the rolls on the front
end's frame grid (31.25 frames per second) come from
``sequences_lib.sequence_to_pianoroll``: the onset and offset labels are one
frame each (the frame whose centre is nearest the event), the frame label
covers every frame the note touches, and the velocity label is the MIDI velocity on the onset
frame (see :func:`note_labels`).

Features are computed once per recording with the model's own front end and
cached as ``.npz`` under a cache folder, keyed by the audio and MIDI files'
size and mtime and the front-end settings, so a training run reads them
instead of decoding and transforming audio at every step.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models import onsets_frames as of
from tasks.datasets.manifest import one_line, read_manifest_text, show
from tasks.labels.transcribe import Note

REQUIRED_COLUMNS = ("split", "midi_filename", "audio_filename")
SPLITS = ("train", "validation", "test")


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_DURATION_S = 24 * 3600.0


class MaestroError(ValueError):
    """A MAESTRO-layout folder or CSV that cannot be used; the message is one line."""

    def __init__(self, message: str):
        super().__init__(one_line(message, 500))


@dataclass(frozen=True)
class Recording:
    split: str
    audio: Path  # absolute
    midi: Path  # absolute
    title: str = ""
    duration: float = 0.0

    @property
    def name(self) -> str:
        return self.audio.stem


def find_csv(root: str | os.PathLike) -> Path:
    """The metadata CSV of a MAESTRO-layout folder (``root`` itself when it is a file)."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise MaestroError(f"no such folder or CSV: {root}")
    found = sorted(root.glob("maestro-v*.csv")) or sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise MaestroError(f"{root} must hold exactly one metadata CSV (maestro-v*.csv); found "
                           f"{[p.name for p in found] or 'none'}")
    return found[0]


def read_maestro(root: str | os.PathLike, splits: tuple[str, ...] | None = None, *,
                 check_files: bool = True) -> list[Recording]:
    """Rows of a MAESTRO-layout CSV, in file order, optionally only ``splits``.

    File names are resolved against the CSV's folder and must stay inside it;
    with ``check_files`` every audio and MIDI file must exist.
    """
    path = find_csv(root)
    base = path.parent.resolve()
    try:
        text = read_manifest_text(path)
    except ValueError as exc:
        raise MaestroError(f"{path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        records = list(reader)
    except csv.Error as exc:
        raise MaestroError(f"{path}:{reader.line_num}: not CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MaestroError(f"{path} lacks the column(s) {missing}; MAESTRO's CSV has "
                           "canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration")
    rows = []
    for line, r in enumerate(records, start=2):
        r = {k: v.strip() if isinstance(v, str) else "" for k, v in r.items() if k}
        split = r["split"]
        if split not in SPLITS:
            raise MaestroError(f"{path}:{line}: split {show(split)} is not one of {', '.join(SPLITS)}")
        files = []
        for col in ("audio_filename", "midi_filename"):
            name = r[col]
            try:
                full = (base / name).resolve() if name and not _CONTROL.search(name) else None
            except (OSError, ValueError):
                full = None
            if full is None or base not in full.parents:
                raise MaestroError(f"{path}:{line}: {col} {show(name, 60)} is not a file name inside {base}")
            try:
                exists = full.is_file()
            except (OSError, ValueError):
                exists = False
            if check_files and not exists:
                raise MaestroError(f"{path}:{line}: {col} {show(name, 60)} does not exist")
            files.append(full)
        try:
            duration = float(r.get("duration") or 0.0)
        except ValueError:
            duration = math.nan
        if not 0 <= duration <= MAX_DURATION_S:
            raise MaestroError(f"{path}:{line}: duration {show(r.get('duration'))} is not a number of seconds "
                               f"from 0 to {MAX_DURATION_S:g}")
        rows.append(Recording(split, files[0], files[1], r.get("canonical_title") or "", duration))
    if splits is not None:
        rows = [r for r in rows if r.split in splits]
    return rows


def write_maestro_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write a MAESTRO-format CSV (header + rows with MAESTRO's seven columns)."""
    from tasks.store.atomic import write_text_atomic
    import io

    cols = ["canonical_composer", "canonical_title", "split", "year", "midi_filename", "audio_filename", "duration"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c, "") for c in cols})
    return write_text_atomic(path, buf.getvalue())


# ---------------------------------------------------------------- MIDI -> labels


def _note_seq():
    """``(midi_io, music_pb2, sequences_lib)`` of Magenta's note_seq.

    Imported with a filter:
    pydub, which note_seq's package imports, warns (RuntimeWarning) when no
    ffmpeg is on PATH, and nothing here decodes audio (``note_seq.audio_io``
    is never called).
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from note_seq import midi_io, sequences_lib
        from note_seq.protobuf import music_pb2
    return midi_io, music_pb2, sequences_lib


def read_performance(path: str | os.PathLike, sustain: bool = True) -> list[Note]:
    """Piano notes of a performance MIDI, offsets extended by the sustain pedal when ``sustain``.

    Read with ``note_seq.midi_io.midi_file_to_note_sequence``; the pedal is
    applied by ``sequences_lib.apply_sustain_control_changes`` (CC 64 >= 64,
    per instrument): a note released while the pedal is down sounds until the
    pedal lifts or its key is struck again, and one still held by the pedal
    when the file ends lasts to the file's last event.  Drum notes are dropped.
    """
    midi_io, _, sequences_lib = _note_seq()
    try:
        sequence = midi_io.midi_file_to_note_sequence(str(path))
    except Exception as exc:  # MIDIConversionError, or OSError for an unreadable file
        raise MaestroError(f"cannot read MIDI {path}: {exc}") from None
    if sustain:
        sequence = sequences_lib.apply_sustain_control_changes(sequence)
    notes = [Note(float(n.start_time), float(n.end_time), int(n.pitch), int(n.velocity))
             for n in sequence.notes if not n.is_drum]
    return sorted(notes, key=lambda n: (n.onset, n.pitch))


HALF_FRAME = 0.5  # frames: moves sequence_to_pianoroll's frame edges onto the front end's frame centres (note_labels)


def note_labels(notes: list[Note], n_frames: int, fps: float = of.FRAMES_PER_SECOND) -> dict[str, np.ndarray]:
    """``onset``, ``offset``, ``frame`` (uint8 0/1) and ``velocity`` (uint8 MIDI velocity) rolls, ``(n_frames, 88)``.

    Made by ``note_seq.sequences_lib.sequence_to_pianoroll`` (keys MIDI 21..108,
    ``onset_mode="length_ms"`` with ``onset_length_ms=0`` and
    ``offset_length_ms=0``).  That function's frame ``k`` is the interval
    ``[k, k + 1) / fps``, but the front end's frame ``k`` is an STFT window
    *centred* on ``k / fps`` (``center=True``), and :func:`decode_notes
    <models.onsets_frames.decode_notes>` puts a note decoded on frame ``k`` at
    ``k / fps``.  So the notes are handed to it half a frame late
    (:data:`HALF_FRAME`): an event at ``t`` seconds then lands on the frame
    whose centre is nearest, ``round(t * fps)``.  With ``x = t * fps + 0.5``
    for each event: a note's ``onset`` is the one frame ``floor(x_start)``, its
    ``frame`` label covers ``floor(x_start)`` up to but not including
    ``max(floor(x_start) + 1, ceil(x_end))``, and its ``offset`` is the one
    frame ``floor(x_end)``, the frame nearest the release.  (Without the shift
    867 of 1759 onsets of the 80-piece sample set sat one frame early;
    docs/training.md, "Before and after the port", has what it changes.)
    ``velocity`` is the note's MIDI velocity on its onset frame (the
    later-starting note's where two share one).  Rows past ``n_frames`` are
    cut off, missing ones are zeros.
    """
    _, music_pb2, sequences_lib = _note_seq()
    sequence = music_pb2.NoteSequence()
    for n in notes:
        if of.MIN_MIDI <= n.pitch <= of.MAX_MIDI:  # sequence_to_pianoroll would log each one it skips
            start, end = n.onset + HALF_FRAME / fps, n.offset + HALF_FRAME / fps
            sequence.notes.add(start_time=start, end_time=end, pitch=n.pitch, velocity=n.velocity)
            sequence.total_time = max(sequence.total_time, end)
    roll = sequences_lib.sequence_to_pianoroll(
        sequence, frames_per_second=fps, min_pitch=of.MIN_MIDI, max_pitch=of.MAX_MIDI,
        onset_mode="length_ms", onset_length_ms=0, offset_length_ms=0)
    arrays = {"onset": roll.onsets, "offset": roll.offsets, "frame": roll.active,
              "velocity": np.rint(roll.onset_velocities * 127)}
    rolls = {}
    for k, a in arrays.items():
        out = np.zeros((n_frames, of.N_KEYS), dtype=np.uint8)
        m = min(n_frames, a.shape[0])
        out[:m] = a[:m]
        rolls[k] = out
    return rolls


# ---------------------------------------------------------------- audio and features


def load_audio(path: str | os.PathLike, sample_rate: int = of.SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (channels averaged, resampled with soxr)."""
    import soundfile as sf
    import soxr

    y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != sample_rate:
        y = soxr.resample(y, sr, sample_rate, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(y, dtype=np.float32)


def _fingerprint(*paths: Path) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    front = (of.SAMPLE_RATE, of.N_FFT, of.HOP_LENGTH, of.N_MELS, of.F_MIN, of.TOP_DB, "htk", "v3")
    h.update(json.dumps(front).encode())
    return h.hexdigest()[:16]


def cache_features(rec: Recording, cache_dir: str | os.PathLike, frontend=None) -> Path:
    """Compute (or find) the cached log-mel and label rolls of one recording; return the ``.npz`` path.

    The file holds ``mel`` (float16, ``(frames, 229)``) and the uint8 rolls
    of :func:`note_labels`.
    """
    import torch

    cache_dir = Path(cache_dir)
    out = cache_dir / f"{rec.name}-{_fingerprint(rec.audio, rec.midi)}.npz"
    if out.is_file():
        return out
    frontend = frontend or of.MelFrontEnd()
    audio = load_audio(rec.audio)
    with torch.inference_mode():
        mel = frontend(torch.from_numpy(audio)).numpy()
    labels = note_labels(read_performance(rec.midi), mel.shape[0])
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.part.npz")
    np.savez(tmp, mel=mel.astype(np.float16), **labels)
    os.replace(tmp, out)
    return out


@dataclass
class Features:
    name: str
    mel: np.ndarray  # float16 (frames, 229)
    onset: np.ndarray
    offset: np.ndarray
    frame: np.ndarray
    velocity: np.ndarray  # uint8 MIDI velocity on onset frames

    @property
    def frames(self) -> int:
        return int(self.mel.shape[0])


def load_features(path: str | os.PathLike, name: str | None = None) -> Features:
    with np.load(path) as z:
        return Features(name or Path(path).stem, z["mel"], z["onset"], z["offset"], z["frame"], z["velocity"])


def prepare(recordings: list[Recording], cache_dir: str | os.PathLike) -> list[Features]:
    """Cached features of every recording (computed on first use)."""
    frontend = of.MelFrontEnd()
    return [load_features(cache_features(r, cache_dir, frontend), r.name) for r in recordings]


class WindowSampler:
    """Random training windows of ``window`` frames from cached recordings.

    A window's recording is drawn in proportion to its length, its start
    uniformly; recordings shorter than the window are zero-padded (mel at the
    front end's floor).  ``batch(rng, size)`` returns float32 tensors
    ``mel`` ``(size, window, 229)`` and ``onset``/``offset``/``frame``/``velocity``
    ``(size, window, 88)`` (velocity as a fraction of 127).
    """

    def __init__(self, features: list[Features], window: int):
        if not features:
            raise ValueError("no training recordings")
        self.features, self.window = features, int(window)
        lengths = np.array([max(1, f.frames - self.window + 1) for f in features], dtype=np.float64)
        self.p = lengths / lengths.sum()

    def batch(self, rng: np.random.Generator, size: int) -> dict:
        import torch

        w = self.window
        mel = np.empty((size, w, self.features[0].mel.shape[1]), dtype=np.float32)
        rolls = {k: np.zeros((size, w, of.N_KEYS), dtype=np.float32) for k in ("onset", "offset", "frame", "velocity")}
        for b in range(size):
            f = self.features[int(rng.choice(len(self.features), p=self.p))]
            s = int(rng.integers(0, max(1, f.frames - w + 1)))
            n = min(w, f.frames - s)
            seg = f.mel[s:s + n].astype(np.float32)
            mel[b, :n] = seg
            mel[b, n:] = seg.min() if n else 0.0
            for k in rolls:
                rolls[k][b, :n] = getattr(f, k)[s:s + n]
        rolls["velocity"] /= 127.0
        return {"mel": torch.from_numpy(mel), **{k: torch.from_numpy(v) for k, v in rolls.items()}}



def maestro_files(root: str | os.PathLike) -> list[str]:
    """Every audio and MIDI file of a MAESTRO-layout set, sorted (what a digest of the set is made of)."""
    return sorted(str(p) for r in read_maestro(root) for p in (r.audio, r.midi))
