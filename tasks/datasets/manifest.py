"""Manifests in the datasets' published formats, validated before any work starts.

PianoYT publishes one CSV row per video::

    video id, url, split, min y, max y, min x, max x

with split 1 = train and 3 = test, and the keyboard's crop box in pixels of the
reference frame (see ``CROP_REFERENCE``).  The file has no header row; one is
accepted and skipped when present.  Every problem is reported with its row
number, and nothing is built from a manifest that has any problem.

Crop boxes are checked against the reference frame: every coordinate must be
a finite number, ``0 <= min < max``, and each edge at most 1% past the
reference's edge (``CROP_SLACK``; hand-drawn or rescaled boxes often end a
pixel or two outside the frame), such an edge being clipped to the frame.  A
box further outside is refused rather than clipped: it means the boxes were
drawn on another frame size, and clipping would crop the wrong part of every
frame (give that size as the crop reference instead).
"""

from __future__ import annotations

import csv
import io
import math
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
CROP_SLACK = 0.01  # how far past the reference's edge (fraction of its size) a box edge may lie, clipped
# No manifest of these formats comes near this (a million PianoYT or VoxCeleb
# CSV rows is under 200 MB); a larger file is a mistake, read no further.
MAX_MANIFEST_BYTES = 256 * 2**20
MAX_PROBLEMS_SHOWN = 50
MAX_PROBLEM_CHARS = 300

# fullmatch everywhere: '$' also matches before a trailing newline.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
_SPLIT_CODE = re.compile(r"[+-]?[0-9]{1,6}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def show(value, limit: int = 24) -> str:
    """``value`` for a one-line message: quoted, control characters escaped, cut after ``limit`` characters."""
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def one_line(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    """``text`` with control characters (newlines included) escaped, cut to ``limit`` characters."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ManifestError(ValueError):
    """A manifest that cannot be built; the message lists every bad row, one line each."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = [one_line(p) for p in problems]
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        lines = [f"  - {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  - ... and {len(self.problems) - len(shown)} more")
        super().__init__(f"manifest {one_line(self.path)} has {len(self.problems)} problem(s):\n" + "\n".join(lines))


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
    if not isinstance(video_id, str) or not _TOKEN.fullmatch(video_id):
        raise ValueError(
            f"video id {show(video_id, 40)} is not a plain token "
            "(letters, digits, '_' and '-', starting with a letter or digit, at most 128)"
        )
    return video_id


def check_crop_reference(reference) -> tuple[int, int]:
    """``(width, height)`` of the crop reference as two positive integers, else ValueError."""
    try:
        w, h = reference
        ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 100_000 for v in (w, h))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"crop reference {reference!r} is not a WIDTHxHEIGHT of positive whole pixels")
    return int(w), int(h)


def read_manifest_text(path: str | Path, limit: int = MAX_MANIFEST_BYTES) -> str:
    """A manifest file's UTF-8 text (a BOM is dropped); ValueError with a one-line reason otherwise.

    The caller names the file; the reason says what is wrong with it (not a
    file, unreadable, too large, not UTF-8 text).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {path}" if not path.exists() else f"not a regular file: {path}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ValueError(f"larger than {limit // 2**20} MiB: not a manifest")
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte 0x{data[bom + exc.start]:02x} at offset {bom + exc.start}): "
                         "a manifest is a UTF-8 CSV or text file") from None


def check_url(url: str) -> str:
    """A url cell that is not empty and holds no control characters (newline, NUL, ...); else ValueError."""
    if not url:
        raise ValueError("empty url")
    if _CONTROL.search(url):
        raise ValueError(f"url {show(url, 40)} holds a control character")
    return url


def resolve_source(url: str, base_dir: Path) -> str:
    """Turn a manifest's url cell into something :mod:`tasks.media.acquire` takes.

    A bare 11-character YouTube id becomes a watch URL; a URL with a scheme is
    kept; anything else is a local path, relative to the manifest's folder.
    ValueError for a cell that is none of these (a malformed URL, a path the
    system refuses).
    """
    url = url.strip()
    try:
        scheme = urlparse(url).scheme
        if scheme in ("http", "https", "ftp", "ytsearch"):
            return url
        if scheme == "file":
            return str(Path(urlparse(url).path).resolve())
        path = Path(url)
        candidate = path if path.is_absolute() else base_dir / path
        if candidate.exists() or "/" in url or path.suffix:
            return str(candidate.resolve())
        if _YOUTUBE_ID.fullmatch(url):
            return f"https://www.youtube.com/watch?v={url}"
        return str(candidate.resolve())
    except (ValueError, OSError) as exc:
        raise ValueError(f"url {show(url, 40)} is neither a URL nor a usable path ({one_line(exc, 80)})") from None


def accepts(check, value) -> bool:
    """Whether ``check(value)`` returns without a ValueError (a validator used as a test)."""
    try:
        check(value)
        return True
    except ValueError:
        return False


def _looks_like_header(cells: list[str]) -> bool:
    """A header names its columns: no cell from the split on is a number (a bad data row is reported, not skipped)."""
    return len(cells) >= 3 and not any(accepts(float, c) for c in cells[2:])


def parse_crop(cells: list[str], reference: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(min_y, max_y, min_x, max_x)`` from four cells, checked against ``reference``; ValueError otherwise.

    See the module docstring for the rule; edges within ``CROP_SLACK`` past the
    frame are clipped to it.  Messages show cells as given, shortened.
    """
    names = ("min y", "max y", "min x", "max x")
    values = []
    for name, cell in zip(names, cells):
        try:
            v = float(cell)
        except ValueError:
            raise ValueError(f"crop box is not four numbers: {name} {show(cell)}") from None
        if not math.isfinite(v):
            raise ValueError(f"crop box {name} {show(cell)} is not a finite number")
        values.append(v)
    width, height = reference
    min_y, max_y, min_x, max_x = values
    if min(values) < 0:
        raise ValueError(f"crop box ({', '.join(show(c, 12) for c in cells)}) has a negative coordinate")
    limits = (height, height, width, width)
    outside = [f"{n} {show(c, 12)}" for n, c, v, lim in zip(names, cells, values, limits) if v > lim * (1 + CROP_SLACK)]
    if outside:
        raise ValueError(f"crop box {', '.join(outside)} lies outside the {width}x{height} reference frame "
                         "(boxes drawn on another frame size need that size as the crop reference)")
    min_y, max_y, min_x, max_x = (int(min(v, lim)) for v, lim in zip(values, limits))
    if max_y <= min_y or max_x <= min_x:
        raise ValueError(f"crop box (min y {min_y}, max y {max_y}, min x {min_x}, max x {max_x}) is empty or inverted")
    return min_y, max_y, min_x, max_x


def _csv_rows(text: str, path: Path) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return list(reader)
    except csv.Error as exc:
        raise ManifestError(path, [f"row {reader.line_num}: not CSV ({exc})"]) from None


def read_pianoyt(path: str | Path, crop_reference: tuple[int, int] = CROP_REFERENCE) -> list[VideoRow]:
    """Read and validate a PianoYT manifest; raise :class:`ManifestError` on any problem.

    ``crop_reference`` is the ``(width, height)`` the crop boxes are pixels of
    (the build's ``--crop-reference``); boxes are checked against it.  The
    violin set has no published list; sightsound's violin manifests use this
    same format with the violinist's box as the crop (see
    ``data_manifests/README.md``), read by :func:`read_violin`.
    """
    path = Path(path)
    reference = check_crop_reference(crop_reference)
    try:
        text = read_manifest_text(path)
    except ValueError as exc:
        raise ManifestError(path, [str(exc)]) from None
    rows = _csv_rows(text, path)
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
        if not _SPLIT_CODE.fullmatch(split_s):
            problems.append(f"row {line}: split {show(split_s)} is not an integer")
            continue
        code = int(split_s)
        if code not in PIANOYT_SPLITS:
            known = ", ".join(f"{k} = {v}" for k, v in PIANOYT_SPLITS.items())
            problems.append(f"row {line}: unknown split code {code} (known: {known})")
            continue
        try:
            crop = parse_crop(box_s, reference)
            source = resolve_source(check_url(url), path.parent)
        except ValueError as exc:
            problems.append(f"row {line}: {exc}")
            continue
        out.append(VideoRow(video_id=vid, source=source, split=PIANOYT_SPLITS[code], crop=crop, row=line))
    if not problems and not out:
        problems.append("no video rows")
    if problems:
        raise ManifestError(path, problems)
    return out


def read_violin(path: str | Path, crop_reference: tuple[int, int] = CROP_REFERENCE) -> list[VideoRow]:
    """A violin manifest: PianoYT's format, the crop box being the violinist's."""
    return read_pianoyt(path, crop_reference)


def write_pianoyt(path: str | Path, rows: list[tuple]) -> Path:
    """Write rows ``(video_id, url, split_code, min_y, max_y, min_x, max_x)`` in the published format."""
    from tasks.store.atomic import write_text_atomic

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return write_text_atomic(path, buf.getvalue())
