"""tasks.training.windows on violin shards: RGB frames, the middle frame's pitch class, its audio segment."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
import soundfile
import torch
from PIL import Image

from tasks.datasets.violinyt import SCHEMA
from tasks.store.shards import VideoShardWriter
from tasks.training import windows as W

H, WD = 24, 12
SR = 8000
FRAMES = 12  # frames of the one video
SAMPLES_PER_FRAME = 320  # 25 fps at 8 kHz
MIDI = [0, 55, 60, 60, 61, 89, 70, 70, 0, 88, 54, 65]  # 0: unvoiced; 89 and 54 lie outside 55..88


def _png(fi: int) -> bytes:
    img = np.zeros((H, WD, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10 + fi, 100 + fi, 200  # R and G code the frame, B is constant
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def violin(tmp_path_factory):
    root = tmp_path_factory.mktemp("violin") / "violinyt"
    (root / "audio").mkdir(parents=True)
    audio = (np.arange(FRAMES * SAMPLES_PER_FRAME) % 1000 / 1000.0).astype(np.float32)  # sample i: (i % 1000) / 1000
    soundfile.write(root / "audio" / "v0.wav", audio, SR, subtype="FLOAT")
    fi = list(range(FRAMES))
    batch = pa.record_batch([
        pa.array(["v0"] * FRAMES, pa.string()), pa.array(fi, pa.int32()), pa.array(np.asarray(fi) / 25.0),
        pa.array([_png(i) for i in fi], pa.binary()), pa.array(MIDI, pa.int16()),
        pa.array(np.zeros(FRAMES), pa.float32()), pa.array(np.ones(FRAMES), pa.float32()),
        pa.array([m != 0 for m in MIDI], pa.bool_()), pa.array(["audio/v0.wav"] * FRAMES, pa.string()),
        pa.array([i * SAMPLES_PER_FRAME for i in fi], pa.int64()),
    ], schema=SCHEMA)
    with VideoShardWriter(root / "shards", "v0", "train", SCHEMA) as writer:
        writer.write(batch.slice(0, 5))  # two row groups: windows run across them
        writer.write(batch.slice(5))
        writer.commit()
    return root, audio


def _windows(root, **kw):
    labels = W.PitchLabels(str(root), audio_samples=kw.pop("audio_samples", None))
    return list(W.FrameWindows(root / "shards", "train", labels=labels, color="rgb", size=(H, WD), **kw))


def test_rgb_five_frames_and_pitch_classes(violin):
    root, _ = violin
    out = _windows(root)
    assert [ex["frame_index"] for ex in out] == list(range(2, FRAMES - 2))  # 5 consecutive frames needed
    for ex in out:
        t = ex["frame_index"]
        assert ex["frames"].shape == (5, 3, H, WD) and ex["frames"].dtype == torch.float32
        pix = (ex["frames"][:, :, 3, 3] * 255).round().int().tolist()
        assert pix == [[10 + t + d, 100 + t + d, 200] for d in range(-2, 3)]  # channels kept, frames in order
        m = MIDI[t]
        assert ex["midi"] == m
        assert ex["target"] == (m - 55 if 55 <= m <= 88 else -1)  # unvoiced and out-of-range: ignore_index
    assert {ex["target"] for ex in out if ex["frame_index"] in (5, 8, 10)} == {-1}


def test_one_frame_and_audio_segments(violin):
    root, audio = violin
    n = 100
    out = _windows(root, frames=1, audio_samples=n)
    for ex in out:
        t = ex["frame_index"]
        assert ex["frames"].shape == (1, 3, H, WD)
        assert (ex["frames"][0, 0, 0, 0] * 255).round().int() == 10 + t  # the middle frame itself
        start = t * SAMPLES_PER_FRAME - n // 2
        np.testing.assert_array_equal(ex["audio"].numpy(), audio[start:start + n])  # centred on the frame's time


def test_audio_only_and_zero_beyond_the_ends(violin):
    root, audio = violin
    n = 2000  # 1000 samples either side: past sample 0 at t = 2 and past the end at t = 9
    out = _windows(root, images=False, audio_samples=n)
    assert "frames" not in out[0]
    first = out[0]  # t = 2: the segment starts before sample 0
    start = 2 * SAMPLES_PER_FRAME - n // 2
    assert start < 0
    np.testing.assert_array_equal(first["audio"].numpy()[:-start], 0)
    np.testing.assert_array_equal(first["audio"].numpy()[-start:], audio[:n + start])
    last = out[-1]
    end = last["frame_index"] * SAMPLES_PER_FRAME - n // 2 + n
    assert end > len(audio)
    np.testing.assert_array_equal(last["audio"].numpy()[n - (end - len(audio)):], 0)
    # collated into a batch by torch's default collate
    batch = torch.utils.data.default_collate(out[:3])
    assert batch["audio"].shape == (3, n) and batch["target"].dtype == torch.int64


def test_augmented_rgb_windows_keep_size(violin):
    root, _ = violin
    out = _windows(root, augment=True, shuffle=True, resize=(26, 13), seed=3)
    assert sorted(ex["frame_index"] for ex in out) == list(range(2, FRAMES - 2))
    for ex in out:
        assert ex["frames"].shape == (5, 3, H, WD)
        assert float(ex["frames"].min()) >= 0 and float(ex["frames"].max()) <= 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="dataset_dir"):
        W.PitchLabels(None, audio_samples=10)
