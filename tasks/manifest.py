"""Manifests in the datasets' published formats, validated before any work starts.

PianoYT publishes one CSV row per video::

    video id, url, split, min y, max y, min x, max x

with split 1 = train and 3 = test, and the keyboard's crop box in pixels of the
reference frame (see ``CROP_REFERENCE``).  The file has no header row; one is
accepted and skipped when present.  Every problem is reported with its row
number, and nothing is built from a manifest that has any problem.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

PIANOYT_COLUMNS = ("video_id", "url", "split", "min_y", "max_y", "min_x", "max_x")
PIANOYT_SPLITS = {1: "train", 3: "test"}

# The PianoYT crop boxes are pixel coordinates of the frame the box was drawn
# on.  Neither the paper nor the CSV says which resolution that was, so the
# project takes 1280 x 720 (YouTube's 720p, the size of the sample set) as the
# reference and rescales boxes to whatever resolution is actually downloaded.
# Override per build with ``crop_reference=(width, height)``.
CROP_REFERENCE = (1280, 720)

_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


class ManifestError(ValueError):
    """A manifest that cannot be built; the message lists every bad row."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"manifest {self.path} has {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class VideoRow:
    """One validated manifest row.  ``source`` is a URL or an absolute local path."""

    video_id: str
    source: str
    split: str
    crop: tuple[int, int, int, int]  # (min_y, max_y, min_x, max_x)
    row: int  # 1-based line number in the manifest file
    # Where a dataset publishes them (URMP): a separate audio stem and a
    # ground-truth pitch annotation to use instead of the video's audio and YIN.
    audio_source: str = ""
    pitch_source: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["crop"] = list(self.crop)
        return d


def check_video_id(video_id: str) -> str:
    """Return ``video_id`` if it is a plain token safe to use as a file name."""
    if not _TOKEN.match(video_id or ""):
        raise ValueError(
            f"video id {video_id!r} is not a plain token "
            "(letters, digits, '_' and '-', starting with a letter or digit, at most 128)"
        )
    return video_id


def resolve_source(url: str, base_dir: Path) -> str:
    """Turn a manifest's url cell into something :mod:`tasks.acquire` takes.

    A bare 11-character YouTube id becomes a watch URL; a URL with a scheme is
    kept; anything else is a local path, relative to the manifest's folder.
    """
    url = url.strip()
    scheme = urlparse(url).scheme
    if scheme in ("http", "https", "ftp", "ytsearch"):
        return url
    if scheme == "file":
        return str(Path(urlparse(url).path).resolve())
    path = Path(url)
    candidate = path if path.is_absolute() else base_dir / path
    if candidate.exists() or "/" in url or path.suffix:
        return str(candidate.resolve())
    if _YOUTUBE_ID.match(url):
        return f"https://www.youtube.com/watch?v={url}"
    return str(candidate.resolve())


def _looks_like_header(cells: list[str]) -> bool:
    return len(cells) >= 3 and not cells[2].strip().lstrip("-").isdigit()


def read_pianoyt(path: str | Path) -> list[VideoRow]:
    """Read and validate a PianoYT manifest; raise :class:`ManifestError` on any problem.

    The violin set has no published list; sightsound's violin manifests use
    this same format with the violinist's box as the crop (see
    ``data_manifests/README.md``), read by :func:`read_violin`.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, [f"file not found: {path}"])
    text = path.read_text(encoding="utf-8-sig")
    rows = [r for r in csv.reader(io.StringIO(text))]
    problems: list[str] = []
    out: list[VideoRow] = []
    seen: dict[str, int] = {}
    start = 0
    if rows and _looks_like_header(rows[0]):
        start = 1
    for index in range(start, len(rows)):
        cells = [c.strip() for c in rows[index]]
        line = index + 1
        if not any(cells):
            continue
        if len(cells) != len(PIANOYT_COLUMNS):
            problems.append(
                f"row {line}: expected {len(PIANOYT_COLUMNS)} columns "
                f"({', '.join(PIANOYT_COLUMNS)}), found {len(cells)}"
            )
            continue
        vid, url, split_s, *box_s = cells
        try:
            check_video_id(vid)
        except ValueError as exc:
            problems.append(f"row {line}: {exc}")
            continue
        if vid in seen:
            problems.append(f"row {line}: duplicate video id {vid!r} (first on row {seen[vid]})")
            continue
        seen[vid] = line
        if not url:
            problems.append(f"row {line}: video {vid!r} has an empty url")
            continue
        try:
            code = int(split_s)
        except ValueError:
            problems.append(f"row {line}: split {split_s!r} is not an integer")
            continue
        if code not in PIANOYT_SPLITS:
            known = ", ".join(f"{k} = {v}" for k, v in PIANOYT_SPLITS.items())
            problems.append(f"row {line}: unknown split code {code} (known: {known})")
            continue
        try:
            min_y, max_y, min_x, max_x = (int(float(b)) for b in box_s)
        except ValueError:
            problems.append(f"row {line}: crop box {box_s} is not four numbers")
            continue
        if min(min_y, max_y, min_x, max_x) < 0:
            problems.append(f"row {line}: crop box {box_s} has a negative coordinate")
            continue
        if max_y <= min_y or max_x <= min_x:
            problems.append(
                f"row {line}: crop box (min y {min_y}, max y {max_y}, min x {min_x}, max x {max_x}) "
                "is empty or inverted"
            )
            continue
        out.append(
            VideoRow(
                video_id=vid,
                source=resolve_source(url, path.parent),
                split=PIANOYT_SPLITS[code],
                crop=(min_y, max_y, min_x, max_x),
                row=line,
            )
        )
    if not problems and not out:
        problems.append("no video rows")
    if problems:
        raise ManifestError(path, problems)
    return out


def read_violin(path: str | Path) -> list[VideoRow]:
    """A violin manifest: PianoYT's format, the crop box being the violinist's."""
    return read_pianoyt(path)


def write_pianoyt(path: str | Path, rows: list[tuple]) -> Path:
    """Write rows ``(video_id, url, split_code, min_y, max_y, min_x, max_x)`` in the published format."""
    from tasks.atomic import write_text_atomic

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return write_text_atomic(path, buf.getvalue())
