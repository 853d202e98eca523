"""Real music excerpts from the music21 corpus, as humanised piano MIDI.

The sample sets need music that is hard enough to measure a transcriber with:
chords *and* fast passages.  The pieces are chosen from the corpus that ships
with the ``music21`` wheel and are listed here by corpus path, with a fixed
quarter-note tempo each, so results never depend on the order in which the
corpus happens to be listed on a machine.

Two disjoint lists:

* :data:`PIANO_PIECES` feed the audio-visual sample videos
  (``tasks.samples.piano.make_piano_samples``);
* :data:`UNSEEN_PIANO_PIECES` feed audio-only recordings that a labeler has
  never seen (``make_piano_recordings``).

Everything random is drawn from a caller-supplied ``numpy.random.Generator``
in a fixed order, so the same seed always gives the same notes.

Lessons learned (music21 10.5):

* ``corpus.parse`` is slow on big quartets (0.2-2 s each); the note lists are
  cached per process with :func:`functools.lru_cache`.
* ``Stream.stripTies`` only merges ties that are sequential in one voice and
  has corner cases with partially tied chords, so ties are merged here by
  hand, per part and per pitch.
* ``Stream.notes`` also yields ``harmony.ChordSymbol`` objects (chord
  symbols of lead sheets) and grace notes with a quarterLength of 0; both are
  skipped.
* Merging the parts of a quartet or chorale gives unisons (two voices on one
  pitch at one time); they are collapsed to one note, and a pitch re-struck
  while still held ends the held note a little before the new onset, so
  every MIDI onset is a real, separately audible key strike.
* pretty_midi stores times in ticks (``resolution`` per beat at the tempo);
  :func:`quantize` round-trips a ``PrettyMIDI`` through its own file bytes so
  that the in-memory notes are *exactly* what a saved ``.mid`` reads back as.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
import pretty_midi

# (corpus path, quarter-note tempo in BPM).  The tempo is a musically sensible
# performance tempo for the movement (the corpus files mostly carry no usable
# metronome mark); a small random factor is applied per excerpt.
_PIANO_PIECES_BPM: tuple[tuple[str, float], ...] = (
    ("joplin/maple_leaf_rag.mxl", 92.0),  # piano rag: octave bass + syncopated chords
    ("bach/bwv846.mxl", 66.0),  # WTC I prelude in C: running 16th arpeggios
    ("mozart/k545/movement1_exposition.mxl", 126.0),  # piano sonata: Alberti bass, scales
    ("schumann_clara/polonaise_op1n1.mxl", 92.0),  # piano: chords, fast figuration
    ("schumann_clara/polonaise_op1n3.mxl", 92.0),  # piano
    ("cpebach/h186.mxl", 56.0),  # keyboard sonata, Poco adagio with 32nd runs
    ("bach/bwv269.mxl", 80.0),  # four-part chorale: block chords
    ("bach/bwv66.6.mxl", 80.0),  # four-part chorale
    ("haydn/opus74no1/movement1.mxl", 116.0),  # quartet merged to piano: chords + runs
    ("mozart/k155/movement1.mxl", 120.0),  # quartet merged to piano
)

_UNSEEN_PIANO_PIECES_BPM: tuple[tuple[str, float], ...] = (
    ("chopin/mazurka06-2.krn", 144.0),  # piano mazurka (Humdrum)
    ("schumann_clara/polonaise_op1n2.mxl", 92.0),  # piano
    ("schumann_clara/polonaise_op1n4.mxl", 92.0),  # piano
    ("mozart/k80/movement1.mxl", 60.0),  # quartet Adagio with fast ornaments
    ("haydn/opus1no1/movement1.mxl", 132.0),  # quartet Presto 6/8
    ("beethoven/opus18no1/movement1.mxl", 152.0),  # quartet Allegro con brio
    ("bach/bwv250.mxl", 80.0),  # four-part chorale
    ("schoenberg/opus19/movement2.mxl", 56.0),  # piano, atonal, sparse chords
)

#: Corpus paths used by the audio-visual piano samples.
PIANO_PIECES: list[str] = [p for p, _ in _PIANO_PIECES_BPM]
#: Corpus paths never used by the samples: for recordings a labeler has not seen.
UNSEEN_PIANO_PIECES: list[str] = [p for p, _ in _UNSEEN_PIANO_PIECES_BPM]
#: Quarter-note tempo of every listed piece.
PIECE_TEMPO_BPM: dict[str, float] = dict(_PIANO_PIECES_BPM + _UNSEEN_PIANO_PIECES_BPM)

assert not set(PIANO_PIECES) & set(UNSEEN_PIANO_PIECES)

PIANO_LOW, PIANO_HIGH = 21, 108  # A0 .. C8
MIN_NOTE_SECONDS = 0.05  # shortest note written (and rendered)
RESTRIKE_GAP = 0.02  # silence between a note and a re-strike of its pitch
VELOCITY_RANGE = (40, 110)

# Ticks per beat of the MIDI files written; at 120 BPM one tick is ~0.52 ms.
MIDI_RESOLUTION = 960
MIDI_TEMPO = 120.0


@dataclass(frozen=True)
class ScoreNotes:
    """All notes of a score, parts merged, in quarter lengths."""

    onset: np.ndarray  # float64, quarter lengths from the start
    duration: np.ndarray  # float64, quarter lengths
    pitch: np.ndarray  # int64, MIDI numbers (may lie outside 21-108)

    def __len__(self) -> int:
        return int(self.onset.size)


def _corpus_parse(path: str):
    from music21 import corpus  # imported lazily: music21 takes ~1 s to import

    return corpus.parse(path)


@functools.lru_cache(maxsize=32)
def score_notes(path: str, parts: tuple[int, ...] | None = None) -> ScoreNotes:
    """Parse a corpus piece and return its notes, all parts merged.

    ``parts`` selects parts by index (e.g. ``(0,)``: a quartet's first
    violin); None takes every part.  Tied notes are merged (per part, per
    pitch), grace notes and chord symbols dropped, transposing instruments
    converted to sounding pitch, and unisons (same pitch, same onset)
    collapsed to the longest note.
    """
    from music21 import harmony

    score = _corpus_parse(path)
    try:
        score = score.toSoundingPitch()
    except Exception:  # some formats carry no transposition info; keep as written
        pass
    all_parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    parts = all_parts if parts is None else [all_parts[i] for i in parts]
    rows: list[tuple[float, float, int]] = []
    for part in parts:
        open_notes: dict[int, int] = {}  # pitch -> index in rows of a note whose tie continues
        for el in part.flatten().notes:
            if isinstance(el, harmony.Harmony):
                continue
            ql = float(el.quarterLength)
            if el.duration.isGrace or ql <= 0:
                continue
            onset = float(el.offset)
            members = list(el.notes) if el.isChord else [el]
            for n in members:
                if not hasattr(n, "pitch"):
                    continue  # unpitched percussion
                midi = int(round(n.pitch.ps))
                tie = n.tie if n.tie is not None else (el.tie if el.isChord else None)
                kind = tie.type if tie is not None else None
                if kind in ("stop", "continue") and midi in open_notes:
                    i = open_notes[midi]
                    o, d, p = rows[i]
                    if abs(o + d - onset) < 1e-6:
                        rows[i] = (o, onset + ql - o, p)
                        if kind == "stop":
                            del open_notes[midi]
                        continue
                rows.append((onset, ql, midi))
                if kind in ("start", "continue"):
                    open_notes[midi] = len(rows) - 1
                else:
                    open_notes.pop(midi, None)
    if not rows:
        raise ValueError(f"corpus piece {path!r} has no pitched notes")
    arr = np.array(rows, dtype=np.float64)
    # Collapse unisons: same onset and pitch -> keep the longest.
    order = np.lexsort((-arr[:, 1], arr[:, 2], arr[:, 0]))
    arr = arr[order]
    keep = np.ones(len(arr), dtype=bool)
    same = (np.abs(np.diff(arr[:, 0])) < 1e-6) & (np.diff(arr[:, 2]) == 0)
    keep[1:] = ~same
    arr = arr[keep]
    return ScoreNotes(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].astype(np.int64))


def fold_into_piano_range(pitch: np.ndarray, low: int = PIANO_LOW, high: int = PIANO_HIGH) -> np.ndarray:
    """Move every pitch outside ``low..high`` by whole octaves into the range."""
    p = np.asarray(pitch, dtype=np.int64).copy()
    below = p < low
    p[below] += 12 * ((low - p[below] + 11) // 12)
    above = p > high
    p[above] -= 12 * ((p[above] - high + 11) // 12)
    return p


def _choose_window(starts: np.ndarray, ends: np.ndarray, length: float, rng: np.random.Generator,
                   tries: int = 40) -> float:
    """Pick the start of a ``length``-second window that is full of music.

    Candidate starts are note onsets (so an excerpt never begins in a rest).
    A window is accepted when it has at least ``max(6, 1.5 * length)`` onsets
    and no silence (between onsets, or before the window's end) longer than
    2.5 s; otherwise the densest tried window is used.
    """
    total = float(ends.max())
    onsets = np.unique(starts)
    if total <= length:
        return float(onsets[0])
    cands = onsets[onsets <= total - length]
    if cands.size == 0:
        return float(onsets[0])
    need = max(6, int(np.ceil(1.5 * length)))
    best, best_count = float(cands[0]), -1
    for _ in range(tries):
        w0 = float(cands[rng.integers(cands.size)])
        inside = onsets[(onsets >= w0) & (onsets < w0 + length)]
        count = int(np.sum((starts >= w0) & (starts < w0 + length)))
        gaps = np.diff(np.concatenate([inside, [w0 + length]]))
        if count >= need and (gaps.size == 0 or gaps.max() <= 2.5):
            return w0
        if count > best_count:
            best, best_count = w0, count
    return best


def humanize(start: np.ndarray, dur: np.ndarray, pitch: np.ndarray, rng: np.random.Generator, *,
             onset_jitter: float = 0.010, velocity_range: tuple[int, int] = (45, 105)):
    """Return ``(start, end, velocity)`` of a human-like performance of the notes.

    * onsets jitter by N(0, ``onset_jitter``) seconds, clipped at 2.5 sigma;
    * velocities follow a per-excerpt base level, a slow phrase curve, a small
      accent on the top note of each chord and N(0, 6) noise, clipped to
      ``velocity_range``;
    * durations are scaled by a per-excerpt articulation (0.80-0.98, a little
      detached to legato) and a per-note log-normal factor (sigma 0.1).
    """
    n = start.size
    jitter = np.clip(rng.normal(0.0, onset_jitter, n), -2.5 * onset_jitter, 2.5 * onset_jitter)
    base = rng.uniform(60.0, 80.0)
    period = rng.uniform(4.0, 10.0)
    phase = rng.uniform(0.0, 2 * np.pi)
    swell = rng.uniform(4.0, 10.0)
    articulation = rng.uniform(0.80, 0.98)
    noise = rng.normal(0.0, 6.0, n)
    per_note = np.exp(rng.normal(0.0, 0.1, n))

    # Top note of every chord (onsets within 30 ms) gets a small accent.
    top = np.zeros(n, dtype=bool)
    order = np.lexsort((-pitch, start))
    group_start = -np.inf
    for i in order:
        if start[i] - group_start > 0.03:
            group_start = start[i]
            top[i] = True
    velocity = base + swell * np.sin(2 * np.pi * start / period + phase) + 5.0 * top + noise
    velocity = np.clip(np.round(velocity), *velocity_range).astype(np.int64)
    new_start = np.maximum(start + jitter, 0.0)
    new_end = new_start + dur * articulation * per_note
    return new_start, new_end, velocity


def clean_notes(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, velocity: np.ndarray, *,
                window_end: float, min_dur: float = MIN_NOTE_SECONDS, gap: float = RESTRIKE_GAP):
    """Make a note list safe to render and to score against.

    Every note lasts at least ``min_dur`` and ends by ``window_end`` (notes
    starting too late for that are dropped); pitches are folded into 21-108;
    two notes of one pitch never overlap: the earlier one ends ``gap`` before
    the re-strike, and a re-strike closer than ``min_dur + gap`` to the
    previous onset is merged into it (it could not be heard as a new note).
    Returns arrays sorted by (start, pitch).
    """
    pitch = fold_into_piano_range(pitch)
    end = np.maximum(end, start + min_dur)
    end = np.minimum(end, window_end)
    ok = end - start >= min_dur - 1e-9
    start, end, pitch, velocity = start[ok], end[ok], pitch[ok], velocity[ok]
    order = np.lexsort((start, pitch))
    start, end, pitch, velocity = start[order], end[order], pitch[order], velocity[order]
    keep = np.ones(start.size, dtype=bool)
    last = -1
    for i in range(start.size):
        if last >= 0 and pitch[last] == pitch[i]:
            if start[i] - start[last] < min_dur + gap:
                end[last] = max(end[last], end[i])
                velocity[last] = max(velocity[last], velocity[i])
                keep[i] = False
                continue
            end[last] = min(end[last], start[i] - gap)
        last = i
    # A merge can extend a note past a later re-strike: resolve once more.
    start, end, pitch, velocity = start[keep], end[keep], pitch[keep], velocity[keep]
    same = np.flatnonzero((pitch[:-1] == pitch[1:]) & (end[:-1] > start[1:] - gap))
    end[same] = start[same + 1] - gap
    order = np.lexsort((pitch, start))
    return start[order], end[order], pitch[order], velocity[order]


def notes_to_midi(start, end, pitch, velocity, *, program: int = 0, name: str = "Piano") -> pretty_midi.PrettyMIDI:
    """One-instrument ``PrettyMIDI`` from note arrays, quantised (see :func:`quantize`)."""
    pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=MIDI_TEMPO)
    inst = pretty_midi.Instrument(program=program, is_drum=False, name=name)
    for s, e, p, v in zip(start, end, pitch, velocity):
        inst.notes.append(pretty_midi.Note(velocity=int(v), pitch=int(p), start=float(s), end=float(e)))
    pm.instruments.append(inst)
    return quantize(pm)


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    """The Standard MIDI File bytes pretty_midi writes for ``pm``."""
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def quantize(pm: pretty_midi.PrettyMIDI) -> pretty_midi.PrettyMIDI:
    """Round-trip through MIDI bytes so the notes equal what a saved file reads back as."""
    return pretty_midi.PrettyMIDI(io.BytesIO(midi_bytes(pm)))


def piece_excerpt(path: str, rng: np.random.Generator, seconds: float, *, pad: float = 0.0,
                  bpm: float | None = None, tempo_spread: float = 0.08) -> pretty_midi.PrettyMIDI:
    """A humanised excerpt of one corpus piece lasting ``seconds``.

    The music fills ``[pad, seconds - pad]``; the first note starts at ``pad``
    (give or take the onset jitter).  The tempo is the piece's listed tempo
    (or ``bpm``) times a random factor in ``1 +- tempo_spread``.
    """
    length = seconds - 2 * pad
    if length <= 0.5:
        raise ValueError(f"excerpt of {seconds} s with pad {pad} s leaves no room for music")
    sn = score_notes(path)
    bpm = float(bpm if bpm is not None else PIECE_TEMPO_BPM.get(path, 100.0))
    bpm *= rng.uniform(1 - tempo_spread, 1 + tempo_spread)
    sec_per_q = 60.0 / bpm
    starts = sn.onset * sec_per_q
    ends = (sn.onset + sn.duration) * sec_per_q
    w0 = _choose_window(starts, ends, length, rng)
    sel = (starts >= w0 - 1e-9) & (starts < w0 + length)
    s = starts[sel] - w0 + pad
    d = ends[sel] - starts[sel]
    p = sn.pitch[sel]
    s, e, v = humanize(s, d, p, rng)
    s, e, p, v = clean_notes(s, e, p, v, window_end=seconds - pad)
    if s.size == 0:
        raise ValueError(f"excerpt of {path!r} has no notes")
    return notes_to_midi(s, e, p, v)


def piano_excerpt(rng: np.random.Generator, seconds: float, pieces: list[str] | None = None, *,
                  pad: float = 0.0) -> tuple[pretty_midi.PrettyMIDI, str]:
    """Pick a piece from ``pieces`` (default :data:`PIANO_PIECES`) and return ``(midi, piece)``.

    The MIDI has one acoustic-piano instrument (program 0) holding all parts,
    every pitch within 21-108, velocities within 45-105, every note at least
    50 ms long and no two notes of one pitch overlapping.
    """
    pieces = list(PIANO_PIECES if pieces is None else pieces)
    if not pieces:
        raise ValueError("no pieces to choose from")
    piece = pieces[int(rng.integers(len(pieces)))]
    return piece_excerpt(piece, rng, seconds, pad=pad), piece


def top_line(pm: pretty_midi.PrettyMIDI, *, chord_window: float = 0.03, gap: float = RESTRIKE_GAP,
             min_dur: float = MIN_NOTE_SECONDS, program: int = 40) -> pretty_midi.PrettyMIDI:
    """Monophonic melody (skyline) of ``pm``: the highest note of every onset group.

    Onsets within ``chord_window`` form one group; each kept note ends at the
    latest ``gap`` before the next kept onset, so the result never has two
    notes sounding at once.  ``program`` defaults to 40 (violin).
    """
    notes = sorted((n for inst in pm.instruments if not inst.is_drum for n in inst.notes),
                   key=lambda n: (n.start, -n.pitch))
    chosen: list[list] = []
    group_start = -np.inf
    for n in notes:
        if n.start - group_start > chord_window:
            group_start = n.start
            chosen.append([n.start, n.end, n.pitch, n.velocity])
    out = []
    for i, (s, e, p, v) in enumerate(chosen):
        if i + 1 < len(chosen):
            e = min(e, chosen[i + 1][0] - gap)
        if e - s >= min_dur:
            out.append((s, e, p, v))
    arr = np.array(out, dtype=np.float64).reshape(-1, 4)
    return notes_to_midi(arr[:, 0], arr[:, 1], arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64),
                         program=program, name="Top line")
