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
    # odd edges, even edges, the frame's own edges: ffmpeg crops the box grown to even edges before the RGB
    # conversion and then exactly, which must give the pixels of converting the whole frame
    for box in [(37, 301, 13, 611), (36, 300, 12, 610), (0, 360, 1, 640), (1, 359, 0, 639), (200, 201, 5, 6)]:
        y0, y1, x0, x1 = box
        cropped = np.concatenate([f for _, f in media.iter_frames(clip, info, box, chunk=32)])
        assert np.array_equal(cropped, whole[:, y0:y1, x0:x1]), box


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


def test_map_frames_keeps_frame_order_whatever_the_threads():
    """Encoding on threads changes nothing that is written: results come in frame order, as inline."""
    import threading
    import time

    from tasks.media.decode import map_frames

    rng = np.random.default_rng(0)
    chunks = [(np.arange(i * 5, i * 5 + 5), rng.integers(0, 255, (5, 4, 4, 3), dtype=np.uint8)) for i in range(6)]
    names = set()

    def slow_sum(frame):  # later frames finish first: a reordering bug would show
        names.add(threading.current_thread().name)
        time.sleep(0.002 * (255 - int(frame[0, 0, 0])) / 255)
        return int(frame.sum())

    inline = [(i.tolist(), r) for i, _, r in map_frames(iter(chunks), slow_sum, threads=0)]
    threaded = [(i.tolist(), r) for i, _, r in map_frames(iter(chunks), slow_sum, threads=3, ahead=2)]
    assert inline == threaded == [(i.tolist(), [int(f.sum()) for f in fr]) for i, fr in chunks]
    assert any(n.startswith("encode") for n in names)  # the threaded run did use the pool

    # a consumer that stops early leaves no work running behind it
    gen = map_frames(iter(chunks), slow_sum, threads=2, ahead=1)
    first = next(gen)
    gen.close()
    assert first[0].tolist() == list(range(5))


def test_map_frames_passes_a_frames_error_on():
    from tasks.media.decode import map_frames

    def fail_on_seven(frame):
        if int(frame[0, 0, 0]) == 7:
            raise ValueError("frame seven")
        return 0

    chunks = [(np.arange(3), np.full((3, 2, 2, 3), k, np.uint8)) for k in (1, 7, 2)]
    with pytest.raises(ValueError, match="frame seven"):
        list(map_frames(iter(chunks), fail_on_seven, threads=2))


@pytest.mark.parametrize("codec,pix_fmt,ext", [("libx264", "yuv444p", "mp4"), ("ffv1", "bgr0", "mkv"),
                                               ("ffv1", "yuv420p10le", "mkv")])
def test_crop_equals_numpy_crop_in_other_pixel_formats(tmp_path, codec, pix_fmt, ext):
    """Formats that are cropped before their RGB conversion (yuv444p) and formats converted whole first."""
    import imageio_ffmpeg

    clip = tmp_path / f"a.{ext}"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc=size=320x180:rate=25", "-t", "0.4", "-c:v", codec, "-pix_fmt", pix_fmt, str(clip)],
                   check=True)
    assert media._pixel_format(clip) == pix_fmt
    info = media.probe(clip)
    whole = np.concatenate([f for _, f in media.iter_frames(clip, info)])
    for y0, y1, x0, x1 in [(37, 151, 13, 301), (1, 180, 0, 319)]:
        cropped = np.concatenate([f for _, f in media.iter_frames(clip, info, (y0, y1, x0, x1))])
        assert np.array_equal(cropped, whole[:, y0:y1, x0:x1]), (pix_fmt, (y0, y1, x0, x1))
