"""Five-frame windows of frame shards: PianoYT for the visual onset model (thesis ch. 6), VnYT for visual pitch (ch. 5);
source and target faces of VoxCeleb's face tracks for FAb-Net and X2Face (:class:`FacePairs`, last section).

What it yields
--------------
:class:`FrameWindows` is a ``torch.utils.data.IterableDataset`` over one
split of ``<shards>/split=<split>/part-*.parquet`` (PianoYT:
:mod:`tasks.datasets.pianoyt`, VnYT: :mod:`tasks.datasets.violinyt`).  Each
example is a dict::

    frames       float32 [5, H, W] in [0, 1]: the frames t-2 .. t+2 of one video, as channels
                 (``color="rgb"``: [5, 3, H, W]; ``frames=1``: the middle frame only, [1, ...];
                 ``images=False``: no frames, nothing decoded)
    video_id     str
    frame_index  int, t (the middle frame)

and the fields of its ``labels`` (:class:`WindowLabels`):

    OnsetLabels (PianoYT, the default)
        target   float32 [88]: 1 where a key has an onset at frame t-1, t or t+1
                 ("an onset within +-1 frame of the middle frame")
    PitchLabels (VnYT)
        time     float, the middle frame's time (s)
        midi     int, the middle frame's pitch label (0: unvoiced)
        target   int64 class ``midi - 55`` (-1 where unvoiced or out of range)
        audio    float32 [n], the audio centred on the middle frame's time (with ``audio_samples=n``)
    SyncLabels (PianoYT and its audio, for the sync network of ch. 7)
        time     float, the middle frame's time (s)
        audio    float32 [n], the build's audio (``audio/<video_id>.wav``) centred on that time

A window exists only where the five rows have consecutive ``frame_index``
values of one video: a gap (lost frames) breaks the windows across it, and a
video of fewer than five frames has none.  ``(H, W)`` is ``size``.

The rows of a video are taken in the order of its parts (``part-<video>-0000``,
``-0001``, ...) and of the row groups in each, so windows run across row-group
boundaries and across the parts of one video (the build writes a video's
frames in order, a new part every ``max_part_bytes``).  Only committed parts
are read (:func:`tasks.store.shards.complete_parts`: every part of a local
folder, the parts a completion marker lists on an object store, so a video
whose upload was cut short is not read).

How work is split
-----------------
The unit of work is one row group of one part file.  The units are listed in
a fixed order (parts sorted by video and part number, row groups in file
order), permuted by ``(seed, epoch)`` when ``shuffle`` is on, and unit ``i``
of that order goes to global worker ``i % (world_size * num_workers)``, where
the global worker id is ``rank * num_workers + worker id``.  ``rank`` and
``world_size`` come from the arguments or, when not given, from
``torch.distributed`` if it is initialised when the dataset is made (make the
dataset after ``init_process_group``); the worker id from
``torch.utils.data.get_worker_info()``.  A window belongs to the unit that
holds its middle frame, so each window is produced by exactly one worker.  The
frames a window needs from the neighbouring row groups (the last two rows of
the one before, the first two of the one after, walking further when a row
group has fewer than two rows) are read from them, and only those rows are
decoded.  (Parquet addresses rows by row group: the first rows of the next
group are streamed with ``iter_batches``, which reads only the first pages;
for the last rows of the previous group its column chunk is read and sliced,
but only two of its images are decoded.)  With ``shuffle=False`` the order is
the fixed one, so validation and test passes are deterministic and see every
window exactly once over all workers and ranks.  Ranks get whole row groups,
so their window counts differ a little: under DDP cap the steps per epoch
(e.g. ``count_windows(...) // (world_size * batch_size)``) or the ranks will
wait for each other at the end.

Decoding
--------
Each image is decoded once: the row group's images that are in at least one
window are decoded together (:func:`tasks.media.decode.decode_image`),
resized once (to ``resize`` with augmentation, else to ``size`` when they are
not that size already) and kept as uint8; each window is a stack of five of
them.  The edge rows decoded for a unit (its own first and last two rows and
the neighbours' rows it borrowed) are kept until the next unit, so a worker
that takes neighbouring units one after the other (``shuffle=False`` with one
worker, or :func:`video_windows`) decodes every frame exactly once; with
several workers the two edge rows on either side of a row-group boundary are
decoded by both owners (at most 4 extra decodes per boundary, about 12% more
with the builds' 32-frame row groups).

Memory bound
------------
With ``shuffle=True`` the windows pass through a buffer of ``buffer_size``
windows (seeded by ``(seed, epoch, global worker id)``): the buffer is filled,
then each new window replaces a random one that is yielded.  A worker holds at
most ``buffer_size`` windows (uint8, ``5 x resize`` pixels each: about 600 KB
at 150 x 805, so ~300 MB for the default 512) plus one row group's decoded
frames, whatever the size of the data set.  ``set_epoch`` changes both the
unit order and the buffer's draws; it reaches the DataLoader's workers when
they are started anew for each epoch (``persistent_workers=False``, the
default).  With ``shuffle=False`` windows are produced one at a time.

Augmentation (``augment=True``, train only)
-------------------------------------------
As the thesis: "we resize the crops to 150 x 805 and randomly crop 145 x 800
pixel regions.  In addition to spatial jitter, we jitter the brightness and
add Gaussian noise with a factor of 1% of the mean value of the image to 40%
of the training images."  With torchvision.transforms.v2's functional ops,
per window (the same draw for its five frames, so the motion between them is
kept): resize to ``resize`` (default ``size * (150/145, 805/800)``, rounded:
(150, 805) for (145, 800), (50, 266) for (48, 264)) and crop a random
``size`` region; multiply the brightness by a factor uniform in
``[1 - brightness, 1 + brightness]`` (``brightness=0.2``, torchvision's
ColorJitter convention; the thesis gives no value), clipped to [0, 1], on
every window; on a random ``noise_fraction`` (40%) of the windows add
Gaussian noise of standard deviation ``noise_factor`` (1%) times each frame's
mean, clipped to [0, 1].  The noise is drawn with ``torch.randn`` from the
worker's generator (v2's ``gaussian_noise`` takes no generator): every draw
comes from a ``torch.Generator`` seeded by ``(seed, epoch, global worker
id)``, so a run is reproducible for a given number of ranks and workers.

Face pairs (FAb-Net, X2Face)
----------------------------
:class:`FacePairs` reads the face shards of :mod:`tasks.datasets.voxceleb`
(``<data_root>/voxceleb/shards/split=<split>/part-<identity>-<video>-<utterance>-0000.parquet``:
one utterance, a face track of 256 x 256 RGB JPEG crops at 1 frame per second,
per part file) with the same machinery.  Each example is a dict::

    sources         float32 [k, 3, S, S] in [0, 1]: k (``sources=``, 1 or 3 in the papers) other frames of the track
    target          float32 [3, S, S] in [0, 1]
    identity, video_id, utterance   str: the track
    target_index    int, the target's frame_index
    source_indices  int64 [k], the sources' frame_index values, in the order of ``sources``
    landmarks       float32 [68, 2] (with ``landmarks=True``, for the probes): the target's dlib points
                    (x, y) in pixels of the S x S image: ``(p + 0.5) * S / 256 - 0.5`` (pixel centres, as
                    torchvision's resize maps them; NaN for a row stored without points)

``S`` is ``size`` (256, the crops' own; 64 for the small models).  The unit of
work is a whole utterance, all the row groups of its parts, so a target and
its sources always come from one track (rows are also grouped by
``(identity, video_id, utterance)``, so a part holding several tracks would
still never mix them); the units are permuted by ``(seed, epoch)`` and dealt
to the global workers exactly as FrameWindows deals its row groups.  Within a
track of ``n`` frames (in frame_index order) every frame is the target of
exactly one example per pass, and its ``k`` sources are drawn uniformly,
without replacement, from the track's other ``n - 1`` frames (numpy's
``Generator.choice(n - 1, k, replace=False)``, positions at or after the
target's moved up by one).  A track of ``k`` frames or fewer gives no
examples (:func:`count_examples` counts the rest: steps per epoch).

* ``shuffle=True`` (training): the draws come from the worker's
  ``numpy.random.Generator`` seeded by ``(seed, epoch, global worker id)``;
  per track, the targets' order is its ``permutation(n)``, then each target's
  sources are drawn, and the examples pass through the shuffle buffer of
  ``buffer_size`` examples (default 256) as the windows do.  A new epoch
  (``set_epoch``) gives a new unit order, new sources and a new order.
* ``shuffle=False`` (val/test): the fixed unit order, and per track a
  generator seeded by ``[seed, the first 8 bytes (little-endian) of the
  SHA-256 of "identity/video_id/utterance"]``; the targets run in frame order
  and each target's sources are drawn from it in turn.  The examples do not
  depend on the epoch, on the ranks or on the workers (only their
  interleaving does), so every pass is identical.

Each image of a track is decoded once per pass: its part's images are decoded
together, resized to ``S x S`` (torchvision v2 ``resize``, antialiased; not
when already that size) and kept as uint8 while the track's examples are made;
an example holds a copy of its ``1 + k`` images, so a worker holds at most
``buffer_size`` examples (``(1 + k) x 3 x S x S`` bytes each: ~200 MB for 256
at k = 3, ~13 MB at 64) plus one track's frames.  There is no augmentation:
FAb-Net and X2Face train on the crops as they are.  A split without parts is
refused with :func:`split_parts`' one-line ``ValueError`` (``no shards for
split 'train' under <root>/voxceleb/shards``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils import data as tud
from torchvision.transforms.v2 import functional as TF

from tasks.labels.align import N_KEYS
from tasks.media import decode as media
from tasks.store import shards, storage

WINDOW = 5  # frames per example (thesis ch. 6)
HALF = WINDOW // 2  # frames either side of the middle one
ONSET_TOLERANCE = 1  # a target key is on when an onset is within +-1 frame of the middle
THESIS_SIZE = (145, 800)  # (h, w) model input
THESIS_RESIZE = (150, 805)  # (h, w) before the random crop

_PART = re.compile(r"^part-(?P<video>.+)-(?P<index>\d{4})\.parquet$")


def pre_crop_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size to resize to before the random ``size`` crop: the thesis' 150 x 805 for 145 x 800, in proportion."""
    h, w = size
    return (int(round(h * THESIS_RESIZE[0] / THESIS_SIZE[0])), int(round(w * THESIS_RESIZE[1] / THESIS_SIZE[1])))


# ----------------------------------------------------------------------------- shard listing


@dataclass(frozen=True)
class _Unit:
    path: str  # part location (path or URL)
    row_group: int
    rows: int
    chain: str  # the video the part's name gives (else the part's location): rows run on across its parts


def split_parts(shards_dir: str, split: str) -> list[str]:
    """The committed part files of ``split``, sorted by video and part number; ValueError when there are none."""
    shards_dir = str(shards_dir)
    folder = f"split={split}"
    parts = [p for p in shards.complete_parts(shards_dir) if PurePosixPath(str(p)).parent.name == folder]
    if not parts:
        raise ValueError(f"no shards for split {split!r} under {shards_dir}")
    return sorted(parts, key=_part_key)


def _part_key(location: str) -> tuple[str, int, str]:
    name = PurePosixPath(str(location)).name
    m = _PART.match(name)
    return (m["video"], int(m["index"]), str(location)) if m else (name, 0, str(location))


def chain_of(location: str) -> str:
    """The video a part file belongs to (``part-<video>-<n>.parquet``), else the location itself."""
    m = _PART.match(PurePosixPath(str(location)).name)
    return m["video"] if m else str(location)


def _open(location: str) -> pq.ParquetFile:
    fs, path = storage.fs_of(location)
    if storage.is_local(location):
        return pq.ParquetFile(path)
    return pq.ParquetFile(fs.open(path, "rb"))


def _list_units(parts: list[str]) -> list[_Unit]:
    units = []
    for part in parts:
        md = _open(part).metadata
        for rg in range(md.num_row_groups):
            rows = md.row_group(rg).num_rows
            if rows:
                units.append(_Unit(str(part), rg, rows, chain_of(part)))
    return units


# ----------------------------------------------------------------------------- window arithmetic


def valid_centres(frame_index: np.ndarray, video_id: np.ndarray) -> np.ndarray:
    """Boolean mask over rows: True where rows i-2 .. i+2 are consecutive frames of one video."""
    n = len(frame_index)
    out = np.zeros(n, dtype=bool)
    if n < WINDOW:
        return out
    fi = np.asarray(frame_index, dtype=np.int64)
    vid = np.asarray(video_id)
    step = (np.diff(fi) == 1) & (vid[1:] == vid[:-1])  # step[i]: rows i, i+1 consecutive
    run = np.convolve(step.astype(np.int32), np.ones(WINDOW - 1, dtype=np.int32), mode="valid")
    out[HALF: n - HALF] = run == WINDOW - 1
    return out


def window_targets(onset: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The [len(centres), 88] OR of ``onset`` rows c-1 .. c+1 for each centre row c."""
    onset = np.asarray(onset, dtype=np.uint8)
    out = np.zeros((len(centres), onset.shape[1]), dtype=np.uint8)
    for d in range(-ONSET_TOLERANCE, ONSET_TOLERANCE + 1):
        out |= onset[np.asarray(centres) + d]
    return out


def _onset_matrix(column) -> np.ndarray:
    flat = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    values = flat.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.uint8).reshape(len(flat), -1) if len(flat) else np.zeros((0, N_KEYS), np.uint8)


def _chains(shards_dir: str, split: str, columns: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """Each video's (chain's) rows of ``columns``, all its parts in order, one chain at a time."""
    parts = split_parts(shards_dir, split)
    i = 0
    while i < len(parts):
        chain = chain_of(parts[i])
        tables = []
        while i < len(parts) and chain_of(parts[i]) == chain:
            tables.append(_open(parts[i]).read(columns=columns))
            i += 1
        out = {}
        for c in columns:
            if c == "onset":
                mats = [_onset_matrix(t.column(c)) for t in tables]
                out[c] = np.concatenate(mats) if mats else np.zeros((0, N_KEYS), np.uint8)
            elif c == "video_id":
                out[c] = np.asarray([v for t in tables for v in t.column(c).to_pylist()], dtype=object)
            else:
                out[c] = np.concatenate([t.column(c).to_numpy() for t in tables])
        yield out


def count_windows(shards_dir: str, split: str) -> int:
    """How many windows :class:`FrameWindows` yields for ``split`` (reads only video_id and frame_index)."""
    return sum(int(valid_centres(c["frame_index"], c["video_id"]).sum())
               for c in _chains(str(shards_dir), split, ["video_id", "frame_index"]))


def onset_rate(shards_dir: str, split: str) -> np.ndarray:
    """Per key, the fraction of ``split``'s windows whose target is 1 (float64 [88]; for a loss' pos_weight).

    Reads video_id, frame_index and onset, no images.
    """
    positives = np.zeros(N_KEYS, dtype=np.int64)
    windows = 0
    for c in _chains(str(shards_dir), split, ["video_id", "frame_index", "onset"]):
        centres = np.flatnonzero(valid_centres(c["frame_index"], c["video_id"]))
        if len(centres):
            positives += window_targets(c["onset"], centres).sum(axis=0, dtype=np.int64)
            windows += len(centres)
    return positives / max(windows, 1)



# ----------------------------------------------------------------------------- what a window is labelled with


class WindowLabels:
    """What a data set's windows carry besides their frames: its label columns and each window's fields.

    ``columns`` are read with ``video_id``, ``frame_index`` (and ``image``
    when frames are wanted); :meth:`rows` turns a table of them into one
    array with a row per shard row (any dtype); :meth:`windows` gives the
    fields of the windows centred on rows ``centres`` of such an array, a
    dict of per-window sequences (``torch`` default-collates them).
    """

    columns: tuple[str, ...] = ()

    def rows(self, table) -> np.ndarray:
        raise NotImplementedError

    def windows(self, label: np.ndarray, centres: np.ndarray) -> dict[str, list]:
        raise NotImplementedError


class OnsetLabels(WindowLabels):
    """PianoYT: ``target`` float32 [88], 1 where a key has an onset within +-1 frame of the middle frame."""

    columns = ("onset",)

    def rows(self, table) -> np.ndarray:
        return _onset_matrix(table.column("onset"))

    def windows(self, label: np.ndarray, centres: np.ndarray) -> dict[str, list]:
        targets = window_targets(label, centres).astype(np.float32)
        return {"target": [torch.from_numpy(t) for t in targets]}


_PITCH_ROW = np.dtype([("time", np.float64), ("midi", np.int16), ("voiced", np.bool_), ("audio_sample", np.int64),
                       ("audio_path", object)])


class PitchLabels(WindowLabels):
    """VnYT (:mod:`tasks.datasets.violinyt`): the middle frame's pitch class and, with ``audio_samples``, its audio.

    Each window gets ``time`` (s), ``midi`` (int, 0 where unvoiced), ``target`` (int64:
    the class ``midi - min_midi`` in ``0 .. max_midi - min_midi``, or -1
    for an unvoiced or out-of-range frame: cross-entropy's ``ignore_index``)
    and, when ``audio_samples`` is set, ``audio``: float32 [audio_samples],
    the mono audio centred on the frame's time (the row's ``audio_sample``
    in the file ``audio_path`` names, relative to ``dataset_dir``), zero
    beyond the file's ends.  The teacher's spectrogram and the students'
    distillation target are computed from it.  A worker keeps the last
    ``audio_cache`` audio files it read in memory (a file is one video's
    whole track: 44.1 kHz float32, ~10 MB per minute).
    """

    columns = ("time", "midi", "voiced", "audio_sample", "audio_path")

    def __init__(self, dataset_dir: str | None = None, min_midi: int = 55, max_midi: int = 88,
                 audio_samples: int | None = None, audio_cache: int = 4):
        if audio_samples is not None and dataset_dir is None:
            raise ValueError("audio windows need the data set's folder (dataset_dir)")
        self.dataset_dir, self.min_midi, self.max_midi = dataset_dir, int(min_midi), int(max_midi)
        self.audio_samples = None if audio_samples is None else int(audio_samples)
        self.tracks = AudioTracks(dataset_dir, audio_cache) if dataset_dir is not None else None

    def rows(self, table) -> np.ndarray:
        out = np.empty(table.num_rows, _PITCH_ROW)
        for name in ("time", "midi", "voiced", "audio_sample"):
            out[name] = table.column(name).to_numpy(zero_copy_only=False)
        out["audio_path"] = table.column("audio_path").to_pylist()
        return out

    def classes(self, midi: np.ndarray, voiced: np.ndarray) -> np.ndarray:
        """The class index of each MIDI number, -1 where unvoiced or outside ``min_midi .. max_midi``."""
        midi = np.asarray(midi, np.int64)
        ok = np.asarray(voiced, bool) & (midi >= self.min_midi) & (midi <= self.max_midi)
        return np.where(ok, midi - self.min_midi, -1)

    def windows(self, label: np.ndarray, centres: np.ndarray) -> dict[str, list]:
        mid = label[np.asarray(centres, np.int64)]
        out = {"time": [float(t) for t in mid["time"]],
               "midi": [int(m) if v else 0 for m, v in zip(mid["midi"], mid["voiced"])],
               "target": [int(c) for c in self.classes(mid["midi"], mid["voiced"])]}
        if self.audio_samples is not None:
            out["audio"] = [torch.from_numpy(self.tracks.segment(str(p), int(a), self.audio_samples)) for p, a in
                            zip(mid["audio_path"], mid["audio_sample"])]
        return out


class AudioTracks:
    """Whole audio tracks of a data set's folder, read on demand (the last ``cache`` kept), cut into segments.

    A track is a WAV under ``dataset_dir`` (a path relative to it), mono
    float32; with ``sample_rate`` it is resampled to that rate (soxr, HQ)
    when read.  Pickled without its tracks: each loader worker reads its own.
    """

    def __init__(self, dataset_dir: str, cache: int = 4, sample_rate: int | None = None):
        self.dataset_dir, self.cache = str(dataset_dir), int(cache)
        self.sample_rate = None if sample_rate is None else int(sample_rate)
        self._audio: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_audio": {}}

    def track(self, audio_path: str) -> np.ndarray:
        if audio_path not in self._audio:
            if len(self._audio) >= self.cache:
                self._audio.pop(next(iter(self._audio)))
            location = storage.join(self.dataset_dir, *PurePosixPath(audio_path).parts)
            audio, sr = media.read_wav(storage.local_path(location))
            if self.sample_rate is not None and sr != self.sample_rate:
                import soxr

                audio = soxr.resample(audio, sr, self.sample_rate, quality="HQ")
            self._audio[audio_path] = np.ascontiguousarray(audio, dtype=np.float32)
        return self._audio[audio_path]

    def segment(self, audio_path: str, centre: int, n: int) -> np.ndarray:
        """``n`` samples of the track centred on sample ``centre``: :func:`cut_segment`."""
        return cut_segment(self.track(audio_path), centre, n)


def cut_segment(audio: np.ndarray, centre: int, n: int) -> np.ndarray:
    """``n`` samples of ``audio`` centred on sample ``centre`` (starting at ``centre - n // 2``), zero beyond its ends."""
    start = centre - n // 2
    out = np.zeros(n, np.float32)
    lo, hi = max(start, 0), min(start + n, len(audio))
    if hi > lo:
        out[lo - start: hi - start] = audio[lo:hi]
    return out


_SYNC_ROW = np.dtype([("time", np.float64), ("video_id", object)])


class SyncLabels(WindowLabels):
    """PianoYT for the sync network (thesis ch. 7): each window's ``time`` and the audio around it.

    ``audio``: float32 [``context_samples``] at ``sample_rate``, centred on the
    middle frame's time, from the build's ``audio/<video_id>.wav`` (under
    ``dataset_dir``, the build's ``pianoyt`` folder), zero beyond the track's
    ends.  Its centre ``audio_samples`` are the matching segment; the
    training module cuts its non-matching segments from the rest (at least
    ``audio_samples`` away, so the two do not overlap).  ``offset`` (s) is
    added to every frame time first: the audio of frame time ``t`` is taken
    at ``t + offset`` (a known delay of the sound, for tests and evaluation).
    ``context_samples=0``: ``time`` only, no audio read.
    """

    columns = ("time",)

    def __init__(self, dataset_dir: str, sample_rate: int = 16000, context_samples: int = 16000,
                 offset: float = 0.0, audio_cache: int = 4):
        self.sample_rate, self.context_samples = int(sample_rate), int(context_samples)
        self.offset = float(offset)
        self.tracks = AudioTracks(dataset_dir, audio_cache, self.sample_rate)

    def rows(self, table) -> np.ndarray:
        out = np.empty(table.num_rows, _SYNC_ROW)
        out["time"] = table.column("time").to_numpy(zero_copy_only=False)
        out["video_id"] = table.column("video_id").to_pylist()
        return out

    def windows(self, label: np.ndarray, centres: np.ndarray) -> dict[str, list]:
        mid = label[np.asarray(centres, np.int64)]
        if not self.context_samples:  # times only (the evaluation reads each video's track whole)
            return {"time": [float(t) for t in mid["time"]]}
        audio = [self.tracks.segment(f"audio/{v}.wav", int(round((t + self.offset) * self.sample_rate)),
                                     self.context_samples) for t, v in zip(mid["time"], mid["video_id"])]
        return {"time": [float(t) for t in mid["time"]], "audio": [torch.from_numpy(a) for a in audio]}

# ----------------------------------------------------------------------------- rows of one unit


@dataclass
class _Rows:
    keys: list[tuple[int, int]]  # (unit number, row in its row group)
    video_id: list[str]
    frame_index: np.ndarray
    label: np.ndarray  # the labels' per-row array (piano: uint8 [n, 88] onsets), first axis rows
    image: list[bytes]


@dataclass
class _Edge:
    """One edge row of a unit, kept for the next unit: its fields and its decoded frame (if it was decoded)."""

    video_id: str
    frame_index: int
    label: np.ndarray
    image: bytes
    frame: torch.Tensor | None


def _rows_of(table, unit: int, first_row: int, labels: "WindowLabels") -> _Rows:
    return _Rows(
        keys=[(unit, first_row + i) for i in range(table.num_rows)],
        video_id=table.column("video_id").to_pylist(),
        frame_index=table.column("frame_index").to_numpy().astype(np.int64),
        label=labels.rows(table),
        image=table.column("image").to_pylist() if "image" in table.column_names else [b""] * table.num_rows,
    )


def _concat(rows: list[_Rows]) -> _Rows:
    return _Rows(
        keys=sum((r.keys for r in rows), []),
        video_id=sum((r.video_id for r in rows), []),
        frame_index=np.concatenate([r.frame_index for r in rows]),
        label=np.concatenate([r.label for r in rows]),
        image=sum((r.image for r in rows), []),
    )


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[-1] == 1:
        return img[..., 0]
    rgb = img[..., :3].astype(np.float32)
    return np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5, 0, 255).astype(np.uint8)


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3] if img.shape[-1] >= 3 else np.repeat(img[..., :1], 3, axis=-1)


def _offsets(count: int) -> range:
    """The frames a window of ``count`` frames takes around its centre: -2 .. +2, or the centre only."""
    return range(-HALF, HALF + 1) if count == WINDOW else range(0, 1)


def _cut_window(frames: dict[int, torch.Tensor], centre: int, count: int = WINDOW) -> torch.Tensor:
    """The uint8 stack of the decoded frames centre-2 .. centre+2 (``count`` 1: the centre only); a copy."""
    return torch.stack([frames[centre + d] for d in _offsets(count)])


# ----------------------------------------------------------------------------- dealing units to workers


class _Dealt(tud.IterableDataset):
    """What :class:`FrameWindows` and :class:`FacePairs` share: units dealt to global workers by ``(seed, epoch)``.

    A subclass sets ``seed``, ``epoch``, ``shuffle``, ``_rank_arg`` (the
    ``(rank, world_size)`` arguments) and ``rank, world_size =
    _resolve_rank(*_rank_arg)`` in its ``__init__``.
    """

    def set_epoch(self, epoch: int) -> None:
        """Use the unit order and the shuffle/augmentation draws of ``epoch`` (call before each epoch's iter)."""
        self.epoch = int(epoch)

    def _place(self) -> None:
        """Take rank and world size from torch.distributed when it is up here and they were not given.

        Lightning's ``ddp_spawn`` makes the loaders in the parent process and
        initialises the process group in each rank afterwards, so the rank is
        read again where the pass runs (a forked loader worker inherits the
        group; a spawned one gets the values resolved when it is pickled).
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = _resolve_rank(*self._rank_arg)

    def __getstate__(self) -> dict:
        self._place()
        return dict(self.__dict__)

    def _deal(self, units: int) -> tuple[list[int], int]:
        """This worker's share of ``units`` units, in the order it takes them, and its global worker id.

        The units ``0 .. units-1`` (permuted by ``(seed, epoch)`` when
        shuffling); unit ``i`` of that order goes to global worker
        ``i % (world_size * num_workers)``.
        """
        self._place()
        info = tud.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        total = self.world_size * workers
        gid = self.rank * workers + worker
        order = np.arange(units)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(units)
        return order[gid::total].tolist(), gid

    def _generators(self, gid: int) -> tuple[np.random.Generator, torch.Generator]:
        state = np.random.SeedSequence([self.seed, self.epoch, gid]).generate_state(2, dtype=np.uint64)
        return np.random.default_rng(int(state[0])), torch.Generator().manual_seed(int(state[1]) & (2 ** 63 - 1))


# ----------------------------------------------------------------------------- the dataset


class FrameWindows(_Dealt):
    """Windows of 5 consecutive frames and their labels (by default PianoYT's +-1-frame onset targets).

    Every model sees the same windows: a 1-frame network (``frames=1``) or the
    audio teacher (``images=False``) gets the middle frames of the same
    5-frame windows, so all are trained and scored on the same frames.  See
    the module docstring for what is yielded, how work is split between
    ranks and workers, the memory bound and the augmentation.
    """

    def __init__(
        self,
        shards_dir: str,
        split: str,
        *,
        shuffle: bool = False,
        augment: bool = False,
        buffer_size: int = 512,
        seed: int = 0,
        epoch: int = 0,
        size: tuple[int, int] = THESIS_SIZE,
        resize: tuple[int, int] | None = None,
        brightness: float = 0.2,
        noise_fraction: float = 0.4,
        noise_factor: float = 0.01,
        rank: int | None = None,
        world_size: int | None = None,
        videos: Iterable[str] | None = None,
        labels: WindowLabels | None = None,
        color: str = "gray",
        frames: int = WINDOW,
        images: bool = True,
    ):
        super().__init__()
        self.labels = labels if labels is not None else OnsetLabels()
        if color not in ("gray", "rgb"):
            raise ValueError(f"color must be 'gray' or 'rgb', not {color!r}")
        if frames not in (1, WINDOW):
            raise ValueError(f"frames must be 1 (the middle frame) or {WINDOW}, not {frames!r}")
        self.color, self.frames, self.images = color, int(frames), bool(images)
        self._columns = ["video_id", "frame_index", *self.labels.columns] + (["image"] if self.images else [])
        self.shards_dir = str(shards_dir)
        self.split = split
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, not {buffer_size}")
        self.buffer_size = int(buffer_size)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.size = (int(size[0]), int(size[1]))
        self.resize = tuple(int(v) for v in resize) if resize is not None else pre_crop_size(self.size)
        if self.augment and (self.resize[0] < self.size[0] or self.resize[1] < self.size[1]):
            raise ValueError(f"resize {self.resize} is smaller than the crop size {self.size}")
        if not 0 <= brightness < 1:
            raise ValueError(f"brightness must be in [0, 1), not {brightness}")
        self.brightness = float(brightness)
        self.noise_fraction = float(noise_fraction)
        self.noise_factor = float(noise_factor)
        self._rank_arg = (rank, world_size)  # None: from torch.distributed where the pass runs (see _place)
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.videos = None if videos is None else frozenset(videos)

        parts = split_parts(self.shards_dir, split)
        if self.videos is not None:
            parts = [p for p in parts if not _PART.match(PurePosixPath(p).name) or chain_of(p) in self.videos]
        self._units = _list_units(parts)
        self._prev = [-1] * len(self._units)
        self._next = [-1] * len(self._units)
        for i in range(1, len(self._units)):
            if self._units[i].chain == self._units[i - 1].chain:
                self._prev[i], self._next[i - 1] = i - 1, i

    # -- public

    @classmethod
    def from_root(cls, data_root: str, split: str, **kwargs) -> "FrameWindows":
        """The dataset over ``<data_root>/pianoyt/shards``."""
        from tasks.datasets.pianoyt import layout

        return cls(layout(data_root).shards, split, **kwargs)

    @property
    def units(self) -> int:
        """How many (part, row group) units the split has."""
        return len(self._units)

    def __iter__(self) -> Iterator[dict]:
        yield from self._stream(*self._deal(len(self._units)))

    # -- internals

    def _stream(self, units: list[int], gid: int) -> Iterator[dict]:
        rng, gen = self._generators(gid)
        raw = self._raw_windows(units)
        if self.shuffle:
            raw = _shuffle_buffer(raw, self.buffer_size, rng)
        for window, fields, vid, t in raw:
            item = {"frames": self._finish(window, gen)} if self.images else {}
            yield {**item, **fields, "video_id": vid, "frame_index": t}

    def _raw_windows(self, units: list[int]) -> Iterator[tuple[torch.Tensor | None, dict, str, int]]:
        files: dict[str, pq.ParquetFile] = {}
        cache: dict[tuple[int, int], _Edge] = {}
        for u in units:
            cache = yield from self._unit_windows(u, files, cache)  # (only the last unit's edges: <= 8 rows)
            if len(files) > 4:
                files.pop(next(iter(files)))

    def _file(self, files: dict, path: str) -> pq.ParquetFile:
        if path not in files:
            files[path] = _open(path)
        return files[path]

    def _read(self, u: int, files: dict, cache: dict, where: str = "all", count: int = 0) -> _Rows:
        """Unit ``u``'s rows: all of them, its first ``count`` (``where='head'``) or its last ``count`` ('tail').

        Edge rows that the previous unit already read come from ``cache``.
        """
        unit = self._units[u]
        count = min(count, unit.rows)
        if where != "all":
            first = 0 if where == "head" else unit.rows - count
            keys = [(u, r) for r in range(first, first + count)]
            if all(k in cache for k in keys):
                edges = [cache[k] for k in keys]
                return _Rows(keys, [e.video_id for e in edges], np.array([e.frame_index for e in edges], np.int64),
                             np.stack([e.label for e in edges]), [e.image for e in edges])
        pf = self._file(files, unit.path)
        if where == "head":
            batch = next(pf.iter_batches(batch_size=count, row_groups=[unit.row_group], columns=self._columns))
            return _rows_of(batch, u, 0, self.labels)
        table = pf.read_row_group(unit.row_group, columns=self._columns)
        if where == "tail":
            start = table.num_rows - count
            return _rows_of(table.slice(start), u, start, self.labels)
        return _rows_of(table, u, 0, self.labels)

    def _neighbours(self, u: int, files: dict, cache: dict, backward: bool) -> list[_Rows]:
        """Up to ``HALF`` rows next to unit ``u`` in its video, nearest last (backward) or first (forward)."""
        out, want, v = [], HALF, u
        links = self._prev if backward else self._next
        while want > 0 and links[v] >= 0:
            v = links[v]
            rows = self._read(v, files, cache, "tail" if backward else "head", want)
            out.append(rows)
            want -= len(rows.keys)
        return out[::-1] if backward else out

    def _unit_windows(self, u: int, files: dict, cache: dict):
        """Yield unit ``u``'s raw windows; return its edge rows (and their decoded frames) for the next unit."""
        own = self._read(u, files, cache)
        before = self._neighbours(u, files, cache, backward=True)
        after = self._neighbours(u, files, cache, backward=False)
        seg = _concat(before + [own] + after)
        p, n = sum(len(r.keys) for r in before), len(own.keys)
        vids = np.asarray(seg.video_id, dtype=object)
        valid = valid_centres(seg.frame_index, vids)
        valid[:p] = False
        valid[p + n:] = False
        if self.videos is not None:
            valid &= np.isin(vids, list(self.videos))
        centres = np.flatnonzero(valid)
        needed = sorted({int(c) + d for c in centres for d in _offsets(self.frames)}) if self.images else []
        frames = {}
        for i in needed:
            hit = cache.get(seg.keys[i])
            if hit is not None and hit.frame is not None:
                frames[i] = hit.frame
        todo = [i for i in needed if i not in frames]
        frames.update(zip(todo, self._decode([seg.image[i] for i in todo])))
        fields = self.labels.windows(seg.label, centres) if len(centres) else {}
        for j, c in enumerate(centres):
            c = int(c)
            window = _cut_window(frames, c, self.frames) if self.images else None
            yield window, {k: v[j] for k, v in fields.items()}, seg.video_id[c], int(seg.frame_index[c])
        edges = sorted(set(range(min(p + HALF, p + n))) | set(range(max(p, p + n - HALF), p + n))
                       | set(range(p)) | set(range(p + n, len(seg.keys))))
        return {seg.keys[i]: _Edge(seg.video_id[i], int(seg.frame_index[i]), seg.label[i], seg.image[i],
                                   frames[i].clone() if i in frames else None) for i in edges}

    def _decode(self, images: list[bytes]) -> list[torch.Tensor]:
        """Decode (once each) and resize to the pre-crop size; uint8 [H', W'] tensors."""
        if not images:
            return []
        return _resized(_decoded(images, self.color), self.resize if self.augment else self.size, self.color)

    def _finish(self, window: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 [T, H', W'] (rgb: [T, 3, H', W']) -> float32 [T, H, W] ([T, 3, H, W]) in [0, 1], augmented."""
        h, w = self.size
        if self.augment:
            top = int(torch.randint(0, window.shape[-2] - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, window.shape[-1] - w + 1, (1,), generator=gen))
            window = TF.crop(window, top, left, h, w)
        x = TF.to_dtype(window, torch.float32, scale=True)
        if self.augment:
            factor = 1.0 + self.brightness * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
            if self.color == "gray":
                x = TF.adjust_brightness(x.unsqueeze(-3), factor).squeeze(-3)  # (as 5 one-channel images)
            else:
                x = TF.adjust_brightness(x, factor)
            if float(torch.rand((), generator=gen)) < self.noise_fraction:
                image_dims = (-2, -1) if self.color == "gray" else (-3, -2, -1)
                sigma = self.noise_factor * x.mean(dim=image_dims, keepdim=True)
                x = (x + torch.randn(x.shape, generator=gen) * sigma).clamp_(0.0, 1.0)
        return x.contiguous()


def _decoded(images: list[bytes], color: str) -> list[np.ndarray]:
    """Each image decoded (once: :func:`tasks.media.decode.decode_image`): uint8 [H, W] (gray) or [H, W, 3] (rgb)."""
    to_array = _to_gray if color == "gray" else _to_rgb
    return [to_array(np.asarray(media.decode_image(b))) for b in images]


def _resized(arrays: list[np.ndarray], size: tuple[int, int], color: str) -> list[torch.Tensor]:
    """uint8 [h, w] ([3, h, w] for rgb) tensors of ``size`` (torchvision v2 resize, antialiased, where needed)."""
    target = list(size)
    shapes = {a.shape for a in arrays}
    groups = [np.stack(arrays)] if len(shapes) == 1 else [a[None] for a in arrays]
    out = []
    for g in groups:
        t = torch.from_numpy(np.ascontiguousarray(g))
        if color == "rgb":
            t = t.permute(0, 3, 1, 2)  # [n, H, W, 3] -> [n, 3, H, W]
        if list(t.shape[-2:]) != target:
            t = TF.resize(t, target, antialias=True)
        out.extend(t.unbind(0))
    return out


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        import torch.distributed as dist

        live = dist.is_available() and dist.is_initialized()
        rank = rank if rank is not None else (dist.get_rank() if live else 0)
        world_size = world_size if world_size is not None else (dist.get_world_size() if live else 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return int(rank), int(world_size)


def _shuffle_buffer(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """Items in a random order, never holding more than ``size`` of them."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(size))
        out, buf[j] = buf[j], item
        del item
        yield out
        del out
    rng.shuffle(buf)
    while buf:
        yield buf.pop()


def video_windows(shards_dir: str, split: str, video_id: str, *, size: tuple[int, int] = THESIS_SIZE,
                  **kwargs) -> Iterator[dict]:
    """Every window of one video, in frame order, unaugmented (whole-video inference); each frame decoded once.

    ``kwargs`` go to :class:`FrameWindows` (``labels``, ``color``, ``frames``, ``images``).
    """
    ds = FrameWindows(shards_dir, split, size=size, rank=0, world_size=1, videos=[video_id], **kwargs)
    if not ds.units:
        raise ValueError(f"no shards for video {video_id!r} in split {split!r} under {shards_dir}")
    yield from ds._stream(list(range(ds.units)), 0)


# ----------------------------------------------------------------------------- face pairs (FAb-Net, X2Face)

FACE_SIZE = 256  # the face shards' crops (tasks.labels.faces.CROP)
N_FACE_POINTS = 68  # dlib's landmarks (tasks.labels.faces.N_LANDMARKS)
_TRACK_KEY = ("identity", "video_id", "utterance")


@dataclass(frozen=True)
class _Track:
    """A unit of :class:`FacePairs`: every row group of the parts of one utterance."""

    parts: tuple[str, ...]  # part locations, in part order
    rows: int
    chain: str  # the utterance key the parts' names give (else the part's location)


def _list_tracks(parts: list[str]) -> list[_Track]:
    """One unit per utterance (chain of parts), from :func:`_list_units`' row groups; parts without rows are left out."""
    tracks: list[_Track] = []
    for unit in _list_units(parts):
        if tracks and tracks[-1].chain == unit.chain:
            last = tracks[-1]
            paths = last.parts if last.parts[-1] == unit.path else last.parts + (unit.path,)
            tracks[-1] = _Track(paths, last.rows + unit.rows, last.chain)
        else:
            tracks.append(_Track((unit.path,), unit.rows, unit.chain))
    return tracks


def _face_tracks(table) -> list[tuple[tuple[str, str, str], np.ndarray]]:
    """The face tracks in ``table``: ``((identity, video_id, utterance), rows)``, rows in frame order.

    A part file holds one utterance, so this is normally the whole table; the
    rows are grouped by their ``(identity, video_id, utterance)`` all the same,
    so no pair ever mixes two tracks.  Tracks come in order of first row.
    """
    keys = list(zip(*(table.column(c).to_pylist() for c in _TRACK_KEY)))
    frame_index = (table.column("frame_index").to_numpy().astype(np.int64) if "frame_index" in table.column_names
                   else np.arange(len(keys)))
    groups: dict[tuple[str, str, str], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out = []
    for key, rows in groups.items():
        rows = np.asarray(rows, np.int64)
        out.append((key, rows[np.argsort(frame_index[rows], kind="stable")]))
    return out


def _track_rng(seed: int, key: tuple[str, str, str]) -> np.random.Generator:
    """The generator of one track's fixed (``shuffle=False``) sources: seeded by ``seed`` and the track's key."""
    digest = hashlib.sha256("/".join(key).encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def _other_frames(rng: np.random.Generator, n: int, target: int, k: int) -> np.ndarray:
    """``k`` distinct positions of ``0 .. n-1`` other than ``target``, uniformly, in the order drawn."""
    j = rng.choice(n - 1, size=k, replace=False)
    return j + (j >= target)


def count_examples(shards_dir: str, split: str, sources: int = 1) -> int:
    """How many examples :class:`FacePairs` yields per pass of ``split``: the frames of tracks of over ``sources`` frames.

    Reads only identity, video_id and utterance.
    """
    k = _check_sources(sources)
    total = 0
    for track in _list_tracks(split_parts(str(shards_dir), split)):
        tables = [_open(p).read(columns=list(_TRACK_KEY)) for p in track.parts]
        total += sum(len(rows) for _, rows in _face_tracks(pa.concat_tables(tables)) if len(rows) > k)
    return total


def _check_sources(sources: int) -> int:
    if isinstance(sources, bool) or int(sources) != sources or sources < 1:
        raise ValueError(f"sources must be a positive whole number (1 or 3 in the papers), not {sources!r}")
    return int(sources)


class FacePairs(_Dealt):
    """Source and target frames of one face track (FAb-Net, X2Face): ``k`` sources per target.

    See the module docstring ("Face pairs") for what is yielded, how the
    sources are drawn and how the work is split.  ``size`` is the side the
    crops are resized to (256, the shards' own, or 64 for the small models).
    """

    def __init__(
        self,
        shards_dir: str,
        split: str,
        *,
        sources: int = 1,
        shuffle: bool = False,
        buffer_size: int = 256,
        seed: int = 0,
        epoch: int = 0,
        size: int = FACE_SIZE,
        landmarks: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        super().__init__()
        self.sources = _check_sources(sources)
        self.shards_dir = str(shards_dir)
        self.split = split
        self.shuffle = bool(shuffle)
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, not {buffer_size}")
        self.buffer_size = int(buffer_size)
        self.seed = int(seed)
        self.epoch = int(epoch)
        if int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, not {size!r}")
        self.size = int(size)
        self.landmarks = bool(landmarks)
        self._columns = [*_TRACK_KEY, "frame_index", "image"] + (["landmarks"] if self.landmarks else [])
        self._rank_arg = (rank, world_size)  # None: from torch.distributed where the pass runs (see _place)
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self._tracks = _list_tracks(split_parts(self.shards_dir, split))

    @classmethod
    def from_root(cls, data_root: str, split: str, **kwargs) -> "FacePairs":
        """The dataset over ``<data_root>/voxceleb/shards``."""
        from tasks.datasets.voxceleb import layout

        return cls(layout(data_root).shards, split, **kwargs)

    @property
    def units(self) -> int:
        """How many units (utterances: face tracks) the split has."""
        return len(self._tracks)

    def __iter__(self) -> Iterator[dict]:
        yield from self._stream(*self._deal(len(self._tracks)))

    # -- internals

    def _stream(self, units: list[int], gid: int) -> Iterator[dict]:
        rng = self._generators(gid)[0]
        raw = self._raw_pairs(units, rng)
        if self.shuffle:
            raw = _shuffle_buffer(raw, self.buffer_size, rng)
        for frames, fields in raw:
            x = TF.to_dtype(frames, torch.float32, scale=True)
            yield {"sources": x[1:], "target": x[0], **fields}

    def _read(self, u: int) -> pa.Table:
        return pa.concat_tables([_open(p).read(columns=self._columns) for p in self._tracks[u].parts])

    def _raw_pairs(self, units: list[int], rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, dict]]:
        """Each example as (uint8 [1 + k, 3, S, S]: target then sources, its fields), unit by unit."""
        k, s = self.sources, self.size
        for u in units:
            table = self._read(u)
            for key, rows in _face_tracks(table):
                n = len(rows)
                if n <= k:
                    continue
                arrays = _decoded(table.column("image").take(rows).to_pylist(), "rgb")
                frames = torch.stack(_resized(arrays, (s, s), "rgb"))  # [n, 3, S, S], each decoded once
                fi = table.column("frame_index").to_numpy().astype(np.int64)[rows]
                points = self._points(table, rows, [a.shape[:2] for a in arrays]) if self.landmarks else None
                draw = rng if self.shuffle else _track_rng(self.seed, key)
                targets = draw.permutation(n) if self.shuffle else range(n)
                for t in targets:
                    t = int(t)
                    src = _other_frames(draw, n, t, k)
                    fields = {"identity": key[0], "video_id": key[1], "utterance": key[2],
                              "target_index": int(fi[t]), "source_indices": torch.from_numpy(fi[src].copy())}
                    if points is not None:
                        fields["landmarks"] = torch.from_numpy(points[t].copy())
                    yield frames[[t, *src.tolist()]], fields  # (a copy: the buffer holds no whole track)

    def _points(self, table, rows: np.ndarray, shapes: list[tuple[int, int]]) -> np.ndarray:
        """float32 [n, 68, 2]: the rows' landmarks, from stored-crop pixels to pixels of the ``size`` image."""
        out = np.full((len(rows), N_FACE_POINTS, 2), np.nan, np.float32)  # NaN: a row without landmarks
        for j, value in enumerate(table.column("landmarks").take(rows).to_pylist()):
            if value is not None:
                h, w = shapes[j]
                p = np.asarray(value, np.float64).reshape(N_FACE_POINTS, 2)
                scale = np.array([self.size / w, self.size / h])
                out[j] = (p + 0.5) * scale - 0.5  # pixel centres, as torchvision's resize maps them
        return out
