"""Audit of violin pitch labels: aubio yinfft against librosa's pYIN and torchcrepe.

Every method tracks the same audio at ``RATE`` frames per second with frames
centred on ``i / RATE``; mir_eval's melody metrics compare each track with
the true pitch of the sample set (from its MIDI): raw pitch accuracy (within
50 cents, on frames the reference voices), raw chroma accuracy (the same,
octave errors forgiven), voicing recall and voicing false alarm.  Speed is
seconds of audio per second of wall time on this machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tasks.labels.pitch import YinSettings, midi_to_hz, yin_track

RATE = 100  # frames per second


def true_pitch_hz(midi_path: str | Path, times: np.ndarray) -> np.ndarray:
    """The reference track: the Hz of the note sounding at each time (0 where none)."""
    from tasks.labels.transcribe import read_midi

    hz = np.zeros(len(times))
    for n in read_midi(midi_path):
        hz[(times >= n.onset) & (times < n.offset)] = midi_to_hz(n.pitch)
    return hz


def track_yinfft(audio, sr, n, settings: YinSettings = YinSettings()) -> np.ndarray:
    t = yin_track(audio, sr, RATE, n, settings)
    return np.where(t["voiced"], t["hz"], 0.0)


def track_pyin(audio, sr, n, settings: YinSettings = YinSettings()) -> np.ndarray:
    import librosa

    hop = int(round(sr / RATE))
    f0, voiced, _ = librosa.pyin(
        np.asarray(audio, dtype=np.float32), sr=sr, frame_length=2048, hop_length=hop, center=True,
        fmin=float(midi_to_hz(settings.min_midi - 1)), fmax=float(midi_to_hz(settings.max_midi + 1)),
    )
    f0 = np.where(voiced, np.nan_to_num(f0), 0.0)
    return _fit(f0, n)


def track_crepe(audio, sr, n, settings: YinSettings = YinSettings(), model: str = "full",
                periodicity: float = 0.5) -> np.ndarray:
    import soxr
    import torch
    import torchcrepe

    audio16 = soxr.resample(np.asarray(audio, dtype=np.float32), sr, 16000)
    x = torch.from_numpy(np.ascontiguousarray(audio16)).unsqueeze(0)
    with torch.inference_mode():
        f0, per = torchcrepe.predict(
            x, 16000, hop_length=160, fmin=float(midi_to_hz(settings.min_midi - 1)),
            fmax=float(midi_to_hz(settings.max_midi + 1)), model=model, return_periodicity=True,
            batch_size=512, device="cpu", pad=True,
        )
    f0, per = f0[0].numpy(), per[0].numpy()
    return _fit(np.where(per >= periodicity, f0, 0.0), n)


def _fit(track: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n)
    out[: min(n, len(track))] = track[:n]
    return out


METHODS = {
    "aubio yinfft": track_yinfft,
    "librosa pYIN": track_pyin,
    "torchcrepe (full)": track_crepe,
}


def melody_scores(ref_hz: np.ndarray, est_hz: np.ndarray) -> dict:
    import mir_eval

    times = np.arange(len(ref_hz)) / RATE
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(times, ref_hz, times, est_hz)
    return {
        "raw pitch accuracy": mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c),
        "raw chroma accuracy": mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c),
        "voicing recall": mir_eval.melody.voicing_recall(ref_v, est_v),
        "voicing false alarm": mir_eval.melody.voicing_false_alarm(ref_v, est_v),
    }


def audit(pairs: list[tuple[str, str]], methods: dict = METHODS) -> list[dict]:
    """Score every method on ``(audio or video file, true MIDI)`` pairs; one row per method.

    Frames are pooled over all files before scoring.
    """
    import tempfile

    from tasks.media.decode import extract_audio, read_wav

    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (path, mid) in enumerate(pairs):
            audio, sr = read_wav(extract_audio(path, Path(tmp) / f"{i}.wav", 44100))
            n = int(np.ceil(len(audio) / sr * RATE))
            clips.append((audio, sr, n, true_pitch_hz(mid, np.arange(n) / RATE)))
    seconds = sum(len(a) / sr for a, sr, _, _ in clips)
    rows = []
    for name, fn in methods.items():
        start = time.perf_counter()
        est = [fn(a, sr, n) for a, sr, n, _ in clips]
        wall = time.perf_counter() - start
        scores = melody_scores(np.concatenate([c[3] for c in clips]), np.concatenate(est))
        row = {"method": name}
        row.update({k: round(float(v), 4) for k, v in scores.items()})
        row["x real time"] = round(seconds / wall, 1)
        rows.append(row)
    return rows
