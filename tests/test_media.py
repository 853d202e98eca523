import subprocess

import numpy as np
import pytest

from tasks.media import decode as media
from tests.conftest import make_test_video


def test_probe_reads_video_and_audio(tmp_path):
    clip = make_test_video(tmp_path / "a.mp4", seconds=2.0, size=(320, 180))
    info = media.probe(clip)
    assert (info.width, info.height) == (320, 180)
    assert info.fps == pytest.approx(25.0)
    assert info.frames == 50
    assert info.has_audio and info.audio_rate == 44100
    assert info.duration == pytest.approx(2.0, abs=0.1)


def test_probe_without_audio(tmp_path):
    info = media.probe(make_test_video(tmp_path / "silent.mp4", seconds=1.0, audio=False))
    assert not info.has_audio and info.audio_rate == 0


def test_probe_refuses_corrupt_and_empty_files(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(media.MediaError, match="bad.mp4"):
        media.probe(bad)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty"):
        media.probe(empty)


def test_extract_audio_at_requested_rate(tmp_path):
    clip = make_test_video(tmp_path / "a.mp4", seconds=1.0)
    wav = media.extract_audio(clip, tmp_path / "out" / "a.wav", 16000)
    audio, sr = media.read_wav(wav)
    assert sr == 16000 and audio.ndim == 1
    assert len(audio) == pytest.approx(16000, rel=0.05)
    # A 440 Hz sine: the spectrum peaks at 440 Hz.
    spec = np.abs(np.fft.rfft(audio))
    assert np.argmax(spec) * sr / len(audio) == pytest.approx(440, abs=5)


def test_scale_crop_rescales_and_clips():
    assert media.scale_crop((360, 720, 0, 1280), (1280, 720), 640, 360) == (180, 360, 0, 640)
    assert media.scale_crop((0, 800, 0, 2000), (1280, 720), 1280, 720) == (0, 720, 0, 1280)
    with pytest.raises(media.MediaError, match="leaves no picture"):
        media.scale_crop((700, 720, 1270, 1280), (1280, 720), 64, 36)


def test_frames_crop_to_145_by_800_gray(tmp_path):
    clip = make_test_video(tmp_path / "a.mp4", seconds=1.0, size=(640, 360))
    info = media.probe(clip)
    chunks = list(media.iter_frames(clip, info, (100, 200, 0, 640), chunk=10))
    assert [idx.tolist() for idx, _ in chunks] == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]
    assert sum(len(f) for _, f in chunks) == info.frames == 25
    assert chunks[0][1].shape == (10, 100, 640, 3)
    crops = media.gray_resize(chunks[0][1], (145, 800))
    assert crops.shape == (10, 145, 800) and crops.dtype == np.uint8
    png = media.encode_image(crops[0])
    assert np.array_equal(media.decode_image(png), crops[0])


def test_frames_equal_decords_pixels_and_crop_equals_numpy_crop(tmp_path):
    """The ffmpeg pipe gives decord's RGB, frame for frame, and cropping in ffmpeg equals slicing."""
    import decord

    clip = make_test_video(tmp_path / "a.mp4", seconds=2.0, size=(640, 360))
    info = media.probe(clip)
    whole = np.concatenate([f for _, f in media.iter_frames(clip, info, chunk=7)])
    vr = decord.VideoReader(str(clip), ctx=decord.cpu(0), num_threads=1)
    assert whole.shape == (len(vr), 360, 640, 3)
    assert np.array_equal(whole, vr.get_batch(list(range(len(vr)))).asnumpy())
    box = (37, 301, 13, 611)  # odd offsets: the crop happens after the RGB conversion
    cropped = np.concatenate([f for _, f in media.iter_frames(clip, info, box, chunk=32)])
    assert np.array_equal(cropped, whole[:, 37:301, 13:611])


def test_frames_stop_early_kills_ffmpeg_and_bad_input_is_refused(tmp_path):
    import psutil

    clip = make_test_video(tmp_path / "a.mp4", seconds=2.0, size=(640, 360))
    info = media.probe(clip)
    gen = media.iter_frames(clip, info, chunk=4)
    next(gen)
    children = psutil.Process().children()
    assert any("ffmpeg" in c.name() for c in children)
    gen.close()
    assert not [c for c in psutil.Process().children() if c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                and "ffmpeg" in c.name()]
    with pytest.raises(media.MediaError, match="not inside"):
        next(media.iter_frames(clip, info, (0, 400, 0, 640)))
    # Cut in half, a file whose index is at its end cannot be opened: a clear error.
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(media.MediaError, match="could not decode cut.mp4: .*moov atom not found"):
        next(media.iter_frames(cut, info))
    # With its index first, the frames before the cut come out at their own indices, and the loss says
    # which frames never came.
    front = tmp_path / "front.mp4"
    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-c", "copy", "-movflags", "+faststart",
                    str(front)], check=True)
    data = front.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    loss = media.FrameLoss(expected=0)
    got = np.concatenate([idx for idx, _ in media.iter_frames(cut, info, chunk=4, loss=loss)])
    assert 0 < len(got) < info.frames and got[0] == 0 and np.all(np.diff(got) > 0) and got[-1] < info.frames
    missing = {i for a, b in loss.missing for i in range(a, b + 1)}
    assert missing == set(range(info.frames)) - set(got.tolist()) and info.frames - 1 in missing
    assert f"{info.frames - len(got)} of {info.frames} frames not decoded" in loss.describe(info.fps)


def test_png_roundtrip_when_decord_is_loaded_first(tmp_path):
    """decord bundles an old zlib that breaks OpenCV's PNG decoder if loaded first."""
    import subprocess
    import sys

    code = (
        "import decord, numpy as np\n"
        "from tasks.media.decode import encode_image, decode_image\n"
        "img = (np.arange(145 * 800) % 251).astype(np.uint8).reshape(145, 800)\n"
        "assert np.array_equal(decode_image(encode_image(img)), img)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
