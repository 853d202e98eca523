"""A harder violin test set: recordings unlike the sample set's, with their true pitch per frame.

``make_violin_hard_set`` writes audio-only violin recordings for measuring a
pitch labeler on material that differs from the sample videos in every way
the sample set controls:

* **Synthesiser and SoundFont**: FluidSynth (Debian's ``fluidsynth``, run as
  a program) with the SoundFonts Debian packages carry: FluidR3_GM
  (``fluid-soundfont-gm``) and MuseScore General (``musescore-general-soundfont-small``),
  alternating by recording.  The sample set uses rustysynth with TimGM6mb
  and Merlin.
* **Pieces**: violin lines (first violin of quartets, fiddle tunes and folk
  melodies of the music21 corpus) that neither the sample videos nor
  ``make_violin_recordings`` use (:data:`HARD_VIOLIN_PIECES`).
* **Playing**: humanised onsets (N(0, 20 ms)) and a slow tempo drift
  (rubato, +-6%), per passage either *legato* (each note runs into the next,
  no gap) or *détaché* (a 30-90 ms gap before each note), vibrato by pitch
  bend at 4.5-7 Hz and 15-35 cents (below 50 cents, so the sounding semitone
  is the written one), velocities 45-115.
* **Room and noise**: FluidSynth's own reverb off, then a synthetic room
  (:func:`tasks.samples.render.add_room_reverb`, RT60 0.5-1.2 s,
  direct-to-reverberant 2-8 dB) and pink or white noise at 15-30 dB SNR.

Per recording it writes ``violin_hard_000.wav`` (44.1 kHz mono 16-bit),
``violin_hard_000.mid`` (the notes and bends exactly as rendered) and
``violin_hard_000.csv`` (``time,midi,hz``: the true pitch per 10 ms frame,
the MIDI note sounding at the frame's time, 0 where none, and its Hz with the
vibrato's bend), plus ``hard_set.json`` listing what made each one.

FluidSynth is LGPL and a separate program; nothing links it.  Without it
(or the SoundFonts) :func:`fluidsynth_available` says what to install.

Lessons learned (FluidSynth 2.3.1):

* ``fluidsynth -ni -F out.wav`` renders a MIDI file as fast as it can; its
  options must come before the SoundFont and the MIDI file.  ``-R 0 -C 0``
  turn its reverb and chorus off, so the room is ours and known.
* It honours pitch bend with the General MIDI default range of +-2
  semitones, as rustysynth does, so the sample set's vibrato code is reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf

from tasks.store.atomic import write_bytes_atomic, write_text_atomic

from . import music
from .piano import _piece_order
from .render import add_noise, add_room_reverb, normalize_peak, write_wav
from .violin import (BEND_RANGE_SEMITONES, SAMPLE_RATE, VIOLIN_HIGH, VIOLIN_LOW, VIOLIN_PIECES, VIOLIN_PROGRAM,
                     UNSEEN_VIOLIN_PIECES, make_monophonic, octave_shift, sounding_pitch, vibrato_bends)

RATE = 100  # truth frames per second (the audit's rate)

#: (corpus path, quarter-note tempo in BPM, part index or None for a one-part score)
_HARD_PIECES: tuple[tuple[str, float, int | None], ...] = (
    ("beethoven/opus18no4.mxl", 100.0, 0),  # quartet in C minor, Violin I: Allegro ma non tanto
    ("beethoven/opus18no5.mxl", 110.0, 0),  # quartet in A, Violin I: Allegro
    ("mozart/k155/movement1.mxl", 100.0, 0),  # quartet in D, Violin I: Allegro
    ("mozart/k155/movement2.mxl", 60.0, 0),  # quartet in D, Violin I: Andante
    ("mozart/k80/movement1.mxl", 56.0, 0),  # quartet in G, Violin I: Adagio
    ("beethoven/opus18no3.mxl", 110.0, 0),  # quartet in D, Violin I: Allegro
    ("beethoven/opus59no1/movement3.mxl", 50.0, 0),  # "Razumovsky" quartet, Violin I: Adagio molto e mesto
    ("beethoven/opus59no3/movement2.mxl", 66.0, 0),  # "Razumovsky" quartet, Violin I: Andante con moto
    ("ryansMammoth/AWillieWeHaveMissdYouStrathspey.abc", 72.0, None),  # fiddle tune (strathspey)
)

HARD_VIOLIN_PIECES: list[str] = [p if k in (None, 0) else f"{p}#{k}" for p, _, k in _HARD_PIECES]
_TEMPO = {name: bpm for name, (_, bpm, _) in zip(HARD_VIOLIN_PIECES, _HARD_PIECES)}
_PART = {name: k for name, (_, _, k) in zip(HARD_VIOLIN_PIECES, _HARD_PIECES)}

assert not set(HARD_VIOLIN_PIECES) & (set(VIOLIN_PIECES) | set(UNSEEN_VIOLIN_PIECES))

#: Debian's SoundFonts, tried in this order; each recording takes the next one that exists.
SOUNDFONTS: tuple[str, ...] = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
)
INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm musescore-general-soundfont-small"


def available_soundfonts() -> list[str]:
    """The SoundFonts of :data:`SOUNDFONTS` present on this machine (the same file once)."""
    seen, out = set(), []
    for p in SOUNDFONTS:
        if os.path.exists(p):
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                out.append(p)
    return out


def fluidsynth_available() -> str | None:
    """None when FluidSynth and at least one SoundFont are here, else what is missing and how to install it."""
    if shutil.which("fluidsynth") is None:
        return f"the harder violin set needs FluidSynth: {INSTALL_HINT}"
    if not available_soundfonts():
        return f"the harder violin set needs a Debian SoundFont ({', '.join(SOUNDFONTS)}): {INSTALL_HINT}"
    return None


def render_fluidsynth(pm: pretty_midi.PrettyMIDI, soundfont: str, sr: int = SAMPLE_RATE,
                      duration: float | None = None) -> np.ndarray:
    """``pm`` rendered by the ``fluidsynth`` program with ``soundfont``, reverb and chorus off; mono float32."""
    missing = fluidsynth_available()
    if missing:
        raise RuntimeError(missing)
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        pm.write(str(mid))
        cmd = ["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(sr), "-T", "wav",
               "-F", str(wav), soundfont, str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or not wav.exists():
            raise RuntimeError(f"fluidsynth failed on {soundfont}: {(res.stderr or res.stdout).strip()[:300]}")
        y, native = sf.read(str(wav), dtype="float64", always_2d=True)
    if native != sr:
        raise RuntimeError(f"fluidsynth wrote {native} Hz, not {sr}")
    y = y.mean(axis=1)
    if duration is not None:
        n = int(round(duration * sr))
        y = y[:n] if y.size >= n else np.pad(y, (0, n - y.size))
    return normalize_peak(y, 0.8)


def hard_excerpt(piece: str, rng: np.random.Generator, seconds: float, *, pad: float = 0.5
                 ) -> tuple[pretty_midi.PrettyMIDI, list[str]]:
    """A monophonic violin excerpt of ``piece``: rubato, legato and détaché passages, wide vibrato.

    Returns the MIDI and the articulation of each note (``"legato"`` or ``"detache"``).
    """
    part = _PART.get(piece)
    sn = music.score_notes(piece.split("#", 1)[0], None if part is None else (part,))
    bpm = _TEMPO.get(piece, 100.0) * rng.uniform(0.92, 1.08)
    starts = sn.onset * 60.0 / bpm
    ends = (sn.onset + sn.duration) * 60.0 / bpm
    length = seconds - 2 * pad
    w0 = music._choose_window(starts, ends, length, rng)
    sel = (starts >= w0 - 1e-9) & (starts < w0 + length)
    s, d, p = starts[sel] - w0, ends[sel] - starts[sel], sn.pitch[sel]
    # Rubato: a slow random tempo curve (+-6%), integrated so that time stays monotonic.
    grid = np.linspace(0.0, length, 64)
    speed = 1.0 + 0.06 * np.sin(2 * np.pi * grid / rng.uniform(4.0, 9.0) + rng.uniform(0, 2 * np.pi))
    warp = np.concatenate([[0.0], np.cumsum(np.diff(grid) / speed[1:])])
    warp *= length / warp[-1]
    s_w = np.interp(s, grid, warp)
    d = np.interp(s + d, grid, warp) - s_w
    s = s_w + pad
    s, e, v = music.humanize(s, d, p, rng, onset_jitter=0.02, velocity_range=(45, 115))
    p = music.fold_into_piano_range(p + octave_shift(p), VIOLIN_LOW, VIOLIN_HIGH)
    s, e, p, v = make_monophonic(s, e, p, v, window_end=seconds - pad, gap=0.0)
    # Passages of 4-10 notes alternate between legato (touching notes) and détaché (a gap before the next note).
    style, k = [], 0
    legato = bool(rng.integers(2))
    while k < s.size:
        m = int(rng.integers(4, 11))
        style += ["legato" if legato else "detache"] * m
        legato, k = not legato, k + m
    style = style[: s.size]
    for i in range(s.size):
        nxt = s[i + 1] if i + 1 < s.size else seconds - pad
        if style[i] == "legato":
            e[i] = nxt if i + 1 < s.size else e[i]
        else:
            e[i] = min(e[i], max(s[i] + 0.08, nxt - rng.uniform(0.03, 0.09)))
    pm = music.notes_to_midi(s, e, p, v, program=VIOLIN_PROGRAM, name=f"Violin ({piece})")
    inst = pm.instruments[0]
    inst.control_changes = [pretty_midi.ControlChange(91, 0, 0.0), pretty_midi.ControlChange(93, 0, 0.0)]
    # Wider and more varied than the sample set's vibrato: 4.5-7 Hz, 15-35 cents, per-note changes.
    inst.pitch_bends = vibrato_bends(inst.notes, rng, rate=(4.5, 7.0), depth=(15.0, 30.0), rate_scale=(0.9, 1.1),
                                     depth_scale=(0.7, 1.2), max_cents=35.0, delay=(0.08, 0.3), fade=0.15,
                                     stop_before_end=0.01)
    return music.quantize(pm), style


def true_track(pm: pretty_midi.PrettyMIDI, n_frames: int, rate: float = RATE) -> tuple[np.ndarray, np.ndarray]:
    """``(midi, hz)`` at ``i / rate``: the note sounding (0 where none) and its Hz with the pitch bend applied."""
    notes = sorted((n for inst in pm.instruments for n in inst.notes), key=lambda n: n.start)
    times = np.arange(n_frames) / rate
    midi = sounding_pitch(notes, times)
    bends = sorted((b for inst in pm.instruments for b in inst.pitch_bends), key=lambda b: b.time)
    cents = np.zeros(n_frames)
    if bends:
        bt = np.array([b.time for b in bends])
        bv = np.array([b.pitch for b in bends], dtype=np.float64) / 8192 * BEND_RANGE_SEMITONES * 100.0
        j = np.searchsorted(bt, times, side="right") - 1
        cents = np.where(j >= 0, bv[np.clip(j, 0, None)], 0.0)
    hz = np.where(midi > 0, pretty_midi.note_number_to_hz(midi + cents / 100.0), 0.0)
    return midi, hz


def make_violin_hard_set(out_dir: str | os.PathLike, n: int = 6, seconds: float = 20.0, seed: int = 300
                         ) -> list[tuple[Path, Path]]:
    """Write ``n`` hard violin recordings (see the module notes); return ``[(wav_path, mid_path), ...]``."""
    if n < 1:
        raise ValueError("n must be at least 1")
    if seconds < 4.0:
        raise ValueError(f"seconds must be at least 4, not {seconds}")
    missing = fluidsynth_available()
    if missing:
        raise RuntimeError(missing)
    fonts = available_soundfonts()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces = _piece_order(HARD_VIOLIN_PIECES, seed)
    out, listing = [], []
    n_frames = int(round(seconds * RATE))
    for i in range(n):
        rid = f"violin_hard_{i:03d}"
        rng = np.random.default_rng([seed, i])
        piece = pieces[i % len(pieces)]
        pm, style = hard_excerpt(piece, rng, seconds)
        font = fonts[i % len(fonts)]
        y = render_fluidsynth(pm, font, SAMPLE_RATE, duration=seconds)
        rt60, drr = float(rng.uniform(0.5, 1.2)), float(rng.uniform(2.0, 8.0))
        y = add_room_reverb(y, SAMPLE_RATE, rng, rt60=rt60, drr_db=drr)
        snr, color = float(rng.uniform(15.0, 30.0)), ("pink", "white")[int(rng.integers(2))]
        y = normalize_peak(add_noise(y, rng, snr_db=snr, color=color), 0.8)
        wav = write_wav(out_dir / f"{rid}.wav", y, SAMPLE_RATE)
        mid = write_bytes_atomic(out_dir / f"{rid}.mid", music.midi_bytes(pm))
        midi, hz = true_track(pm, n_frames)
        rows = ["time,midi,hz"] + [f"{k / RATE:.2f},{m},{h:.3f}" for k, (m, h) in enumerate(zip(midi, hz))]
        write_text_atomic(out_dir / f"{rid}.csv", "\n".join(rows) + "\n")
        listing.append({"id": rid, "piece": piece, "soundfont": os.path.basename(font), "synth": "fluidsynth",
                        "rt60_s": round(rt60, 3), "drr_db": round(drr, 2), "snr_db": round(snr, 2),
                        "noise": color, "notes": len(style), "legato_notes": style.count("legato")})
        out.append((wav, mid))
    write_text_atomic(out_dir / "hard_set.json", json.dumps({"seed": seed, "seconds": seconds,
                                                             "recordings": listing}, indent=1) + "\n")
    return out
