"""Face landmark and head-pose annotations in the published layouts of MAFL, 300-W and AFLW.

FAb-Net (Wiles, Koepke and Zisserman, BMVC 2018) scores linear probes on
its embedding against these three sets; the readers below take each set as
it is downloaded and return plain :class:`FaceAnnotation` records, so a
user with the real data scores probes on it unchanged.  Nothing here imports
torch or Prefect.

**MAFL** (:func:`read_mafl`) is the 20,000-image CelebA subset of Zhang et
al. (ECCV 2014): the files ``training.txt`` (19,000) and ``testing.txt``
(1,000) list CelebA image names one per line (as in
``zhzhanp/TCDCN-face-alignment/MAFL``), and the five landmarks (left eye,
right eye, nose, left and right mouth corner) come from CelebA's own
annotation file.  The layout read is the CelebA download with the MAFL
lists added, the one the VGG landmark works read (``jamt9000/DVE``)::

    ROOT/Anno/list_landmarks_align_celeba.txt
    ROOT/Img/img_align_celeba/000001.jpg ...
    ROOT/MAFL/training.txt, ROOT/MAFL/testing.txt

Each file is also found directly in ``ROOT`` (a flat folder).  The default
``variant="aligned"`` pairs the aligned-and-cropped images
(``img_align_celeba``, 178 x 218) with ``list_landmarks_align_celeba.txt``,
the points drawn on them, as the unsupervised-landmark works do;
``variant="wild"`` pairs the in-the-wild images (``img_celeba``) with
``list_landmarks_celeba.txt``.  (``list_landmarks_celeba.txt`` does not fit
the aligned images: its points are in the uncropped photographs.)  An
annotation file is a count line, the header ``lefteye_x lefteye_y
righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x
rightmouth_y`` and rows ``NAME x1 y1 ... x5 y5``.  CelebA does not say
where its pixel origin is; its whole-pixel coordinates are kept as they are
(taken as 0-based), as the DVE loaders use them.

**300-W** (:func:`read_300w`, Sagonas et al. 2013/2016) is read as the
iBUG downloads unpack: a ``.pts`` file beside each image (same name,
``.jpg`` or ``.png``) in ``lfpw/trainset``, ``lfpw/testset``,
``helen/trainset``, ``helen/testset``, ``afw`` and ``ibug``, and the
competition's own test set ``300W/01_Indoor`` and ``300W/02_Outdoor``
(folder names in any case; the folder closest to the file decides).  The
splits are the usual protocol's: ``train`` (LFPW and HELEN trainsets and
AFW, 3,148 faces), ``common`` (LFPW and HELEN testsets, 554), ``challenging``
(iBUG, 135) and ``private`` (the 600 faces of ``300W/``); the "full" test
set is ``common`` + ``challenging`` (:data:`W300_FULL`).  ``.pts`` files in
other folders are not 300-W's and are skipped.  A ``.pts`` file is
``version: 1``, ``n_points: 68``, ``{``, 68 lines ``x y`` and ``}``.  iBUG
saves the points "in the Matlab convention of 1 being the first index, i.e.
the coordinates of the top left pixel in an image are x=1, y=1" (the 300-W
page, as quoted in ``patrikhuber/eos``' ``read_pts_landmarks.hpp``), so
:func:`read_pts` subtracts 1 from both coordinates: every reader here
returns 0-based pixel coordinates, the top-left pixel's centre at (0, 0).

**AFLW** (:func:`read_aflw`, Koestinger et al. 2011) ships ``aflw.sqlite``
beside the ``flickr/`` folder of images (``aflw/data/aflw.sqlite``,
``aflw/data/flickr/0/image00002.jpg``).  Its tables and columns, checked
against the AFLW toolkit's own queries (``facedbsql`` in ``hardegg/aflw``):
``Faces(face_id, file_id, db_id)``, ``FaceImages(image_id, db_id, file_id,
filepath, bw, width, height)`` (joined to ``Faces`` on ``file_id`` and
``db_id``; ``filepath`` is relative to ``flickr/``),
``FacePose(face_id, roll, pitch, yaw, annot_type_id)`` (radians; the POSIT
fit of a mean 3-D face) and ``FaceRect(face_id, x, y, w, h,
annot_type_id)`` (top-left corner and size in pixels, kept as stored).  Each
face gives one record with the pose in **degrees** (:class:`HeadPose`:
roll, pitch, yaw in that order); where a face has several pose or rect rows
the first stored is taken; a face with none has ``pose`` / ``rect`` None.
FAb-Net's pose probe follows the split of Kumar et al. (KEPLER); AFLW
itself has none, so the split is given as a text file (:func:`read_aflw_split`):
one entry a line, a ``face_id`` or an image (its ``file_id``, e.g.
``image00002.jpg``, or ``filepath``); listed faces are ``test``, the rest
``train`` (``all`` when no split file is given).

Malformed input is refused with an :class:`AnnotationError` (a
``ValueError``) whose message is one line naming the file and, for text
files, the 1-based line (``.../img1.pts:5: expected 2 numbers, got 'x'``):
a wrong point count, a value that is not a finite number, a missing brace
or header, a listed image that is not there, a file that is not an SQLite
database or lacks one of AFLW's tables or columns.

:func:`inter_ocular_distance` and :func:`landmark_error` score predictions
as the FAb-Net and unsupervised-landmark papers do: the mean point-to-point
distance over the inter-ocular distance, in %; the inter-ocular distance is
between the eye centres (points 0 and 1) of a 5-point face and the outer eye
corners (0-based points 36 and 45, 37 and 46 in iBUG's numbering) of a
68-point face, 300-W's normalisation.
"""

from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tasks.datasets.manifest import one_line, read_manifest_text, show

MAFL_LISTS = {"train": "training.txt", "test": "testing.txt"}
CELEBA_LANDMARK_COLUMNS = ("lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
                           "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y")
# variant -> (annotation file, image folder)
CELEBA_VARIANTS = {"aligned": ("list_landmarks_align_celeba.txt", "img_align_celeba"),
                   "wild": ("list_landmarks_celeba.txt", "img_celeba")}

W300_SPLITS = ("train", "common", "challenging", "private")
W300_FULL = ("common", "challenging")
PTS_ORIGIN = 1.0  # iBUG's .pts files put the top-left pixel at (1, 1)
_IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")

# table -> the columns read from it (AFLW's names; SQLite compares them case-insensitively)
AFLW_TABLES = {
    "Faces": ("face_id", "file_id", "db_id"),
    "FaceImages": ("file_id", "db_id", "filepath"),
    "FacePose": ("face_id", "roll", "pitch", "yaw"),
    "FaceRect": ("face_id", "x", "y", "w", "h"),
}

EYE_CENTRES_5 = (0, 1)  # MAFL / CelebA: left eye, right eye
EYE_CORNERS_68 = (36, 45)  # 300-W: outer eye corners, 0-based

# ASCII only: '\d' would take any script's digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_COUNT = re.compile(r"[0-9]{1,9}")
_VERSION = re.compile(r"version:\s*1(?:\.0*)?", re.IGNORECASE)
_N_POINTS = re.compile(r"n_points\s*:\s*([0-9]{1,6})", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class AnnotationError(ValueError):
    """An annotation file or folder that cannot be read; the message is one line naming the file (and line)."""

    def __init__(self, message: str):
        super().__init__(one_line(message, 500))


class HeadPose(NamedTuple):
    """Head pose in degrees."""

    roll: float
    pitch: float
    yaw: float


@dataclass(frozen=True, eq=False)
class FaceAnnotation:
    """One annotated face.

    ``points`` is ``(N, 2)`` float64, ``x`` then ``y``, in 0-based pixel
    coordinates of ``image`` (read-only; ``(0, 2)`` for AFLW, read for its
    pose).  ``source`` is where the annotation was read (``file:line``, or
    the database and face id).
    """

    image: Path
    points: np.ndarray
    split: str
    subset: str = ""  # 300-W: lfpw, helen, afw, ibug, 300W-indoor, 300W-outdoor; MAFL: the variant; AFLW: db_id
    pose: HeadPose | None = None
    rect: tuple[float, float, float, float] | None = None  # AFLW's face rect: x, y, w, h
    face_id: int | None = None  # AFLW's Faces.face_id
    source: str = ""

    @property
    def name(self) -> str:
        return self.image.name


# ---------------------------------------------------------------- text helpers


def _read_text(path: Path) -> str:
    try:
        return read_manifest_text(path)
    except ValueError as exc:
        raise AnnotationError(f"{path}: {exc}") from None


def _lines(text: str) -> list[str]:
    """Lines split at '\\n' only (so numbers match an editor's), '\\r' and surrounding blanks stripped."""
    return [line.strip() for line in text.split("\n")]


def _number(token: str, where: str, what: str) -> float:
    """``token`` as a finite float, else an AnnotationError naming ``where`` and ``what``."""
    try:
        value = float(token)
    except ValueError:
        value = None
    if value is not None and not math.isfinite(value):
        raise AnnotationError(f"{where}: {what} {show(token)} is not a finite number")
    if value is None or not _NUMBER.fullmatch(token):
        raise AnnotationError(f"{where}: {what} {show(token)} is not a number")
    return value


def _numbers(tokens: list[str], where: str, names: tuple[str, ...]) -> list[float]:
    try:  # the fast path, for the 200,000 rows of a CelebA file
        values = [float(t) for t in tokens]
        if all(math.isfinite(v) for v in values) and all(_NUMBER.fullmatch(t) for t in tokens):
            return values
    except ValueError:
        pass
    return [_number(t, where, n) for t, n in zip(tokens, names)]  # raises, naming the bad value


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not re.search(r"[/\\]", name) and not _CONTROL.search(name)


def _readonly(points: np.ndarray) -> np.ndarray:
    points = np.ascontiguousarray(points, dtype=np.float64)
    points.setflags(write=False)
    return points


# ---------------------------------------------------------------- MAFL (CelebA)


def read_celeba_landmarks(path: str | Path) -> tuple[dict[str, int], np.ndarray]:
    """CelebA's 5-point file: ``({image name: row}, points (M, 5, 2) float64)``, rows in file order."""
    path = Path(path)
    lines = _lines(_read_text(path))
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line]
    if len(numbered) < 2:
        raise AnnotationError(f"{path}: expected a count line and the header "
                              f"{' '.join(CELEBA_LANDMARK_COLUMNS)!r}, found {len(numbered)} line(s)")
    (n_count, count_line), (n_header, header) = numbered[:2]
    if not _COUNT.fullmatch(count_line):
        raise AnnotationError(f"{path}:{n_count}: expected the number of rows, got {show(count_line)}")
    if tuple(header.split()) != CELEBA_LANDMARK_COLUMNS:
        raise AnnotationError(f"{path}:{n_header}: expected the header {' '.join(CELEBA_LANDMARK_COLUMNS)!r}, "
                              f"got {show(header, 60)}")
    index: dict[str, int] = {}
    first_line: dict[str, int] = {}
    values: list[list[float]] = []
    for n, line in numbered[2:]:
        tokens = line.split()
        if len(tokens) != 1 + len(CELEBA_LANDMARK_COLUMNS):
            raise AnnotationError(f"{path}:{n}: expected an image name and {len(CELEBA_LANDMARK_COLUMNS)} numbers, "
                                  f"got {len(tokens)} field(s)")
        name = tokens[0]
        if not _plain_name(name):
            raise AnnotationError(f"{path}:{n}: image {show(name, 60)} is not a plain file name")
        if name in index:
            raise AnnotationError(f"{path}:{n}: image {show(name, 60)} listed twice (first on line {first_line[name]})")
        values.append(_numbers(tokens[1:], f"{path}:{n}", CELEBA_LANDMARK_COLUMNS))
        index[name] = len(index)
        first_line[name] = n
    if int(count_line) != len(index):
        raise AnnotationError(f"{path}:{n_count}: the count says {int(count_line)} rows, the file has {len(index)}")
    points = np.asarray(values, dtype=np.float64).reshape(len(index), 5, 2)
    return index, points


def _first(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def read_mafl(root: str | Path, splits: tuple[str, ...] = ("train", "test"), *,
              variant: str = "aligned", check_files: bool = True) -> list[FaceAnnotation]:
    """MAFL faces of a CelebA folder (see the module docstring), ``splits`` in order, each in list order.

    Points are ``(5, 2)``: left eye, right eye, nose, left and right mouth
    corner.  With ``check_files`` every listed image must exist.  An image
    listed twice, or in both lists, is refused.
    """
    root = Path(root)
    if variant not in CELEBA_VARIANTS:
        raise ValueError(f"unknown CelebA variant {variant!r}; one of {', '.join(CELEBA_VARIANTS)}")
    unknown = [s for s in splits if s not in MAFL_LISTS]
    if unknown:
        raise ValueError(f"unknown MAFL split(s) {unknown}; MAFL has {', '.join(MAFL_LISTS)}")
    if not root.is_dir():
        raise AnnotationError(f"no such folder: {root}")
    anno_name, image_folder = CELEBA_VARIANTS[variant]
    anno = _first(root / "Anno" / anno_name, root / anno_name)
    if anno is None:
        hint = ""
        wild = CELEBA_VARIANTS["wild"][0]
        if variant == "aligned" and _first(root / "Anno" / wild, root / wild):
            hint = ("; list_landmarks_celeba.txt holds the points of the in-the-wild images (variant='wild'), "
                    "not of img_align_celeba")
        raise AnnotationError(f"{root}: no {anno_name} in Anno/ or the folder itself{hint}")
    images = _first(root / "Img" / image_folder, root / image_folder) or root / image_folder
    if check_files and not images.is_dir():
        raise AnnotationError(f"{root}: no image folder {image_folder}/ in Img/ or the folder itself")
    index, points = read_celeba_landmarks(anno)
    out: list[FaceAnnotation] = []
    seen: dict[str, str] = {}
    for split in splits:
        listing = _first(root / "MAFL" / MAFL_LISTS[split], root / MAFL_LISTS[split])
        if listing is None:
            raise AnnotationError(f"{root}: no {MAFL_LISTS[split]} in MAFL/ or the folder itself")
        for n, line in enumerate(_lines(_read_text(listing)), start=1):
            if not line:
                continue
            where = f"{listing}:{n}"
            tokens = line.split()
            if len(tokens) != 1:
                raise AnnotationError(f"{where}: expected one image name, got {len(tokens)} fields")
            name = tokens[0]
            if not _plain_name(name):
                raise AnnotationError(f"{where}: image {show(name, 60)} is not a plain file name")
            if name in seen:
                raise AnnotationError(f"{where}: image {show(name, 60)} is listed already (at {seen[name]})")
            seen[name] = where
            if name not in index:
                raise AnnotationError(f"{where}: image {show(name, 60)} is not in {anno}")
            image = images / name
            if check_files and not image.is_file():
                raise AnnotationError(f"{where}: image {show(name, 60)} does not exist in {images}")
            out.append(FaceAnnotation(image=image.absolute(), points=_readonly(points[index[name]]), split=split,
                                      subset=variant, source=where))
    return out


# ---------------------------------------------------------------- 300-W


def read_pts(path: str | Path, n_points: int | None = 68, *, origin: float = PTS_ORIGIN) -> np.ndarray:
    """The points of an iBUG ``.pts`` file, ``(n, 2)`` float64, with ``origin`` subtracted (0-based by default).

    ``n_points`` is the count required (None: whatever the header says).
    Blank lines are ignored; anything after the closing ``}`` is refused.
    """
    path = Path(path)
    lines = [(n, line) for n, line in enumerate(_lines(_read_text(path)), start=1) if line]
    expected = ("'version: 1'", "'n_points: N'", "'{'")
    if len(lines) < 3:
        last = lines[-1][0] if lines else 1
        raise AnnotationError(f"{path}:{last}: file ends before {expected[len(lines)]}")
    (n1, version), (n2, count), (n3, brace) = lines[:3]
    if not _VERSION.fullmatch(version):
        raise AnnotationError(f"{path}:{n1}: expected 'version: 1', got {show(version)}")
    m = _N_POINTS.fullmatch(count)
    if not m:
        raise AnnotationError(f"{path}:{n2}: expected 'n_points: N', got {show(count)}")
    declared = int(m[1])
    if n_points is not None and declared != n_points:
        raise AnnotationError(f"{path}:{n2}: {declared} points, expected {n_points}")
    if brace != "{":
        raise AnnotationError(f"{path}:{n3}: expected '{{', got {show(brace)}")
    points: list[list[float]] = []
    closed = None
    for n, line in lines[3:]:
        if closed is not None:
            raise AnnotationError(f"{path}:{n}: text after the closing '}}' (line {closed}): {show(line)}")
        if line == "}":
            closed = n
            continue
        tokens = line.split()
        if len(tokens) != 2:
            raise AnnotationError(f"{path}:{n}: expected 2 numbers, got {show(line)}")
        points.append([_number(tokens[0], f"{path}:{n}", "x"), _number(tokens[1], f"{path}:{n}", "y")])
        if len(points) > declared:
            raise AnnotationError(f"{path}:{n}: more than the {declared} points the header declares")
    if closed is None:
        raise AnnotationError(f"{path}:{lines[-1][0]}: no closing '}}' (the file ends after {len(points)} points)")
    if len(points) != declared:
        raise AnnotationError(f"{path}:{closed}: {len(points)} points before '}}', the header declares {declared}")
    return np.asarray(points, dtype=np.float64).reshape(declared, 2) - origin


def _w300_group(pts: Path) -> tuple[str, str] | None:
    """``(split, subset)`` of a ``.pts`` file from its folders (the one closest to the file decides), or None."""
    parts = [p.lower() for p in pts.parent.parts]
    for i in range(len(parts) - 1, -1, -1):
        name = parts[i]
        below = parts[i + 1] if i + 1 < len(parts) else ""
        if name in ("lfpw", "helen"):
            if below == "trainset":
                return "train", name
            if below == "testset":
                return "common", name
            raise AnnotationError(f"{pts}: {name} files must lie in {name}/trainset/ or {name}/testset/")
        if name == "afw":
            return "train", "afw"
        if name == "ibug":
            return "challenging", "ibug"
        if name in ("01_indoor", "02_outdoor"):
            return "private", "300W-" + name[3:]
    return None


def read_300w(root: str | Path, splits: tuple[str, ...] | None = None, *,
              check_files: bool = True) -> list[FaceAnnotation]:
    """68-point faces of a 300-W folder (see the module docstring), in path order, optionally only ``splits``.

    Each image is the ``.pts`` file's namesake (``.jpg``, ``.png``, ...);
    with ``check_files`` it must exist.
    """
    root = Path(root)
    if splits is not None:
        unknown = [s for s in splits if s not in W300_SPLITS]
        if unknown:
            raise ValueError(f"unknown 300-W split(s) {unknown}; one of {', '.join(W300_SPLITS)}")
    if not root.is_dir():
        raise AnnotationError(f"no such folder: {root}")
    out: list[FaceAnnotation] = []
    for pts in sorted(root.absolute().rglob("*.pts")):
        group = _w300_group(pts)
        if group is None or (splits is not None and group[0] not in splits):
            continue
        split, subset = group
        image = next((c for c in (pts.with_suffix(s) for s in _IMAGE_SUFFIXES) if c.is_file()), None)
        if image is None:
            if check_files:
                raise AnnotationError(f"{pts}: no image beside it ({pts.stem}.jpg or .png)")
            image = pts.with_suffix(".png" if subset in ("lfpw", "300W-indoor", "300W-outdoor") else ".jpg")
        out.append(FaceAnnotation(image=image, points=_readonly(read_pts(pts)), split=split, subset=subset,
                                  source=str(pts)))
    if not out and splits is None:
        raise AnnotationError(f"{root}: no .pts files in 300-W's folders "
                              "(lfpw/ and helen/ trainset or testset, afw/, ibug/, 300W/01_Indoor, 300W/02_Outdoor)")
    return out


# ---------------------------------------------------------------- AFLW


def read_aflw_split(path: str | Path) -> list[str]:
    """The entries of a split file (a face id or an image name a line), blank lines skipped."""
    return [entry for _, entry in _split_entries(Path(path))]


def _split_entries(path: Path) -> list[tuple[int, str]]:
    entries: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(_lines(_read_text(path)), start=1):
        if not line:
            continue
        if len(line.split()) != 1 or _CONTROL.search(line):
            raise AnnotationError(f"{path}:{n}: expected one face id or image name, got {show(line, 60)}")
        if line in seen:
            raise AnnotationError(f"{path}:{n}: {show(line, 60)} listed twice (first on line {seen[line]})")
        seen[line] = n
        entries.append((n, line))
    if not entries:
        raise AnnotationError(f"{path}: no entries")
    return entries


def _connect(database: Path) -> sqlite3.Connection:
    """A read-only connection whose tables and columns are AFLW's, else an AnnotationError naming the file."""
    if not database.is_file():
        problem = "not a regular file" if database.exists() else "no such file"
        raise AnnotationError(f"{problem}: {database}")
    try:
        conn = sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AnnotationError(f"{database}: cannot open ({exc})") from None
    try:
        tables = {name.lower(): name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, columns in AFLW_TABLES.items():
            if table.lower() not in tables:
                raise AnnotationError(f"{database}: no table {table}; AFLW's database has "
                                      f"{', '.join(AFLW_TABLES)} (found {sorted(tables.values()) or 'none'})")
            quoted = tables[table.lower()].replace('"', '""')
            have = {row[1].lower() for row in conn.execute(f'PRAGMA table_info("{quoted}")')}
            missing = [c for c in columns if c not in have]
            if missing:
                raise AnnotationError(f"{database}: table {table} lacks the column(s) {missing}; "
                                      f"AFLW's has {', '.join(columns)}")
    except sqlite3.Error as exc:
        conn.close()
        raise AnnotationError(f"{database}: not an SQLite database ({exc})") from None
    except AnnotationError:
        conn.close()
        raise
    return conn


def _finite(value, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{where}: {what} {show(value)} is not a finite number")
    return float(value)


def read_aflw(database: str | Path, image_root: str | Path | None = None, *,
              split_file: str | Path | None = None, check_files: bool = True) -> list[FaceAnnotation]:
    """Every face of ``aflw.sqlite`` in ``face_id`` order: image, rect, and pose in degrees.

    ``image_root`` is the folder ``FaceImages.filepath`` is relative to
    (default: ``flickr/`` beside the database); with ``check_files`` every
    image must exist there.  With ``split_file`` the faces it lists (by id,
    or all faces of a listed image) are ``test`` and the rest ``train``;
    without one every face is ``all``.
    """
    database = Path(database)
    root = Path(image_root) if image_root is not None else database.parent / "flickr"
    if check_files and not root.is_dir():
        raise AnnotationError(f"{database}: no image folder {root}")
    conn = _connect(database)
    try:
        faces = conn.execute(
            "SELECT Faces.face_id, Faces.file_id, Faces.db_id, FaceImages.filepath FROM Faces "
            "LEFT JOIN FaceImages ON Faces.file_id = FaceImages.file_id AND Faces.db_id = FaceImages.db_id "
            "ORDER BY Faces.face_id").fetchall()
        poses: dict[object, tuple] = {}
        for row in conn.execute("SELECT face_id, roll, pitch, yaw FROM FacePose"):
            poses.setdefault(row[0], row[1:])
        rects: dict[object, tuple] = {}
        for row in conn.execute("SELECT face_id, x, y, w, h FROM FaceRect"):
            rects.setdefault(row[0], row[1:])
    except sqlite3.Error as exc:
        raise AnnotationError(f"{database}: cannot read AFLW's tables ({exc})") from None
    finally:
        conn.close()
    if not faces:
        raise AnnotationError(f"{database}: table Faces has no rows")

    base = root.absolute()
    out: list[FaceAnnotation] = []
    seen: set[int] = set()
    by_image: dict[str, list[int]] = {}
    for face_id, file_id, db_id, filepath in faces:
        if isinstance(face_id, bool) or not isinstance(face_id, int):
            raise AnnotationError(f"{database}: Faces row face_id {show(face_id)}: face_id is not an integer")
        where = f"{database}: Faces row face_id {face_id}"
        if face_id in seen:  # several FaceImages rows for one image: the first
            continue
        seen.add(face_id)
        if filepath is None:
            raise AnnotationError(f"{where}: no FaceImages row for file_id {show(file_id, 40)}")
        if not isinstance(filepath, str) or not filepath or _CONTROL.search(filepath) \
                or Path(filepath).is_absolute() or ".." in Path(filepath).parts:
            raise AnnotationError(f"{where}: filepath {show(filepath, 60)} is not a relative path inside {base}")
        image = base / filepath
        if check_files and not image.is_file():
            raise AnnotationError(f"{where}: image {show(filepath, 60)} does not exist in {base}")
        pose = None
        if face_id in poses:
            roll, pitch, yaw = (_finite(v, f"{database}: FacePose row face_id {face_id}", name)
                                for v, name in zip(poses[face_id], ("roll", "pitch", "yaw")))
            pose = HeadPose(math.degrees(roll), math.degrees(pitch), math.degrees(yaw))
        rect = None
        if face_id in rects:
            rect = tuple(_finite(v, f"{database}: FaceRect row face_id {face_id}", name)
                         for v, name in zip(rects[face_id], ("x", "y", "w", "h")))
        for key in {filepath} | ({file_id} if isinstance(file_id, str) else set()):
            by_image.setdefault(key, []).append(len(out))
        out.append(FaceAnnotation(image=image, points=_readonly(np.zeros((0, 2))), split="all",
                                  subset=str(db_id or ""), pose=pose, rect=rect, face_id=face_id,
                                  source=f"{database}: face_id {face_id}"))
    if split_file is not None:
        split_path = Path(split_file)
        by_id = {a.face_id: i for i, a in enumerate(out)}
        test: set[int] = set()
        for n, entry in _split_entries(split_path):
            if re.fullmatch(r"[0-9]{1,18}", entry) and int(entry) in by_id:
                test.add(by_id[int(entry)])
            elif entry in by_image:
                test.update(by_image[entry])
            else:
                raise AnnotationError(f"{split_path}:{n}: {show(entry, 60)} is neither a face_id nor an image "
                                      f"(file_id or filepath) of {database}")
        out = [replace(a, split="test" if i in test else "train") for i, a in enumerate(out)]
    return out


# ---------------------------------------------------------------- scoring


def _points(points, what: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(f"{what} must be (N, 2) or (B, N, 2) points, got shape {p.shape}")
    return p


def inter_ocular_distance(points) -> float | np.ndarray:
    """Eye-centre distance (points 0, 1) of 5-point faces, outer-eye-corner distance (36, 45) of 68-point ones.

    ``points`` is ``(N, 2)`` (a float comes back) or ``(..., N, 2)`` (an array).
    """
    p = _points(points, "points")
    n = p.shape[-2]
    if n == 5:
        a, b = EYE_CENTRES_5
    elif n == 68:
        a, b = EYE_CORNERS_68
    else:
        raise ValueError(f"no inter-ocular convention for {n} points (5: MAFL's eye centres, 68: 300-W's eye corners)")
    d = np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1)
    return float(d) if d.ndim == 0 else d


def landmark_error(pred, true) -> float | np.ndarray:
    """Mean point-to-point distance over ``true``'s inter-ocular distance, in %.

    One face ``(N, 2)`` gives a float, a batch ``(B, N, 2)`` one error per
    face (average them for the set's error).
    """
    pred, true = _points(pred, "pred"), _points(true, "true")
    if pred.shape != true.shape:
        raise ValueError(f"pred {pred.shape} and true {true.shape} differ in shape")
    if not (np.isfinite(pred).all() and np.isfinite(true).all()):
        raise ValueError("pred and true must be finite")
    iod = np.asarray(inter_ocular_distance(true))
    if (iod <= 0).any():
        raise ValueError("a true face has its two eye points in one place: inter-ocular distance 0")
    err = np.linalg.norm(pred - true, axis=-1).mean(axis=-1) / iod * 100.0
    return float(err) if err.ndim == 0 else err
