"""Encode RGB frames and mono audio into a byte-reproducible H.264 + AAC MP4.

ffmpeg comes from ``imageio_ffmpeg.get_ffmpeg_exe()`` (a static build with
libx264 and the native AAC encoder) and is run with an argument list, never
through a shell.  Frames are piped to its stdin as raw RGB; the audio goes in
as a temporary 16-bit WAV file (second input).

Reproducibility: the same frames and samples give the same bytes, on every
machine, with the same ffmpeg build, because

* ``-fflags +bitexact``, ``-flags:v +bitexact``, ``-flags:a +bitexact`` keep
  the muxer and encoders from writing their version strings and
  ``-map_metadata -1`` drops input metadata (creation times, the temporary
  WAV's name);
* libx264's output depends on its thread count, and ffmpeg picks that count
  from the number of CPUs, so the count is pinned (``threads=2`` by default).
  Measured with the imageio-ffmpeg build (x264 core 165): repeated runs with
  the same count give identical bytes; 1 and 2 threads differ only in the
  options text of x264's SEI ("threads=1" vs "threads=2"), while 4 threads
  change the coded frames themselves (different size).
* x264 still writes its own SEI with its version and options, so a different
  ffmpeg/x264 build gives different (equally valid) bytes.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from tasks.store.storage import new_file

from .render import write_wav


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_video(frames_iter: Iterable[np.ndarray], audio: np.ndarray | None, sr: int, fps: float,
                 out_path: str | os.PathLike, width: int, height: int, *, crf: int = 20,
                 preset: str = "veryfast", threads: int = 2, gop_seconds: float = 2.0,
                 audio_bitrate: str = "128k") -> Path:
    """Write ``out_path`` (MP4: H.264 yuv420p at ``fps`` + AAC) from RGB frames and mono audio.

    ``frames_iter`` yields ``height`` x ``width`` x 3 uint8 RGB arrays.  The
    audio (float samples in [-1, 1] at ``sr``; None for a video without an
    audio stream) should last as long as the frames.  The file is
    written under a temporary name in the same folder and renamed when ffmpeg
    has succeeded; on failure nothing is left behind and ``RuntimeError``
    carries ffmpeg's message.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_video = new_file(out_path.parent, f".{out_path.stem}.", ".mp4.part")  # (the umask's mode, not 0600)
    tmp_wav = None
    log = tempfile.TemporaryFile()
    try:
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{int(width)}x{int(height)}",
               "-framerate", f"{fps}", "-i", "pipe:0"]
        if audio is not None:
            tmp_wav = new_file(out_path.parent, f".{out_path.stem}.", ".wav.part")
            write_wav(tmp_wav, audio, sr)
            cmd += ["-f", "wav", "-i", tmp_wav]
        cmd += ["-map", "0:v:0"]
        if audio is not None:
            cmd += ["-map", "1:a:0"]
        cmd += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-g", str(max(1, int(round(gop_seconds * fps)))), "-threads", str(int(threads)),
                "-r", f"{fps}"]
        if audio is not None:
            cmd += ["-c:a", "aac", "-b:a", audio_bitrate, "-ar", str(int(sr)), "-ac", "1"]
        cmd += ["-map_metadata", "-1", "-map_chapters", "-1",
                "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
                "-movflags", "+faststart", "-f", "mp4", tmp_video]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        n = 0
        broken = False
        try:
            for frame in frames_iter:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if frame.shape != (height, width, 3):
                    raise ValueError(f"frame {n} has shape {frame.shape}, expected {(height, width, 3)}")
                try:
                    proc.stdin.write(memoryview(frame).cast("B"))
                except BrokenPipeError:
                    broken = True
                    break
                n += 1
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
            rc = proc.wait()
        if rc != 0 or broken or n == 0:
            log.seek(0)
            msg = log.read().decode("utf-8", "replace").strip()
            raise RuntimeError(f"ffmpeg failed (exit {rc}, {n} frames sent) writing {out_path}: {msg}")
        os.replace(tmp_video, out_path)
    except BaseException:
        Path(tmp_video).unlink(missing_ok=True)
        raise
    finally:
        log.close()
        if tmp_wav is not None:
            Path(tmp_wav).unlink(missing_ok=True)
    return out_path
