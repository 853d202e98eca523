"""The face probes on a labelled still-image set a user points at: MAFL (5 points) or 300-W (68 points).

The FAb-Net, keypoint and class-embedding papers score their landmark
probes on MAFL and 300-W; :func:`annotated_data` turns either set, as its
reader returns it (:mod:`tasks.datasets.face_annotations`), into the
split structure the face evaluations read from a build
(:func:`tasks.evaluation.faces.split_data`): per split, ``frames`` (the
crops at the model's input size, and a group label per face) and ``truth``
(``landmarks`` in pixels of the 256 x 256 crop).  The probes, metrics and
tables are then the sample set's, unchanged.

Choices where the papers are silent or differ
---------------------------------------------
* **Splits.**  MAFL: its ``training`` list (19,000) and ``testing`` list
  (1,000).  300-W: ``train`` (LFPW and HELEN trainsets, AFW: 3,148) and the
  "full" test set (``common`` + ``challenging``: 689), the usual protocol.
  The probe's early stopping needs a validation split that neither list
  has: every ``val_every``-th training face (10: 10 %) is held out for it.
* **The crop.**  Each face is cut as the builds cut VoxCeleb's faces
  (:func:`tasks.labels.faces.square_around` of a face box with the builds'
  margin 0.4, resized to 256), so a probe sees faces at the scale its
  network was trained on.  The face box is the bounding box of the
  annotated points: for 68 points that is about the box a face detector
  gives (brows to chin); 5 points (eye centres, nose, mouth corners) span a
  smaller part of the face, so their box is scaled by ``FIVE_POINT_SCALE``
  (2.0, our choice) about its centre.  The papers crop MAFL's aligned
  CelebA images by fixed windows instead; a box from the truth also places
  the test faces, which a fixed window would not.
* **Groups** for the bootstrap: each face is its own group (still images;
  no person or video is shared that the lists record).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.evaluation import face_probes as FP

KINDS = ("mafl", "300w")
FIVE_POINT_SCALE = 2.0  # a 5-point box (eyes to mouth) scaled to about a face detector's box
MARGIN = 0.4  # the builds' crop margin (build voxceleb --margin)


class AnnotatedSetError(ValueError):
    """A labelled set that cannot be evaluated (a split with no faces, an image that cannot be read): one line."""


def face_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of the face the ``points`` mark: their bounding box, scaled for 5-point faces."""
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    centre, size = (lo + hi) / 2, np.maximum(hi - lo, 1.0)
    if len(p) == 5:
        size = size * FIVE_POINT_SCALE
    side = float(size.max())  # square, as the crop will be
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side, side


def _read(kind: str, root: str) -> dict[str, list]:
    """The faces of each split: ``{"train", "test"}`` as the reader returns them."""
    from tasks.datasets.face_annotations import W300_FULL, read_300w, read_mafl

    if kind == "mafl":
        faces = read_mafl(root, ("train", "test"))
        return {s: [f for f in faces if f.split == s] for s in ("train", "test")}
    if kind == "300w":
        return {"train": read_300w(root, ("train",)), "test": read_300w(root, tuple(W300_FULL))}
    raise ValueError(f"unknown labelled set {kind!r}: one of {', '.join(KINDS)}")


def _crops(faces: list, size: int, margin: float, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[n, 3, size, size]`` crops and their points ``[n, P, 2]`` in pixels of the 256 crop (``chunk`` faces
    are cut at 256 at a time, then resized as the build's crops are for the models: torchvision v2, antialiased)."""
    import cv2
    import torch

    from tasks.labels.faces import crop_square, square_around
    from tasks.training.windows import _resized

    images, points = [], []
    for start in range(0, len(faces), chunk):
        crops = []
        for face in faces[start:start + chunk]:
            bgr = cv2.imread(str(face.image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AnnotatedSetError(f"{face.image}: not an image cv2 can read (listed at {face.source})")
            box = face_box(face.points)
            x0, y0, side = square_around(box, margin)
            crops.append(crop_square(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), x0, y0, side, FP.CROP))
            points.append(FP.frame_to_crop(face.points, box, margin, FP.CROP))
        images += _resized(crops, (int(size), int(size)), "rgb")
    stacked = torch.stack(images).numpy() if images else np.zeros((0, 3, size, size), np.uint8)
    return stacked, np.asarray(points, np.float64)


def annotated_data(kind: str, root: str, size: int, *, margin: float = MARGIN, val_every: int = 10,
                   limit: int | None = None) -> dict:
    """Per split (train, val, test): ``frames`` (``images`` at ``size``, ``track``: the face's name as its group)
    and ``truth`` (``landmarks`` in 256-crop pixels) of a MAFL or 300-W folder; ``limit``: at most that many
    faces per list (the first ones), for a quick look."""
    listed = _read(kind, root)
    train = listed["train"][:limit] if limit else listed["train"]
    test = listed["test"][:limit] if limit else listed["test"]
    held = set(range(val_every - 1, len(train), val_every))
    splits = {"train": [f for i, f in enumerate(train) if i not in held],
              "val": [f for i, f in enumerate(train) if i in held], "test": test}
    for split, faces in splits.items():
        if not faces:
            raise AnnotatedSetError(f"{root}: no {split} faces in this {kind} set (train {len(train)}, test "
                                    f"{len(test)}; validation is every {val_every}th training face)")
    out = {}
    for split, faces in splits.items():
        images, points = _crops(faces, size, margin)
        out[split] = {"frames": {"images": images, "track": np.array([f.source for f in faces])},
                      "truth": {"landmarks": points}}
    return out


def describe(data: dict) -> str:
    """``train N, val N, test N faces of P points``."""
    n_points = data["train"]["truth"]["landmarks"].shape[1]
    return ", ".join(f"{s} {len(d['frames']['track'])}" for s, d in data.items()) + f" faces of {n_points} points"


def table_name(kind: str) -> str:
    """The results table a labelled set's rows go to: ``landmarks-mafl``, ``landmarks-300w``."""
    return f"landmarks-{kind}"


def check_root(kind: str, root: str) -> None:
    """Read the set's lists and annotations (not its images) so a bad folder is refused before any work."""
    if not Path(root).is_dir():
        raise AnnotatedSetError(f"{root}: no such folder")
    for split, faces in _read(kind, root).items():
        if not faces:
            raise AnnotatedSetError(f"{root}: no {split} faces in this {kind} set")
