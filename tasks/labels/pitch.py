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

Two labelers (``YinSettings.labels``):

``yinfft-raw``
    aubio's yinfft alone, as the thesis ran it: the estimate of each frame's
    window, voiced when it is loud enough, periodic enough and in range.
``yinfft`` (the default)
    the same estimates, made at 100 frames per second whatever the video's
    rate, then post-processed (:func:`post_process`), each step measured on
    the harder violin set and the sample recordings (``docs/violin_labels.md``):

    1. *octave check*: where the odd harmonics of the estimate carry less than
       ``octave_ratio`` of the even ones (``f, 3f, 5f, 7f`` against
       ``2f, 4f, 6f, 8f`` on the window's spectrum), the true pitch is the
       octave above: yinfft's octave errors on the violin are almost all an
       octave low;
    2. *smoothing*: Viterbi over the 34 pitches and "unvoiced", the per-frame
       estimate as the observation (right: 0.9, a semitone or an octave off:
       0.05 each), a pitch change costing ``switch_probability`` per frame;
    3. *release voicing*: frames more than ``release_db`` below the loudest
       frame of the last 0.5 s are unvoiced (the room's tail after a note);
    4. *lookahead*: the label of time ``t`` is read at ``t + lookahead_ms``.
       A bowed note reaches its level 50-200 ms after it starts and the
       previous note's reverberation covers its start, so yinfft reports the
       new pitch late; the lag that fits the truth best was 50 ms on the
       sample recordings and 70-80 ms on the harder set.

Confidence: aubio 0.4.9's ``yinfft`` reports a confidence of exactly 0 for
most of the violin's range (aubio issue #167, open), so the confidence stored
here is the periodicity of the analysed window at the detected period (the
normalised correlation of the window with itself shifted by one period, in
[0, 1]), computed on the same samples aubio saw.  yinfft already returns 0 Hz
when it finds no candidate under its tolerance.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator, Literal

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
    labels: Literal["yinfft", "yinfft-raw"] = Field(
        "yinfft", description="yinfft: post-processed (octave check, smoothing, release voicing, lookahead); "
                              "yinfft-raw: aubio's yinfft alone, as the thesis ran it")
    octave_ratio: float = Field(0.3, ge=0, le=1, description="yinfft: raise a frame an octave when its odd "
                                                             "harmonics are below this share of its even ones")
    smoothing: bool = Field(True, description="yinfft: Viterbi smoothing of the per-frame pitch")
    switch_probability: float = Field(0.02, gt=0, lt=1, description="yinfft: Viterbi probability of a pitch "
                                                                    "change between 10 ms frames")
    release_db: float = Field(-20.0, le=0, description="yinfft: frames this far below the loudest of the last "
                                                       "0.5 s are unvoiced, dB")
    lookahead_ms: float = Field(60.0, ge=0, le=200, description="yinfft: label each time from the audio this "
                                                                "much later, ms (bowed attacks sound late)")

    def as_dict(self) -> dict:
        return asdict(self)


def labeler_name(settings: YinSettings) -> str:
    """How the labels were made, for dataset cards and tables."""
    if settings.labels == "yinfft-raw":
        return "aubio yinfft alone (`--labels yinfft-raw`, as the thesis ran it)"
    steps = [f"octave check (ratio {settings.octave_ratio:g})" if settings.octave_ratio > 0 else None,
             f"Viterbi smoothing (switch {settings.switch_probability:g})" if settings.smoothing else None,
             f"release voicing ({settings.release_db:g} dB)",
             f"{settings.lookahead_ms:g} ms lookahead" if settings.lookahead_ms else None]
    return "aubio yinfft, post-processed (`--labels yinfft`): " + ", ".join(x for x in steps if x)


def midi_to_hz(m):
    return 440.0 * 2.0 ** ((np.asarray(m, dtype=np.float64) - 69.0) / 12.0)


def hz_to_midi(hz):
    hz = np.asarray(hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(hz > 0, 69.0 + 12.0 * np.log2(hz / 440.0), 0.0)


def periodicity(x: np.ndarray, period: float) -> float:
    """Normalised correlation of ``x`` with itself shifted by ``period`` samples, clipped to [0, 1].

    Computed in float64; a float64 ``x`` is not copied (the labeler's hot loop passes views of one array).
    """
    lag = int(round(period))
    if lag <= 0 or lag >= len(x) // 2:
        return 0.0
    x = np.asarray(x, dtype=np.float64)
    a, b = x[:-lag], x[lag:]
    denom = math.sqrt(np.dot(a, a) * np.dot(b, b))
    return min(1.0, max(0.0, float(np.dot(a, b) / denom))) if denom > 0 else 0.0


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
    ``hz`` (float32, aubio's estimate, 0 where it found none; for the
    ``yinfft`` labeler doubled where the octave check raised it, and the
    label's own Hz where smoothing chose another pitch, so ``hz`` always
    rounds to ``midi`` on voiced frames),
    ``confidence`` (float32) and ``voiced`` (bool: confident, loud enough and
    inside the pitch range).
    """
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if n_frames is None:
        n_frames = int(np.ceil(len(audio) / sr * rate))
    return yin_stream([audio], sr, rate, n_frames, settings)


def _yinfft(window: int, hop: int, sr: int, settings: YinSettings):
    """aubio's yinfft detector as the labelers use it (Hz, the settings' tolerance and silence)."""
    detector = _aubio().pitch("yinfft", window, hop, sr)
    detector.set_unit("Hz")
    detector.set_tolerance(settings.tolerance)
    detector.set_silence(settings.silence_db)
    return detector


def yinfft_alone(audio: np.ndarray, sr: int, rate: float, window: int = 2048) -> float:
    """Seconds aubio's yinfft alone takes over ``audio`` in hop-sized blocks at ``rate`` (the labelers' floor).

    For ``bench/label_violin.py``: the raw labeler's time over this is the cost of everything around aubio
    (aubio stays imported here only).
    """
    import time

    hop = int(round(sr / rate))
    detector = _yinfft(window, hop, sr, YinSettings())
    x = np.ascontiguousarray(audio, dtype=np.float32)
    start = time.perf_counter()
    for k in range(len(x) // hop):
        detector(x[k * hop:(k + 1) * hop])
    return time.perf_counter() - start


POST_RATE = 100.0  # frames per second of the post-processed labeler, whatever the output rate
HARMONICS = 4  # octave check: f, 3f, 5f, 7f against 2f, 4f, 6f, 8f
RELEASE_SECONDS = 0.5  # release voicing: the loudest frame of this long before a frame


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
    if settings.labels == "yinfft-raw":
        hz, conf, _ = _yin_frames(blocks, sr, rate, n_frames, settings, features=False)
        lo, hi = midi_to_hz(settings.min_midi - 0.5), midi_to_hz(settings.max_midi + 0.5)
        voiced = (hz >= lo) & (hz < hi) & (conf >= settings.min_confidence)
        midi = np.where(voiced, np.round(hz_to_midi(hz)), 0).astype(np.int16)
    else:
        lookahead = settings.lookahead_ms / 1000.0
        n_post = int(np.ceil((n_frames / rate + lookahead) * POST_RATE)) + 1
        hz_p, conf_p, feats = _yin_frames(blocks, sr, POST_RATE, n_post, settings, features=True)
        post = post_process(hz_p, conf_p, feats, settings)
        idx = np.clip(np.round((np.arange(n_frames) / rate + lookahead) * POST_RATE).astype(np.int64), 0, n_post - 1)
        midi, hz, conf = post["midi"][idx], post["hz"][idx], conf_p[idx]
        voiced = midi > 0
        # Where smoothing chose another pitch than the frame's estimate, the Hz is the label's.
        agree = np.round(hz_to_midi(hz)) == midi
        hz = np.where(voiced & ~agree, midi_to_hz(midi), hz).astype(np.float32)
    return {
        "time": np.arange(n_frames, dtype=np.float64) / rate,
        "midi": midi,
        "hz": hz,
        "confidence": conf,
        "voiced": voiced,
    }


def _yin_frames(blocks, sr, rate, n_frames, settings, *, features: bool):
    """aubio yinfft at ``i / rate``: ``(hz, periodicity, features)``.

    ``features`` (when asked for) holds, per frame, the window's level in dB
    and the summed spectral peaks at the estimate's odd and even harmonics
    (the octave check's evidence), computed on the samples aubio saw.
    """
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

    detector = _yinfft(window, hop, int(round(analysis_sr)), settings)
    m = n_frames + drop
    hz = np.zeros(m, dtype=np.float32)
    conf = np.zeros(m, dtype=np.float32)
    level = np.full(m, -200.0, dtype=np.float32)
    odd = np.zeros(m, dtype=np.float32)
    even = np.zeros(m, dtype=np.float32)
    taper = np.hanning(window).astype(np.float32)
    bin_hz = analysis_sr / window
    multiples = np.arange(1, 2 * HARMONICS + 1, dtype=np.float64)  # 1f, 2f, ..., 8f
    seen = np.zeros(0, dtype=np.float32)  # the last ``window`` samples aubio saw
    pending = np.zeros(pad, dtype=np.float32)  # samples not yet given to aubio (less than a hop)
    k = 0

    def harmonics(spectrum: np.ndarray, f0: float) -> tuple[float, float]:
        """Summed spectral peaks (+-1 bin) at the odd and at the even harmonics of ``f0``."""
        b = np.clip((f0 / bin_hz * multiples + 0.5).astype(np.int64), 1, len(spectrum) - 2)
        v = np.maximum(np.maximum(spectrum[b - 1], spectrum[b]), spectrum[b + 1])
        return float(v[0::2].sum()), float(v[1::2].sum())

    def feed(x: np.ndarray) -> None:
        # aubio sees hop-sized blocks one call at a time (its Python API has no batch call); everything
        # else of a block is read afterwards from one float64 copy of the blocks and the window before
        # them, so the loop around aubio does no allocation (3x the labeler's speed: bench/label_violin.py).
        nonlocal pending, seen, k
        pending = np.concatenate([pending, x])
        whole = min(len(pending) // hop, m - k)
        if whole <= 0:
            return
        chunk = pending[: whole * hop]
        for j in range(whole):
            hz[k + j] = detector(chunk[j * hop : (j + 1) * hop])[0]
        hist = np.concatenate([seen, chunk])  # the last window aubio saw before this feed, then the blocks
        hist64 = hist.astype(np.float64)
        for j in range(whole):
            end = len(seen) + (j + 1) * hop
            start = max(0, end - window)  # the window after block j (shorter at the very start)
            f0 = hz[k + j]  # numpy float32: the period below is float32 arithmetic, as it always was
            if f0 > 0:
                conf[k + j] = periodicity(hist64[start:end], analysis_sr / f0)
            if features and end - start == window:
                win = hist[start:end]
                energy = float(np.dot(win, win)) / window
                level[k + j] = 10.0 * np.log10(energy) if energy > 0 else -200.0
                if f0 > 0:
                    spectrum = np.abs(np.fft.rfft(win * taper))
                    odd[k + j], even[k + j] = harmonics(spectrum, float(f0))
        seen = hist[-window:]
        k += whole
        pending = pending[whole * hop :]

    taken = pad
    for x in samples:
        x = x[: max(0, total - taken)]
        taken += len(x)
        feed(x)
        if taken >= total:
            break
    feed(np.zeros(max(0, total - taken), dtype=np.float32))
    feats = {"level_db": level[drop:], "odd": odd[drop:], "even": even[drop:]} if features else None
    return hz[drop:], conf[drop:], feats


def post_process(hz: np.ndarray, conf: np.ndarray, feats: dict[str, np.ndarray],
                 settings: YinSettings = YinSettings(), rate: float = POST_RATE) -> dict[str, np.ndarray]:
    """The ``yinfft`` labeler's steps 1-3 (module notes) on per-frame estimates at ``rate``.

    Returns ``midi`` (int16, 0 = unvoiced) and ``hz`` (the estimate, doubled
    where the octave check raised it).  The lookahead (step 4) is applied by
    :func:`yin_stream` when it reads the result at the output times.
    """
    from scipy.ndimage import maximum_filter1d

    hz = np.asarray(hz, dtype=np.float64).copy()
    lo, hi = midi_to_hz(settings.min_midi - 0.5), midi_to_hz(settings.max_midi + 0.5)
    # 1. octave check: weak odd harmonics mean the estimate is an octave low.
    low = (hz > 0) & (feats["odd"] < settings.octave_ratio * feats["even"]) & (2 * hz < hi)
    hz[low] *= 2.0
    voiced = (hz >= lo) & (hz < hi) & (conf >= settings.min_confidence)
    obs = np.where(voiced, np.round(hz_to_midi(hz)), 0).astype(np.int64)
    # 2. smoothing
    midi = viterbi_pitch(obs, settings.min_midi, settings.max_midi, settings.switch_probability) \
        if settings.smoothing else obs
    # 3. release voicing: the room's tail after a note is not the note.
    size = int(round(RELEASE_SECONDS * rate)) + 1
    level = np.asarray(feats["level_db"], dtype=np.float64)
    recent = maximum_filter1d(level, size=size, origin=size // 2, mode="nearest")  # max over [i - size + 1, i]
    midi = np.where(level - recent < settings.release_db, 0, midi)
    return {"midi": midi.astype(np.int16), "hz": hz.astype(np.float32)}


def viterbi_pitch(obs: np.ndarray, min_midi: int, max_midi: int, switch: float) -> np.ndarray:
    """The most likely pitch path (0 = unvoiced) given per-frame pitches ``obs`` (0 = none); librosa's Viterbi.

    States: unvoiced and every MIDI pitch in range.  Emission of a voiced
    state: 0.9 where the frame's estimate is that pitch, 0.05 a semitone or an
    octave away, 0.005 otherwise, 0.05 where the frame has no estimate; of the
    unvoiced state: 0.9 where the frame has none, else 0.05.  Staying costs
    ``1 - switch``, a change ``switch`` shared by the other states
    (``librosa.sequence.transition_loop``).
    """
    import librosa

    obs = np.asarray(obs, dtype=np.int64)
    if len(obs) == 0:
        return obs.copy()
    pitches = np.arange(min_midi, max_midi + 1)
    d = np.abs(pitches[None, :] - obs[:, None])
    voiced_em = np.where(d == 0, 0.9, np.where((d == 1) | (d == 12), 0.05, 0.005))
    em = np.empty((len(obs), len(pitches) + 1))
    em[:, 0] = np.where(obs > 0, 0.05, 0.9)
    em[:, 1:] = np.where(obs[:, None] > 0, voiced_em, 0.05)
    transition = librosa.sequence.transition_loop(len(pitches) + 1, 1.0 - switch)
    path = librosa.sequence.viterbi(em.T, transition).astype(np.int64)
    return np.where(path > 0, pitches[np.maximum(path - 1, 0)], 0)


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
