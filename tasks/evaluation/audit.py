"""Audit of violin pitch labels: aubio yinfft, step by step, against librosa's pYIN and torchcrepe.

Every method tracks the same audio at ``RATE`` frames per second, frame
``i`` labelling time ``i / RATE``; mir_eval's melody metrics compare each
track with the true pitch (the MIDI note sounding at that time): raw pitch
accuracy (within 50 cents, on frames the reference voices), raw chroma
accuracy (the same, octave errors forgiven), voicing recall and voicing
false alarm; then the octave-error rate (raw chroma minus raw pitch
accuracy: the share of voiced frames right but for whole octaves) and the
raw pitch accuracy on the voiced frames within 100 ms of a note change (a
note starting, ending or changing).  Speed is seconds of audio per second of
wall time on this machine.

The yinfft rows add the ``yinfft`` labeler's steps one at a time
(:data:`YINFFT_STEPS`, see :mod:`tasks.labels.pitch`): the thesis's labeler,
then the octave check, the smoothing, the release voicing and the lookahead,
whose last row is the default labeler.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from tasks.labels.pitch import YinSettings, hz_to_midi, midi_to_hz, yin_track

RATE = 100  # frames per second


def true_pitch_hz(midi_path: str | Path, times: np.ndarray) -> np.ndarray:
    """The reference track: the Hz of the note sounding at each time (0 where none)."""
    from tasks.labels.transcribe import read_midi

    hz = np.zeros(len(times))
    for n in read_midi(midi_path):
        hz[(times >= n.onset) & (times < n.offset)] = midi_to_hz(n.pitch)
    return hz


def track_yinfft(audio, sr, n, settings: YinSettings = YinSettings()) -> np.ndarray:
    """The labels (MIDI classes, as Hz) that a build would store, not aubio's raw Hz."""
    t = yin_track(audio, sr, RATE, n, settings)
    return np.where(t["voiced"], midi_to_hz(t["midi"]), 0.0)


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


_OFF = dict(octave_ratio=0.0, smoothing=False, release_db=-1000.0, lookahead_ms=0.0)
#: The yinfft rows: the thesis's labeler, then the default labeler's steps added one at a time.
YINFFT_STEPS: dict[str, YinSettings] = {
    "yinfft-raw (thesis)": YinSettings(labels="yinfft-raw"),
    "yinfft + octave check": YinSettings(**{**_OFF, "octave_ratio": YinSettings().octave_ratio}),
    "yinfft + octave + smoothing": YinSettings(**{**_OFF, "octave_ratio": YinSettings().octave_ratio,
                                                  "smoothing": True}),
    "yinfft + ... + release voicing": YinSettings(lookahead_ms=0.0),
    "yinfft (default: + lookahead)": YinSettings(),
}

METHODS = {name: partial(track_yinfft, settings=settings) for name, settings in YINFFT_STEPS.items()}
METHODS.update({
    "librosa pYIN": track_pyin,
    "torchcrepe (full)": track_crepe,
})


CHANGE_SECONDS = 0.1  # "near a note change": within this of one


def near_changes(ref_hz: np.ndarray, seconds: float = CHANGE_SECONDS) -> np.ndarray:
    """Frames within ``seconds`` of a change of the reference (a note starting, ending or changing)."""
    ref_hz = np.asarray(ref_hz)
    change = np.flatnonzero(np.diff(ref_hz) != 0) + 0.5  # between frames k and k + 1
    frames = np.arange(len(ref_hz))
    if change.size == 0:
        return np.zeros(len(ref_hz), dtype=bool)
    j = np.clip(np.searchsorted(change, frames), 1, change.size)
    nearest = np.minimum(np.abs(frames - change[j - 1]), np.abs(frames - change[np.minimum(j, change.size - 1)]))
    return nearest <= seconds * RATE


def melody_scores(ref_hz: np.ndarray, est_hz: np.ndarray) -> dict:
    """mir_eval's four melody metrics, the octave-error rate and the raw pitch accuracy near note changes."""
    import mir_eval

    times = np.arange(len(ref_hz)) / RATE
    ref_v, ref_c, est_v, est_c = mir_eval.melody.to_cent_voicing(times, ref_hz, times, est_hz)
    rpa = mir_eval.melody.raw_pitch_accuracy(ref_v, ref_c, est_v, est_c)
    rca = mir_eval.melody.raw_chroma_accuracy(ref_v, ref_c, est_v, est_c)
    near = near_changes(ref_hz)
    rpa_near = (mir_eval.melody.raw_pitch_accuracy(ref_v[near], ref_c[near], est_v[near], est_c[near])
                if (ref_v[near] > 0).any() else float("nan"))
    return {
        "raw pitch accuracy": rpa,
        "raw chroma accuracy": rca,
        "voicing recall": mir_eval.melody.voicing_recall(ref_v, est_v),
        "voicing false alarm": mir_eval.melody.voicing_false_alarm(ref_v, est_v),
        "octave errors": rca - rpa,
        "RPA near changes": rpa_near,
    }


def load_clips(pairs: list[tuple[str, str]]) -> list[tuple]:
    """``(audio, sr, n_frames, true Hz per frame)`` for each ``(audio or video file, true MIDI)``."""
    import tempfile

    from tasks.media.decode import extract_audio, read_wav

    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (path, mid) in enumerate(pairs):
            audio, sr = read_wav(extract_audio(path, Path(tmp) / f"{i}.wav", 44100))
            n = int(np.ceil(len(audio) / sr * RATE))
            clips.append((audio, sr, n, true_pitch_hz(mid, np.arange(n) / RATE)))
    return clips


def audit(pairs: list[tuple[str, str]], methods: dict = METHODS) -> list[dict]:
    """Score every method on ``(audio or video file, true MIDI)`` pairs; one row per method.

    Frames are pooled over all files before scoring.
    """
    clips = load_clips(pairs)
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


def excerpt_figure(pair: tuple[str, str], out: str | Path, start: float = 2.0, seconds: float = 6.0) -> Path:
    """A figure of one excerpt: the true pitch, raw yinfft and the default (post-processed) labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    audio, sr, n, ref = load_clips([pair])[0]
    t = np.arange(n) / RATE
    keep = (t >= start) & (t < start + seconds)
    fig, ax = plt.subplots(figsize=(10, 4))
    for hz, label, style in ((ref, "truth (MIDI)", dict(color="0.2", lw=5, alpha=0.3)),
                             (track_yinfft(audio, sr, n, YinSettings(labels="yinfft-raw")), "yinfft-raw (thesis)",
                              dict(color="tab:red", marker=".", ls="none", ms=3)),
                             (track_yinfft(audio, sr, n), "yinfft (post-processed)",
                              dict(color="tab:blue", lw=1.2))):
        midi = np.where(hz > 0, hz_to_midi(hz), np.nan)
        ax.plot(t[keep], midi[keep], label=label, **style)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch (MIDI)")
    ax.set_title(Path(pair[0]).name)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
