import subprocess
import sys

import numpy as np
import pytest

from tasks.labels.pitch import AUBIO_MISSING, YinSettings, midi_to_hz, post_process, viterbi_pitch, yin_track

SR = 44100


def tone(midi_at, seconds=3.0, harmonics=4, noise=0.005):
    """A harmonic tone whose pitch is ``midi_at(t)`` (0 = silence)."""
    t = np.arange(int(seconds * SR)) / SR
    midi = np.array([midi_at(x) for x in t])
    f = np.where(midi > 0, midi_to_hz(np.maximum(midi, 1)), 0.0)
    phase = 2 * np.pi * np.cumsum(f) / SR
    y = (midi > 0) * sum(np.sin(h * phase) / h for h in range(1, harmonics + 1)) * 0.3
    return (y + np.random.default_rng(0).normal(size=len(t)) * noise).astype(np.float32)


def step(t):
    return 0 if t < 1.0 or t >= 2.0 else (69 if t < 1.5 else 81)


RAW = YinSettings(labels="yinfft-raw")


@pytest.mark.parametrize("rate", [25.0, 100.0, 29.97])
def test_each_frame_is_measured_at_its_own_time(rate):
    """The thesis's labeler (yinfft-raw): each frame's window is centred on the frame's time."""
    track = yin_track(tone(step), SR, rate, settings=RAW)
    n = int(np.ceil(3.0 * rate))
    assert len(track["time"]) == n and track["time"][1] == pytest.approx(1 / rate)
    for i, t in enumerate(track["time"]):
        if abs(t - 1.0) < 0.03 or abs(t - 1.5) < 0.03 or abs(t - 2.0) < 0.03:
            continue  # the window straddles a change
        assert track["midi"][i] == step(t), (t, track["midi"][i], track["hz"][i])
        assert bool(track["voiced"][i]) == (step(t) > 0)


def test_range_and_confidence_thresholds_unvoice():
    track = yin_track(tone(lambda t: 50), SR, 25)  # D3, below the violin's G3
    assert not track["voiced"].any() and (track["midi"] == 0).all()
    assert (track["hz"][5:-5] > 0).all(), "the raw frequency is kept even when out of range"
    wide = yin_track(tone(lambda t: 50), SR, 25, settings=YinSettings(min_midi=40))
    assert wide["voiced"][5:-5].all() and (wide["midi"][5:-5] == 50).all()
    noise = np.random.default_rng(1).normal(size=SR).astype(np.float32) * 0.3
    assert yin_track(noise, SR, 25)["voiced"].mean() < 0.1


def test_a_clear_message_without_aubio():
    code = (
        "import sys; sys.modules['aubio'] = None\n"
        "import numpy as np\n"
        "from tasks.labels.pitch import yin_track\n"
        "yin_track(np.zeros(44100, dtype=np.float32), 44100, 25)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and AUBIO_MISSING in proc.stderr


@pytest.mark.parametrize("rate", [25.0, 29.97])  # 29.97 fps resamples (soxr's stream)
def test_labels_from_blocks_equal_labels_from_the_whole_signal(rate):
    """label_yin reads long recordings a block at a time: uneven blocks give the same track."""
    from tasks.labels.pitch import yin_stream

    rng = np.random.default_rng(2)
    y = tone(step, seconds=5.0) + rng.normal(size=5 * SR).astype(np.float32) * 0.01
    whole = yin_track(y, SR, rate)
    blocks = np.split(y, np.sort(rng.choice(len(y), 7, replace=False)))
    streamed = yin_stream(iter(blocks), SR, rate, len(whole["hz"]))
    assert whole["voiced"].sum() >= 0.9 * rate  # the voiced second (1-2 s) of the tone
    for name in whole:
        assert np.array_equal(whole[name], streamed[name]), name


@pytest.mark.parametrize("rate", [25.0, 29.97])
def test_the_default_labeler_reads_each_label_lookahead_later(rate):
    """yinfft (post-processed): the label of time t is the pitch at t + lookahead, at any frame rate."""
    settings = YinSettings(lookahead_ms=60.0)
    track = yin_track(tone(step), SR, rate, settings=settings)
    assert len(track["time"]) == int(np.ceil(3.0 * rate))
    for i, t in enumerate(track["time"]):
        ahead = t + 0.06
        if min(abs(ahead - c) for c in (1.0, 1.5, 2.0)) < 0.03 or ahead > 2.95:
            continue
        assert track["midi"][i] == step(ahead), (t, track["midi"][i])
    assert np.array_equal(track["voiced"], track["midi"] > 0)
    v = track["voiced"]
    assert np.array_equal(np.round(69 + 12 * np.log2(track["hz"][v] / 440.0)), track["midi"][v])


def test_octave_check_raises_frames_whose_odd_harmonics_are_missing():
    hz = np.full(6, midi_to_hz(60), dtype=np.float32)  # C4 estimates
    conf = np.ones(6, dtype=np.float32)
    feats = {"level_db": np.zeros(6), "odd": np.array([1.0, 1.0, 0.2, 0.2, 0.5, 0.0]),
             "even": np.array([1.0, 0.1, 1.0, 1.0, 1.0, 1.0])}
    out = post_process(hz, conf, feats, YinSettings(smoothing=False, octave_ratio=0.3))
    assert out["midi"].tolist() == [60, 60, 72, 72, 60, 72]
    assert out["hz"][2] == pytest.approx(2 * hz[2])
    off = post_process(hz, conf, feats, YinSettings(smoothing=False, octave_ratio=0.0))
    assert (off["midi"] == 60).all()
    top = post_process(np.full(6, midi_to_hz(80), dtype=np.float32), conf, feats,
                       YinSettings(smoothing=False, max_midi=88))
    assert (top["midi"] == 80).all(), "never raised above the pitch range"


def test_viterbi_removes_blips_and_keeps_held_notes():
    obs = np.array([69] * 20 + [57] + [69] * 5 + [0] * 2 + [69] * 10 + [72] * 30 + [0] * 30)
    path = viterbi_pitch(obs, 55, 88, 0.02)
    assert path[:38].tolist() == [69] * 38, "a one-frame octave blip and a two-frame gap are smoothed over"
    assert (path[40:68] == 72).all() and (path[-25:] == 0).all()
    assert (viterbi_pitch(np.zeros(0, dtype=np.int64), 55, 88, 0.02) == 0).all()


def test_release_voicing_unvoices_the_rooms_tail():
    n = 100
    level = np.concatenate([np.zeros(50), np.linspace(-5.0, -40.0, 50)])  # a note, then its decaying tail
    hz = np.full(n, midi_to_hz(69), dtype=np.float32)
    feats = {"level_db": level, "odd": np.ones(n), "even": np.ones(n)}
    out = post_process(hz, np.ones(n, dtype=np.float32), feats, YinSettings(smoothing=False, release_db=-20.0))
    assert (out["midi"][:50] == 69).all()
    assert (out["midi"][level < -20.0] == 0).all() and (out["midi"][(level > -19.5)] == 69).all()


@pytest.mark.parametrize("rate", [25.0, 100.0])
def test_the_labelers_loop_equals_aubio_block_by_block(rate):
    """The labeler's loop (aubio per hop, the rest read afterwards from one float64 copy) gives exactly what
    the plain loop gives: aubio's estimate after each hop-sized block, and the periodicity of the last
    window it saw, computed on that window alone (the labeler before its speed-up)."""
    from tasks.labels.pitch import _aubio, _yin_frames, periodicity

    rng = np.random.default_rng(5)
    y = tone(step, seconds=3.0) + rng.normal(size=3 * SR).astype(np.float32) * 0.01
    n = int(3.0 * rate)
    blocks = np.split(y, [5000, 5001, 60000])  # uneven blocks, one of a single sample
    hz, conf, _ = _yin_frames(iter(blocks), SR, rate, n, RAW, features=False)

    hop, window = int(round(SR / rate)), RAW.window
    pad = (hop - window // 2) % hop
    drop = (pad - hop + window // 2) // hop
    signal = np.concatenate([np.zeros(pad, np.float32), y, np.zeros((n + drop) * hop, np.float32)])
    detector = _aubio().pitch("yinfft", window, hop, SR)
    detector.set_unit("Hz")
    detector.set_tolerance(RAW.tolerance)
    detector.set_silence(RAW.silence_db)
    ref_hz, ref_conf = np.zeros(n + drop, np.float32), np.zeros(n + drop, np.float32)
    for k in range(n + drop):
        block = signal[k * hop:(k + 1) * hop]
        ref_hz[k] = detector(block)[0]
        seen = signal[max(0, (k + 1) * hop - window):(k + 1) * hop]
        if ref_hz[k] > 0:
            ref_conf[k] = periodicity(seen, SR / ref_hz[k])
    assert (ref_hz[drop:] > 0).sum() > 0.5 * rate  # the tone's second is found
    assert np.array_equal(hz, ref_hz[drop:]) and np.array_equal(conf, ref_conf[drop:])
