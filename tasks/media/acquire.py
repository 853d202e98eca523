"""Acquire a video: YouTube ids and URLs, anything yt-dlp accepts, or a local file.

Downloads go through yt-dlp's Python API into ``<media_dir>/.part-<id>/`` and
are renamed into place only when complete, so an interrupted download is
never mistaken for a finished one.  One call is one attempt: the flows retry
transient errors (connection resets, timeouts, 5xx) through Prefect's task
retries with exponential backoff (``flows.stages.acquire_stage``), and
:class:`AcquireError` says whether a retry can help; a video that is gone
(404, private, removed, unsupported) is ``permanent``, with yt-dlp's reason,
which the flow records in the status table.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tasks.store import storage

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".flv")

# Substrings of yt-dlp error messages that mean "this video will not come
# back if we ask again".  Everything else is treated as transient.
_PERMANENT = (
    "HTTP Error 404",
    "HTTP Error 410",
    "HTTP Error 401",
    "HTTP Error 403",
    "Video unavailable",
    "video is unavailable",
    "Private video",
    "has been removed",
    "is not available",
    "Unsupported URL",
    "copyright",
    "account associated with this video has been terminated",
    "Sign in to confirm",
    "members-only",
    "is not a valid URL",
)


class AcquireError(RuntimeError):
    """Raised when a video could not be acquired; ``permanent`` says whether a retry can help."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def _is_permanent(message: str) -> bool:
    low = message.lower()
    return any(p.lower() in low for p in _PERMANENT)


def _existing(media_dir: Path, video_id: str) -> Path | None:
    for ext in VIDEO_EXTS:
        p = media_dir / f"{video_id}{ext}"
        if p.is_file() and p.stat().st_size > 0:
            return p
    return None


def _ydl_options(tmp_dir: Path, video_id: str, max_height: int) -> dict:
    import imageio_ffmpeg

    return {
        "outtmpl": str(tmp_dir / f"{video_id}.%(ext)s"),
        # Best video up to max_height with its audio; a single muxed file when
        # that is all there is (direct links, the sample server).
        "format": f"bv*[height<={max_height}]+ba/b[height<={max_height}]/bv*+ba/b",
        "merge_output_format": "mp4",
        "ffmpeg_location": imageio_ffmpeg.get_ffmpeg_exe(),
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "retries": 2,
        "fragment_retries": 2,
        "socket_timeout": 30,
        "overwrites": True,
        "cachedir": False,
        "logger": _QuietLogger(),
    }


class _QuietLogger:
    """Route yt-dlp's own messages to this module's logger instead of stderr."""

    def debug(self, msg):
        log.debug(msg)

    def info(self, msg):
        log.debug(msg)

    def warning(self, msg):
        log.info("yt-dlp: %s", msg)

    def error(self, msg):
        log.info("yt-dlp: %s", msg)


def acquire(source: str, video_id: str, media_dir: str | Path, *, max_height: int = 720) -> str:
    """Return the path of a local copy of ``source`` (one attempt).

    ``source`` is a local path (returned as is, after checking it exists) or a
    URL for yt-dlp.  Raises :class:`AcquireError` with yt-dlp's reason when the
    video cannot be had, ``permanent`` when asking again cannot help.
    """
    if "://" not in source:
        p = Path(source)
        if not p.is_file():
            raise AcquireError(f"local file not found: {source}", permanent=True)
        return str(p.resolve())

    import yt_dlp

    media_dir = Path(media_dir)
    media_dir.mkdir(parents=True, exist_ok=True)
    done = _existing(media_dir, video_id)
    if done is not None:
        return str(done)

    tmp_dir = media_dir / f".part-{video_id}"
    try:
        with yt_dlp.YoutubeDL(_ydl_options(tmp_dir, video_id, max_height)) as ydl:
            ydl.download([source])
        files = sorted(f for f in tmp_dir.iterdir() if f.suffix in VIDEO_EXTS) if tmp_dir.is_dir() else []
        if not files:
            raise AcquireError(f"yt-dlp reported success but wrote no video for {source}", permanent=False)
        final = media_dir / f"{video_id}{files[0].suffix}"
        storage.publish(files[0], str(final))
        return str(final)
    except yt_dlp.utils.DownloadError as exc:
        reason = str(exc).replace("ERROR: ", "", 1).strip()
        if _is_permanent(reason):
            raise AcquireError(f"video unavailable: {reason}", permanent=True) from None
        raise AcquireError(f"download failed: {reason}", permanent=False) from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
