"""Violin pitch labels: aubio's spectral YIN (``yinfft``), one value per video frame (thesis ch. 5).

This is the only module that imports aubio.  aubio is GPL-3.0, so it is an
optional dependency (``pip install 'sightsound[violin]'``); without it the
violin labels fail with :data:`AUBIO_MISSING` and everything else works.

Alignment: frame ``i`` of a track at ``rate`` frames per second is at
``t_i = i / rate``, and its pitch is measured on the analysis window
*centred* on ``t_i``.  aubio consumes hop-sized blocks and reports, after
block ``k``, the window that ends with it; :func:`yin_track` therefore pads
the start of the signal so that those windows' centres fall on the frame
times.  The hop must be a whole number of samples, so audio is resampled
(soxr) to ``rate * round(sr / rate)`` Hz when ``sr / rate`` is not an integer
(e.g. 29.97 fps video); at 25 fps or 100 frames per second from 44.1 kHz no
resampling happens.

Confidence: aubio 0.4.9's ``yinfft`` reports a confidence of exactly 0 for
most of the violin's range (aubio issue #167, open), so the confidence stored
here is the periodicity of the analysed window at the detected period (the
normalised correlation of the window with itself shifted by one period, in
[0, 1]), computed on the same samples aubio saw.  yinfft already returns 0 Hz
when it finds no candidate under its tolerance.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass

AUBIO_MISSING = (
    "aubio is not installed; the violin pitch labels need it. "
    "Install it with: pip install 'sightsound[violin]' (aubio is GPL-3.0, hence optional)."
)


@dataclass(frozen=True)
class YinSettings:
    """Pitch range and thresholds; the defaults are the paper's range (MIDI 55-88).

    A pydantic dataclass: a flow parameter Prefect validates, and the source of
    the CLI's ``--min-midi`` ... flags (their help is each field's description).
    """

    min_midi: int = Field(55, ge=0, le=127, description="lowest pitch, MIDI")
    max_midi: int = Field(88, ge=0, le=127, description="highest pitch, MIDI")
    # 2048 samples at 44.1 kHz: 46 ms, room for two periods of G3 (196 Hz)
    window: int = Field(2048, ge=16, description="analysis window, samples")
    tolerance: float = Field(0.85, gt=0, le=1, description="yinfft tolerance (aubio's default)")
    silence_db: float = Field(-50.0, description="level below which a frame is unvoiced, dB")
    min_confidence: float = Field(0.5, ge=0, le=1, description="periodicity below which a frame is unvoiced")

    def as_dict(self) -> dict:
        return asdict(self)


def midi_to_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def hz_to_midi(hz):
    hz = np.asarray(hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hz > 0, 69.0 + 12.0 * np.log2(hz / 440.0), 0.0)


def periodicity(x: np.ndarray, period: float) -> float:
    """Normalised correlation of ``x`` with itself shifted by ``period`` samples, clipped to [0, 1]."""
    lag = int(round(period))
    if lag <= 0 or lag >= len(x) // 2:
        return 0.0
    a, b = x[:-lag].astype(np.float64), x[lag:].astype(np.float64)
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.clip(np.dot(a, b) / denom, 0.0, 1.0)) if denom > 0 else 0.0


def _resampled(blocks: Iterable[np.ndarray], sr: float, to: float) -> Iterator[np.ndarray]:
    """soxr's streaming resampler over ``blocks``; the last call flushes it."""
    import soxr

    stream = soxr.ResampleStream(sr, to, 1, dtype="float32")
    for x in blocks:
        yield stream.resample_chunk(x, last=False)
    yield stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _aubio():
    try:
        import aubio
    except ImportError:
        raise ImportError(AUBIO_MISSING) from None
    return aubio


def yin_track(
    audio: np.ndarray,
    sr: int,
    rate: float,
    n_frames: int | None = None,
    settings: YinSettings = YinSettings(),
) -> dict[str, np.ndarray]:
    """Pitch at ``t_i = i / rate`` for ``i < n_frames`` (default: the audio's length).

    Returns arrays ``time`` (float64 s), ``midi`` (int16, 0 where unvoiced),
    ``hz`` (float32, aubio's raw estimate, 0 where it found none),
    ``confidence`` (float32) and ``voiced`` (bool: confident, loud enough and
    inside the pitch range).
    """
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if n_frames is None:
        n_frames = int(np.ceil(len(audio) / sr * rate))
    return yin_stream([audio], sr, rate, n_frames, settings)


def yin_stream(
    blocks: Iterable[np.ndarray],
    sr: int,
    rate: float,
    n_frames: int,
    settings: YinSettings = YinSettings(),
) -> dict[str, np.ndarray]:
    """:func:`yin_track` on audio that arrives in ``blocks`` of any size (mono float32, in order).

    Holds one block, one analysis window and the per-frame results, so a
    long recording can be read a block at a time (:func:`tasks.datasets.violinyt.label_yin`).
    The result equals :func:`yin_track` on the whole signal
    (``tests/test_pitch.py`` checks it with uneven blocks, with and without
    resampling).
    """
    aubio = _aubio()
    hop = max(1, int(round(sr / rate)))
    analysis_sr = hop * rate
    samples: Iterable[np.ndarray] = (np.ascontiguousarray(b, dtype=np.float32).reshape(-1) for b in blocks)
    if abs(analysis_sr - sr) > 1e-6:
        samples = _resampled(samples, sr, analysis_sr)
    window = settings.window
    if window < hop:  # aubio needs the window to cover a hop
        window = int(2 ** np.ceil(np.log2(hop)))
    # Pad so that the window reported after block k is centred on frame k - drop.
    half = window // 2
    pad = (hop - half) % hop
    drop = (pad - hop + half) // hop
    total = (n_frames + drop) * hop  # samples aubio sees: ``pad`` zeros, the audio, zeros to the end

    detector = aubio.pitch("yinfft", window, hop, int(round(analysis_sr)))
    detector.set_unit("Hz")
    detector.set_tolerance(settings.tolerance)
    detector.set_silence(settings.silence_db)
    hz = np.zeros(n_frames + drop, dtype=np.float32)
    conf = np.zeros(n_frames + drop, dtype=np.float32)
    seen = np.zeros(0, dtype=np.float32)  # the last ``window`` samples aubio saw
    pending = np.zeros(pad, dtype=np.float32)  # samples not yet given to aubio (less than a hop)
    k = 0

    def feed(x: np.ndarray) -> None:
        nonlocal pending, seen, k
        pending = np.concatenate([pending, x])
        whole = min(len(pending) // hop, n_frames + drop - k)
        for j in range(whole):
            block = pending[j * hop : (j + 1) * hop]
            hz[k] = detector(block)[0]
            seen = np.concatenate([seen, block])[-window:]
            if hz[k] > 0:
                conf[k] = periodicity(seen, analysis_sr / hz[k])
            k += 1
        pending = pending[whole * hop :]

    taken = pad
    for x in samples:
        x = x[: max(0, total - taken)]
        taken += len(x)
        feed(x)
        if taken >= total:
            break
    feed(np.zeros(max(0, total - taken), dtype=np.float32))
    hz, conf = hz[drop:], conf[drop:]

    lo, hi = midi_to_hz(settings.min_midi - 0.5), midi_to_hz(settings.max_midi + 0.5)
    voiced = (hz >= lo) & (hz < hi) & (conf >= settings.min_confidence)
    midi = np.where(voiced, np.round(hz_to_midi(hz)), 0).astype(np.int16)
    return {
        "time": np.arange(n_frames, dtype=np.float64) / rate,
        "midi": midi,
        "hz": hz,
        "confidence": conf,
        "voiced": voiced,
    }


def label_file(src: str | Path, out_csv: str | Path, rate: float = 100.0,
               settings: YinSettings = YinSettings()) -> dict[str, np.ndarray]:
    """The pitch track of an audio or video file at ``rate`` frames per second, written as a CSV.

    Columns ``time,midi,hz,confidence`` (``sightsound label violin``); returns the track.
    """
    import tempfile

    from tasks.media.decode import extract_audio, read_wav
    from tasks.store.atomic import write_text_atomic

    with tempfile.TemporaryDirectory() as tmp:
        audio, sr = read_wav(extract_audio(Path(src), Path(tmp) / "a.wav", 44100))
    track = yin_track(audio, sr, rate, settings=settings)
    lines = ["time,midi,hz,confidence"] + [
        f"{t:.4f},{m},{h:.3f},{c:.4f}"
        for t, m, h, c in zip(track["time"], track["midi"], track["hz"], track["confidence"])
    ]
    write_text_atomic(out_csv, "\n".join(lines) + "\n")
    return track
