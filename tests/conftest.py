"""Shared fixtures: an isolated Prefect home, a loopback HTTP server, small generated media."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

# A temporary server's first start migrates a new database: on a busy 2-core
# machine that can take more than Prefect's 20 s.  (Read when Prefect is
# imported, so set here, before any test module imports it.)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session", autouse=True)
def _isolated_prefect(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    yield
    stop_temporary_servers()


def stop_temporary_servers() -> None:
    """Stop the temporary Prefect servers this process started, while pytest's streams are open.

    Prefect stops them from an ``atexit`` hook and logs that it does; by then
    pytest has closed the stream Prefect's log handler writes to, and the run
    ended in a ``--- Logging error ---`` traceback after pytest's summary.
    """
    server = sys.modules.get("prefect.server.api.server")
    if server is None or not server.SubprocessASGIServer._instances:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # First what is still queued for the server (logs, events), as Prefect's test harness does.
    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=30, at_exit=False)
    for instance in list(server.SubprocessASGIServer._instances.values()):
        instance.stop()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def one_thread():
    """torch on one thread for the test (training tests: steady timings beside other work), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields ``(folder, base_url)``."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def free_port_url(path: str = "gone.mp4") -> str:
    """A loopback URL nothing listens on (a port bound and released)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/{path}"


def make_test_video(path: Path, seconds: float = 2.0, size=(320, 180), fps: int = 25, audio: bool = True) -> Path:
    """A small H.264 (+ AAC sine) clip made with ffmpeg's test sources."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
           "-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    cmd += ["-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd += [str(path)]
    subprocess.run(cmd, check=True)
    return path


def assert_sample_video(path: Path, frames: int, size_hw: tuple[int, int], fps: float) -> None:
    """A generated sample video: frame count, size and rate (decord), H.264 and AAC streams (ffmpeg -i)."""
    import re

    import decord
    import imageio_ffmpeg

    vr = decord.VideoReader(str(path))
    assert len(vr) == frames
    assert vr[0].shape == (*size_hw, 3)
    assert abs(vr.get_avg_fps() - fps) < 1e-6
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                          capture_output=True, text=True).stderr
    assert re.search(r"Stream #0:\d.*Video: h264.*yuv420p", info), info
    assert re.search(r"Stream #0:\d.*Audio: aac.*44100 Hz", info), info


@pytest.fixture(scope="session")
def tiny_violin(tmp_path_factory) -> Path:
    """The manifest of a violin sample set small enough to build in seconds (2 videos of 3 s, 640 x 360)."""
    from tasks.samples.violin import make_violin_samples

    return make_violin_samples(tmp_path_factory.mktemp("tiny-violin"), videos=2, seconds=3, seed=5,
                               width=640, height=360)


# ---------------------------------------------------------------- synthetic face shards (face model tests)

FACE_SIDE = 64  # stored crops of the synthetic face shards (the real shards: 256); the small models' input


def synthetic_face(dx: float, dy: float, identity: int, side: int = FACE_SIDE) -> np.ndarray:
    """An RGB face-like picture (oval, eyes, mouth) moved by (dx, dy) pixels; its shape and tint by ``identity``.

    The eyes' centres are at ``(side / 2 + dx -+ 6, side / 2 + dy - 5)`` and the mouth's at
    ``(side / 2 + dx, side / 2 + dy + 9)`` (pixels, x right, y down): :func:`synthetic_face_points`.
    """
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    img = 0.2 + 0.35 * (yy[..., None] / side) * np.array([1.0, 0.9, 0.8], np.float32)
    cx, cy = side / 2 + dx, side / 2 + dy
    rx, ry = 14 + 3 * identity, 20 - identity

    def blob(x, y, ax, ay):
        return np.exp(-(((xx - x) / ax) ** 2 + ((yy - y) / ay) ** 2))[..., None]

    head = blob(cx, cy, rx, ry)
    img = img * (1 - head) + head * np.array([0.95, 0.72 - 0.1 * identity, 0.55 + 0.1 * identity], np.float32)
    for ex in (-6, 6):
        img = img - 0.6 * blob(cx + ex, cy - 5, 2.5, 2.0)
    img = img - 0.5 * blob(cx, cy + 9, 6, 2.0)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def synthetic_face_points(dx: float, dy: float, side: int = FACE_SIDE):
    """``[3, 2]`` pixel positions (x, y) of the left eye, the right eye and the mouth of :func:`synthetic_face`."""
    c = np.array([side / 2 + dx, side / 2 + dy])
    return np.stack([c + (-6, -5), c + (6, -5), c + (0, 9)]).astype(np.float32)


def write_face_root(root: Path, tracks, frames: int, seed: int = 0, move: float = 6.0) -> dict:
    """A build-voxceleb data root of :func:`synthetic_face` tracks under ``root``; returns each row's (dx, dy).

    ``tracks``: ``(split, who, identity, utterances)`` tuples; each utterance is
    a face track of ``frames`` frames moved by uniform offsets in
    ``[-move, move]`` pixels.  The returned dict maps
    ``(identity, utterance, frame_index)`` to the frame's ``(dx, dy)``.
    """
    import pyarrow as pa

    from tasks.datasets.voxceleb import SCHEMA
    from tasks.media import decode as media
    from tasks.store.shards import VideoShardWriter

    shards = root / "voxceleb" / "shards"
    rng = np.random.default_rng(seed)
    moves_of = {}
    for split, who, identity, utterances in tracks:
        video = f"vid{identity}xx"[:11]
        for t in range(utterances):
            utt = f"{t + 1:05d}"
            moves = rng.uniform(-move, move, size=(frames, 2))
            jpegs = [media.encode_image(synthetic_face(dx, dy, who)[..., ::-1].copy(), "jpeg") for dx, dy in moves]
            n = frames
            batch = pa.record_batch([
                pa.array([identity] * n, pa.string()), pa.array([video] * n, pa.string()),
                pa.array([utt] * n, pa.string()), pa.array(range(n), pa.int32()), pa.array(range(n), pa.int32()),
                pa.array([j / 25 for j in range(n)]), pa.array(jpegs, pa.binary()),
                pa.array([[0.0, 0.0, 100.0, 100.0]] * n, pa.list_(pa.float32(), 4)),
                pa.array([[0.0, 0.0, 100.0, 100.0]] * n, pa.list_(pa.float32(), 4)),
                pa.array([[0.0] * 136] * n, pa.list_(pa.float32(), 136)),
                pa.array(["dlib-hog"] * n, pa.string()), pa.array([0.9] * n, pa.float32()),
            ], schema=SCHEMA)
            with VideoShardWriter(shards, f"{identity}-{video}-{utt}", split, SCHEMA) as writer:
                writer.write(batch)
                writer.commit()
            for j, (dx, dy) in enumerate(moves):
                moves_of[(identity, utt, j)] = (float(dx), float(dy))
    return moves_of
