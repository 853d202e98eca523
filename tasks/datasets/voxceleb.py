"""VoxCeleb face tracks: metadata, identity splits (thesis ch. 3-4).

VoxCeleb publishes one text file per utterance, ``txt/<identity>/<youtube
id>/<nnnnn>.txt``, in a folder or inside the zip it is downloaded as::

    Identity  : \tid10001
    Reference : \t1zcIwhmdeo4
    Offset    : \t1
    FV Conf   : \t17.910\t(1)
    ASD Conf  : \t4.513

    FRAME \tX \tY \tW \tH
    000245 \t227 \t61 \t126 \t126
    ...

one row per frame of the face track at 25 fps (frame numbers count from the
start of the YouTube video).  The two releases differ in their box units:

* ``vox1``: pixels of a frame 360 pixels high (VoxCeleb1 was cut from 360p
  videos); a video downloaded at another height is scaled by ``height / 360``
  on both axes.
* ``vox2``: fractions of the frame's width and height, in [0, 1].

The convention is detected from the numbers (any coordinate above 1 means
``vox1``; all within [0, 1] with some fraction means ``vox2``) or given with
``convention=``; a metadata set that mixes both, or whose numbers fit neither
(for example all boxes 0/1 integers), is refused rather than guessed.

Users with their own lists give a CSV manifest instead, one row per utterance::

    video_id,url,start,end,x,y,w,h,identity,split[,utterance]

``start``/``end`` in seconds, the box in fractions of the frame (as vox2),
``split`` empty (computed) or train/val/test, ``utterance`` optional.

Every id becomes part of a file name and must be a plain token (checked with
``fullmatch``: ``$`` would accept a trailing newline).  A metadata file may be
at most ``MAX_MEMBER_BYTES`` (refused from the zip header before reading, and
read with that bound, so a lying header cannot blow memory); frame numbers
are whole numbers below ``MAX_FRAME``, every number finite, and a CSV
utterance lies within ``MAX_SECONDS`` of the video's start and lasts at most
``MAX_UTTERANCE_S``.

Splits are by identity, 75/15/10 (train/val/test): identities are ordered by
the SHA-256 of their name (so neither listing order nor the machine matters)
and the first 75% go to train, the next 15% to val, the rest to test, with at
least one identity in val and test once there are three or more.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.media import decode as media
from tasks.labels.faces import CROP, N_LANDMARKS, FaceFinder, crop_square, find_face, inside_fraction, square_around
from tasks.store.shards import VideoShardWriter
from tasks.datasets.manifest import ManifestError, accepts, check_url, check_video_id, read_manifest_text, resolve_source
from tasks.datasets.manifest import show

META_FPS = 25.0  # VoxCeleb's frame numbers are at 25 fps
VOX1_HEIGHT = 360
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.75, 0.15, 0.10)
YOUTUBE_URL = "https://www.youtube.com/watch?v={id}"

# All used with fullmatch: '$' also matches before a trailing newline.
_TXT_PATH = re.compile(r"(?:.*/)?([^/]+)/([^/]+)/([^/]+)\.txt")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")

# One utterance file is ~30 bytes per frame at 25 fps: 4 MiB holds over 90
# minutes of face track, far beyond VoxCeleb's utterances (seconds to a few
# minutes), while a zip bomb's member is refused before it is inflated.
MAX_MEMBER_BYTES = 4 * 2**20
MAX_SECONDS = 24 * 3600.0  # no video is longer (YouTube's limit is 12 hours)
MAX_FRAME = int(MAX_SECONDS * 25)
MAX_UTTERANCE_S = 3600.0  # a CSV row becomes one box per frame: bound what one row can ask for
MAX_BOX = 100_000.0  # pixels (vox1) or fractions (vox2): no frame is larger


def check_reference(video_id: str) -> str:
    """A YouTube id (11 characters, which may start with '-') or a plain token; else ValueError.

    Real VoxCeleb references start with '-' now and then; the build only ever
    passes them inside absolute paths, so they cannot be read as options.
    """
    return video_id if isinstance(video_id, str) and _YOUTUBE_ID.fullmatch(video_id) else check_video_id(video_id)


def _is_token(value: str) -> bool:
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None



@dataclass(frozen=True)
class Utterance:
    """One face track.  ``boxes`` rows are ``(frame, x, y, w, h)`` in ``units`` ('vox1' or 'vox2')."""

    identity: str
    video_id: str  # the YouTube id (VoxCeleb's "Reference")
    utterance: str  # '00001', ...
    source: str  # URL or local path the video is acquired from
    boxes: tuple[tuple[float, float, float, float, float], ...]
    units: str
    split: str = ""
    where: str = ""  # the file or CSV row it came from, for messages
    # A CSV row gives one box for the whole utterance: a region the face moves
    # in, not a per-frame track; detections are matched by how much of them
    # lies inside it rather than by IoU (see tasks.labels.faces.find_face).
    region: bool = False

    @property
    def key(self) -> str:
        """A unique, file-name-safe id of the utterance: ``<identity>-<video id>-<utterance>``."""
        return f"{self.identity}-{self.video_id}-{self.utterance}"

    @property
    def first_frame(self) -> int:
        return int(self.boxes[0][0])

    @property
    def last_frame(self) -> int:
        return int(self.boxes[-1][0])


# ---------------------------------------------------------------- box units

def box_to_pixels(box, units: str, width: int, height: int) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` in the metadata's units to pixels of a ``width`` x ``height`` frame."""
    x, y, w, h = (float(v) for v in box)
    if units == "vox1":
        s = height / VOX1_HEIGHT
        return x * s, y * s, w * s, h * s
    if units == "vox2":
        return x * width, y * height, w * width, h * height
    raise ValueError(f"unknown box units {units!r} (vox1 or vox2)")


def detect_convention(values: np.ndarray) -> str | None:
    """'vox1' if any coordinate exceeds 1, 'vox2' if all lie in [0, 1] with a fraction, else None."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return None
    if np.any(values > 1.0):
        return "vox1"
    if np.all((values >= 0) & (values <= 1)) and np.any(values != np.round(values)):
        return "vox2"
    return None


# ---------------------------------------------------------------- splits

def identity_splits(identities) -> dict[str, str]:
    """Assign each identity to train/val/test (75/15/10), independent of order and machine."""
    ids = sorted(set(identities), key=lambda s: (hashlib.sha256(s.encode("utf-8")).hexdigest(), s))
    n = len(ids)
    n_val = round(SPLIT_FRACTIONS[1] * n)
    n_test = round(SPLIT_FRACTIONS[2] * n)
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    return {i: ("train" if k < n_train else "val" if k < n_train + n_val else "test") for k, i in enumerate(ids)}


# ---------------------------------------------------------------- reading

def parse_txt(text: str, where: str) -> tuple[dict[str, str], np.ndarray]:
    """Header fields and the ``FRAME X Y W H`` rows (float64 array, n x 5) of one VoxCeleb txt file."""
    header: dict[str, str] = {}
    rows: list[list[float]] = []
    in_rows = False
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if not in_rows:
            if line.split()[0].upper() == "FRAME":
                in_rows = True
                continue
            if ":" not in line:
                raise ValueError(f"{where} line {n}: expected 'Key : value' or the FRAME header, got {line[:60]!r}")
            key, value = line.split(":", 1)
            header[key.strip()] = value.strip().split("\t")[0].strip()
            continue
        cells = line.split()
        if len(cells) != 5:
            raise ValueError(f"{where} line {n}: expected 'FRAME X Y W H', got {line[:60]!r}")
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            raise ValueError(f"{where} line {n}: not numbers: {line[:60]!r}") from None
    if not in_rows:
        raise ValueError(f"{where}: no 'FRAME X Y W H' header")
    if not rows:
        raise ValueError(f"{where}: no frame rows")
    arr = np.asarray(rows, dtype=np.float64)
    frames = arr[:, 0]
    if not np.all((frames >= 0) & (frames <= MAX_FRAME) & (frames == np.round(frames))):
        raise ValueError(f"{where}: frame numbers must be whole numbers from 0 to {MAX_FRAME}")
    if not np.all(np.abs(arr[:, 1:]) <= MAX_BOX):  # also false for nan
        raise ValueError(f"{where}: a box coordinate is not a finite number within +-{MAX_BOX:g}")
    if np.any(np.diff(arr[:, 0]) <= 0):
        raise ValueError(f"{where}: frame numbers do not increase")
    if np.any(arr[:, 3:] <= 0):
        raise ValueError(f"{where}: a box has no width or height")
    return header, arr


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError, ValueError)


def _read_bounded(fh, where: str) -> tuple[str | None, str | None]:
    """``(text, None)``, or ``(None, problem)`` when the file holds more than ``MAX_MEMBER_BYTES``."""
    data = fh.read(MAX_MEMBER_BYTES + 1)
    if len(data) > MAX_MEMBER_BYTES:
        return None, f"{where}: larger than {MAX_MEMBER_BYTES // 2**20} MiB, not an utterance file"
    return data.decode("utf-8", errors="replace"), None


def _txt_entries(path: Path):
    """Yield ``(where, name, text, problem)`` for every ``.txt`` under a folder or in a zip.

    ``text`` is None where ``problem`` says why the entry cannot be read (too
    large, not a regular file, a damaged or encrypted zip member).  A member
    larger than ``MAX_MEMBER_BYTES`` by its header is refused unread, and every
    read stops one byte past that bound.
    """
    if path.is_file():
        try:
            zf = zipfile.ZipFile(path)
        except _ZIP_ERRORS as exc:
            yield path.name, "", None, f"{path.name}: neither a folder nor a readable zip ({exc})"
            return
        with zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                name = info.filename
                if not name.endswith(".txt") or info.is_dir():
                    continue
                where = f"{path.name}:{name}"
                if info.file_size > MAX_MEMBER_BYTES:
                    yield where, name, None, (f"{where}: {info.file_size} bytes uncompressed, over the "
                                              f"{MAX_MEMBER_BYTES // 2**20} MiB an utterance file may be")
                    continue
                try:
                    with zf.open(info) as fh:
                        text, problem = _read_bounded(fh, where)
                except _ZIP_ERRORS as exc:
                    text, problem = None, f"{where}: cannot be read from the zip ({exc})"
                yield where, name, text, problem
        return
    root = path / "txt" if (path / "txt").is_dir() else path
    for file in sorted(root.rglob("*.txt")):
        rel = file.relative_to(root).as_posix()
        if file.is_dir():
            continue
        if not file.is_file():
            yield str(file), rel, None, f"{file}: not a regular file"
            continue
        try:
            with open(file, "rb") as fh:
                text, problem = _read_bounded(fh, str(file))
        except OSError as exc:
            text, problem = None, f"{file}: cannot be read ({exc.strerror or exc})"
        yield str(file), rel, text, problem


def read_voxceleb_txt(path: str | Path, convention: str = "auto", source_template: str = YOUTUBE_URL,
                      base_dir: str | Path | None = None) -> list[Utterance]:
    """Read and validate VoxCeleb per-utterance metadata from a folder or a zip.

    ``source_template`` makes the acquisition source of a YouTube id (``{id}``);
    by default the YouTube watch URL.  A template without a URL scheme is a
    local path, relative to ``base_dir`` (default: the current folder).
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(path, [f"not found: {path}"])
    if convention not in ("auto", "vox1", "vox2"):
        raise ManifestError(path, [f"unknown box convention {convention!r} (auto, vox1 or vox2)"])
    if "{id}" not in source_template:
        raise ManifestError(path, [f"source template {source_template!r} has no '{{id}}'"])
    base = Path(base_dir) if base_dir else Path.cwd()
    problems: list[str] = []
    parsed = []
    seen: dict[tuple[str, str, str], str] = {}
    for where, rel, text, problem in _txt_entries(path):
        if problem:
            problems.append(problem)
            continue
        m = _TXT_PATH.fullmatch(rel)
        if not m:
            problems.append(f"{where}: not in the layout txt/<identity>/<youtube id>/<utterance>.txt")
            continue
        identity, video_id, utt = m.groups()
        named = (("identity", identity), ("youtube id", video_id), ("utterance", utt))
        bad = [f"{what} {show(v, 40)}" for what, v in named
               if not (_is_token(v) if what != "youtube id" else accepts(check_reference, v))]
        if bad:
            problems.append(f"{where}: " + "; ".join(bad) + (" are not plain tokens" if len(bad) > 1
                                                                else " is not a plain token"))
            continue
        try:
            header, rows = parse_txt(text, where)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        ref = header.get("Reference")
        if ref and ref != video_id:
            problems.append(f"{where}: Reference {ref!r} differs from its folder {video_id!r}")
            continue
        hid = header.get("Identity")
        if hid and hid != identity:
            problems.append(f"{where}: Identity {hid!r} differs from its folder {identity!r}")
            continue
        if (identity, video_id, utt) in seen:
            problems.append(f"{where}: duplicate utterance {identity}/{video_id}/{utt} (also {seen[identity, video_id, utt]})")
            continue
        seen[identity, video_id, utt] = where
        parsed.append((where, identity, video_id, utt, rows))
    if not parsed and not problems:
        problems.append("no utterance files (txt/<identity>/<youtube id>/<utterance>.txt)")
    units = convention
    if parsed and convention == "auto":
        found = {w: detect_convention(r[:, 1:]) for w, _, _, _, r in parsed}
        kinds = set(found.values())
        if None in kinds:
            undecided = [w for w, k in found.items() if k is None][:5]
            problems.append("cannot tell VoxCeleb1 pixel boxes from VoxCeleb2 fractions in "
                            + ", ".join(undecided) + ": give the convention (vox1 or vox2)")
        elif len(kinds) > 1:
            problems.append("the metadata mixes VoxCeleb1 pixel boxes and VoxCeleb2 fractions "
                            f"(e.g. {next(w for w, k in found.items() if k == 'vox1')} and "
                            f"{next(w for w, k in found.items() if k == 'vox2')}): give one set at a time")
        else:
            units = kinds.pop()
    if units == "vox2":
        for where, *_, rows in parsed:
            if np.any(rows[:, 1:] > 1.0):
                problems.append(f"{where}: VoxCeleb2 boxes must be fractions in [0, 1]")
    if problems:
        raise ManifestError(path, problems)
    sources = {}
    for where, _, video_id, _, _ in parsed:
        try:
            sources[video_id] = resolve_source(check_url(source_template.replace("{id}", video_id)), base)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        raise ManifestError(path, problems)
    splits = identity_splits(p[1] for p in parsed)
    out = []
    for where, identity, video_id, utt, rows in parsed:
        source = sources[video_id]
        out.append(Utterance(identity, video_id, utt, source, tuple(map(tuple, rows.tolist())), units,
                             splits[identity], where))
    return out


CSV_COLUMNS = ("video_id", "url", "start", "end", "x", "y", "w", "h", "identity", "split")


def read_voxceleb_csv(path: str | Path) -> list[Utterance]:
    """Read and validate a CSV manifest of utterances (see the module docstring)."""
    path = Path(path)
    try:
        text = read_manifest_text(path)
    except ValueError as exc:
        raise ManifestError(path, [str(exc)]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        records = list(reader)
    except csv.Error as exc:
        raise ManifestError(path, [f"row {reader.line_num}: not CSV ({exc})"]) from None
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ManifestError(path, [f"header lacks column(s) {', '.join(missing)} "
                                   f"(expected {','.join(CSV_COLUMNS)}[,utterance])"])
    problems: list[str] = []
    rows = []
    seen: dict[tuple, int] = {}
    for line, rec in enumerate(records, start=2):
        rec = {k: v.strip() if isinstance(v, str) else "" for k, v in rec.items() if k}
        if not any(rec.values()):
            continue
        try:
            vid = check_reference(rec["video_id"])
        except ValueError as exc:
            problems.append(f"row {line}: {exc}")
            continue
        identity, utt = rec["identity"], rec.get("utterance") or f"{line - 1:05d}"
        if not _is_token(identity) or not _is_token(utt):
            problems.append(f"row {line}: identity {show(identity, 40)} or utterance {show(utt, 40)} "
                            "is not a plain token")
            continue
        try:
            check_url(rec["url"])
        except ValueError as exc:
            problems.append(f"row {line}: {exc}")
            continue
        try:
            start, end, x, y, w, h = (float(rec[c]) for c in ("start", "end", "x", "y", "w", "h"))
        except ValueError:
            problems.append(f"row {line}: start, end, x, y, w, h must be numbers")
            continue
        if not 0 <= start < end <= MAX_SECONDS:
            problems.append(f"row {line}: need 0 <= start < end <= {MAX_SECONDS:g}, got {start:g}, {end:g}")
            continue
        if end - start > MAX_UTTERANCE_S:
            problems.append(f"row {line}: an utterance lasts at most {MAX_UTTERANCE_S:g} s, got {end - start:g}")
            continue
        if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < w <= 1 and 0 < h <= 1):
            problems.append(f"row {line}: the box must be fractions of the frame in [0, 1], "
                            f"got {x:g}, {y:g}, {w:g}, {h:g}")
            continue
        split = rec["split"].lower()
        if split and split not in SPLITS:
            problems.append(f"row {line}: unknown split {rec['split']!r} (train, val, test or empty)")
            continue
        key = (identity, vid, utt)
        if key in seen:
            problems.append(f"row {line}: duplicate utterance {'/'.join(key)} (first on row {seen[key]})")
            continue
        try:
            source = resolve_source(rec["url"], path.parent)
        except ValueError as exc:
            problems.append(f"row {line}: {exc}")
            continue
        seen[key] = line
        rows.append((line, vid, source, start, end, (x, y, w, h), identity, split, utt))
    given: dict[str, set] = {}
    for line, _, _, _, _, _, identity, split, _ in rows:
        if split:
            given.setdefault(identity, set()).add(split)
    for identity, s in sorted(given.items()):
        if len(s) > 1:
            problems.append(f"identity {identity!r} is given more than one split ({', '.join(sorted(s))})")
    partly = sorted(i for i in given if any(r[6] == i and not r[7] for r in rows))
    if partly:
        problems.append(f"identities with the split given on some rows only: {', '.join(partly)}")
    if not rows and not problems:
        problems.append("no utterance rows")
    if problems:
        raise ManifestError(path, problems)
    computed = identity_splits(r[6] for r in rows)
    out = []
    for line, vid, source, start, end, box, identity, split, utt in rows:
        first, last = int(round(start * META_FPS)), max(int(round(start * META_FPS)), int(round(end * META_FPS)) - 1)
        boxes = tuple((float(f), *box) for f in range(first, last + 1))
        out.append(Utterance(identity, vid, utt, source, boxes, "vox2",
                             split or computed[identity], f"{path.name} row {line}", region=True))
    return out


def read_metadata(path: str | Path, convention: str = "auto", source_template: str = YOUTUBE_URL,
                  base_dir: str | Path | None = None) -> list[Utterance]:
    """A CSV manifest (``.csv``), or VoxCeleb txt metadata in a folder or a zip."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_voxceleb_csv(path)
    return read_voxceleb_txt(path, convention, source_template, base_dir)


def sample_frames(utt: Utterance, per_second: float = 1.0) -> list[tuple[int, tuple[float, float, float, float]]]:
    """``(metadata frame, box)`` one per ``1 / per_second`` seconds of the track, from its first frame."""
    step = max(1, int(round(META_FPS / per_second)))
    by_frame = {int(f): (x, y, w, h) for f, x, y, w, h in utt.boxes}
    return [(f, by_frame[f]) for f in range(utt.first_frame, utt.last_frame + 1, step) if f in by_frame]


# ---------------------------------------------------------------- status and card

STATUS_EXTRA = [
    ("identity", "string"), ("utterance", "string"), ("key", "string"),
    ("sampled", "int64"), ("detected", "int64"), ("fallback", "int64"), ("outside", "int64"), ("past_end", "int64"),
    ("undecoded", "int64"),
]
DETECTION_COUNTS = ("sampled", "detected", "fallback", "outside", "past_end", "undecoded")


def layout(data_root):
    from tasks.store.layout import Layout

    return Layout.under(data_root, "voxceleb")


def write_status_and_card(layout, records: list[dict], source: str, units: str, detector: str) -> dict:
    """Write ``status.parquet`` (one row per utterance) and ``CARD.md``; return the summary rows."""
    import datetime as _dt

    import pyarrow as pa

    from tasks.store.atomic import write_text_atomic
    from tasks.datasets.records import failures_section, format_table, losses_section, status_table
    from tasks.store.shards import write_table_atomic

    write_table_atomic(status_table(records, [(n, getattr(pa, t)()) for n, t in STATUS_EXTRA]), layout.status)
    summary = []
    for split in [s for s in SPLITS if any(r["split"] == s for r in records)] + ["all"]:
        sel = [r for r in records if split == "all" or r["split"] == split]
        done = [r for r in sel if r["state"] == "done"]
        row = {"split": split, "identities": len({r["identity"] for r in sel}), "utterances": len(sel),
               "done": len(done), "failed": len(sel) - len(done),
               "frames": sum(int(r.get("frames") or 0) for r in done)}
        row.update({k: sum(int(r.get(k) or 0) for r in done) for k in DETECTION_COUNTS})
        summary.append(row)
    total = summary[-1]
    used = total["detected"] + total["fallback"]
    lines = [
        "# VoxCeleb face tracks (rebuilt by sightsound)",
        "",
        f"- source: `{source}`; boxes: {units} "
        f"({'pixels of a 360-pixel-high frame' if units == 'vox1' else 'fractions of the frame'})",
        f"- frames: 1 per second of each face track; face found with dlib ({detector}) near the metadata box,"
        " else the metadata box; square crop with a margin, 256 x 256 RGB JPEG; dlib's 68 landmarks of the crop",
        "- splits: by identity, 75/15/10 train/val/test, identities ordered by the SHA-256 of their name",
        f"- built: {_dt.date.today().isoformat()}",
        "",
        "## Counts per split",
        "",
        format_table(summary),
        "",
        "## Detection",
        "",
        f"- frames kept: {used}; found by dlib: {total['detected']} ({100 * total['detected'] / max(1, used):.1f}%);"
        f" metadata box used: {total['fallback']}",
        f"- frames skipped: {total['outside']} with the face box mostly outside the picture, "
        f"{total['past_end']} past the video's end, {total['undecoded']} not decodable",
        "",
    ] + losses_section(records) + failures_section(records)
    write_text_atomic(layout.card, "\n".join(lines) + "\n")
    return {"summary": summary}


def redetect_build(data_root, detector: str = "hog") -> list[dict]:
    """Per split and overall: in how many stored crops dlib finds exactly one face again."""
    from tasks.labels.faces import redetect
    from tasks.store.shards import complete_parts, read_dataset

    shards = layout(data_root).shards
    if not complete_parts(shards):
        return []
    table = read_dataset(shards, columns=["image", "split"])
    images, splits = table.column("image").to_pylist(), table.column("split").to_pylist()
    rows = []
    for split in sorted(set(splits)) + ["all"]:
        sel = [im for im, s in zip(images, splits) if split == "all" or s == split]
        r = redetect(sel, detector)
        rows.append({"split": split, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}})
    return rows


# ---------------------------------------------------------------- the frames of one utterance

SCHEMA = pa.schema(
    [
        ("identity", pa.string()),
        ("video_id", pa.string()),
        ("utterance", pa.string()),
        ("frame_index", pa.int32()),  # frame of the downloaded video
        ("meta_frame", pa.int32()),  # VoxCeleb's frame number (25 fps)
        ("time", pa.float64()),
        ("image", pa.binary()),  # JPEG, 256 x 256 RGB
        ("box", pa.list_(pa.float32(), 4)),  # the face box used: x, y, w, h in video pixels
        ("meta_box", pa.list_(pa.float32(), 4)),  # the metadata's box, same units
        ("landmarks", pa.list_(pa.float32(), 2 * N_LANDMARKS)),  # x0, y0, x1, y1, ... in crop pixels
        ("found_by", pa.string()),  # dlib-hog | dlib-cnn | metadata
        ("overlap", pa.float32()),  # IoU of the best detection with the metadata box (0: none);
        # for a CSV row's region box, the fraction of the detection inside it
    ]
)


def _frames_at(video_path: str, info, wanted: list[int]) -> dict[int, np.ndarray]:
    """The pictures of frames ``wanted`` (indices on the probe's grid), read by their timestamps.

    One ffmpeg pass from the first wanted frame to the last (it seeks there);
    a wanted frame that does not decode is absent from the result.
    """
    if not wanted:
        return {}
    want, out = set(wanted), {}
    for indices, frames in media.iter_frames(video_path, info, start=wanted[0], stop=wanted[-1] + 1, chunk=8):
        for i, frame in zip(indices.tolist(), frames):
            if i in want:
                out[i] = frame.copy()
    return out


def build_utterance(
    video_path: str,
    utt: dict,
    shards_dir: str,
    split: str,
    *,
    detector: str = "hog",
    min_iou: float = 0.3,
    margin: float = 0.4,
    per_second: float = 1.0,
    upsample: int | None = None,
    probe: dict | None = None,
) -> dict:
    """Crop one utterance's faces (see the module docstring) and write its shard part.

    ``utt`` is :class:`Utterance` as a plain dict (identity,
    video_id, utterance, boxes, units, key, region).  ``probe`` is the
    video's :class:`tasks.media.decode.Probe` as a dict when the caller has it (the
    flow probes each video once for all its utterances).  Returns the counts
    for the status table.
    """
    u = Utterance(utt["identity"], utt["video_id"], utt["utterance"], "", tuple(map(tuple, utt["boxes"])), utt["units"])
    info = media.Probe(**probe) if probe else media.probe(video_path)
    wanted = sample_frames(u, per_second)
    finder = FaceFinder.for_thread(detector)
    counts = {"sampled": len(wanted), "outside": 0, "past_end": 0, "undecoded": 0, "detected": 0, "fallback": 0}
    todo = []
    for meta_frame, box in wanted:
        t = meta_frame / META_FPS
        index = int(round(t * info.fps))
        if index >= info.frames:
            counts["past_end"] += 1
            continue
        px = box_to_pixels(box, u.units, info.width, info.height)
        if inside_fraction(px, info.width, info.height) < 0.5:
            counts["outside"] += 1
            continue
        todo.append((meta_frame, index, t, px))
    rows = []
    decoded = _frames_at(video_path, info, sorted({i for _, i, _, _ in todo}))
    counts["undecoded"] = sum(i not in decoded for _, i, _, _ in todo)
    for meta_frame, index, t, px in todo:
        frame = decoded.get(index)
        if frame is not None:
            face, found_by, overlap, _ = find_face(finder, frame, px, min_iou, upsample, bool(utt.get("region")))
            x0, y0, side = square_around(face, margin)
            crop = crop_square(frame, x0, y0, side)
            s = CROP / side
            in_crop = ((face[0] - x0) * s, (face[1] - y0) * s, face[2] * s, face[3] * s)
            counts["detected" if found_by != "metadata" else "fallback"] += 1
            rows.append((meta_frame, index, t, crop, face, px, finder.landmarks(crop, in_crop), found_by, overlap))
    if not rows:
        why = []
        if counts["outside"]:
            why.append(f"face box outside the picture in {counts['outside']}")
        if counts["past_end"]:
            why.append(f"past the video's end in {counts['past_end']}")
        if counts["undecoded"]:
            why.append(f"not decodable in {counts['undecoded']}")
        raise ValueError(f"no usable frame: {' and '.join(why) or 'no frames'} of {counts['sampled']} sampled frames")
    if counts["detected"] == 0:
        raise ValueError(f"dlib ({detector}) found no face near the track in any of {len(rows)} frames")

    import cv2

    n = len(rows)
    batch = pa.record_batch(
        [
            pa.array([u.identity] * n, pa.string()),
            pa.array([u.video_id] * n, pa.string()),
            pa.array([u.utterance] * n, pa.string()),
            pa.array([r[1] for r in rows], pa.int32()),
            pa.array([r[0] for r in rows], pa.int32()),
            pa.array([r[2] for r in rows], pa.float64()),
            pa.array([media.encode_image(cv2.cvtColor(r[3], cv2.COLOR_RGB2BGR), "jpeg") for r in rows], pa.binary()),
            pa.array([list(map(float, r[4])) for r in rows], pa.list_(pa.float32(), 4)),
            pa.array([list(map(float, r[5])) for r in rows], pa.list_(pa.float32(), 4)),
            pa.array([r[6].tolist() for r in rows], pa.list_(pa.float32(), 2 * N_LANDMARKS)),
            pa.array([r[7] for r in rows], pa.string()),
            pa.array([r[8] for r in rows], pa.float32()),
        ],
        schema=SCHEMA,
    )
    with VideoShardWriter(shards_dir, utt["key"], split, SCHEMA) as writer:
        writer.write(batch)
        parts = writer.commit()
    return {
        "key": utt["key"],
        "frames": n,
        "seconds": (u.last_frame - u.first_frame + 1) / META_FPS,
        **counts,
        "mean_overlap": float(np.mean([r[8] for r in rows if r[7] != "metadata"] or [0.0])),
        "expected_frames": len(todo),
        "lost_frames": counts["undecoded"],
        "lost": (f"{counts['undecoded']} of {len(todo)} sampled frames not decodable" if counts["undecoded"] else ""),
        "parts": parts,
    }
