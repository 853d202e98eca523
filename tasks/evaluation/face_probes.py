"""Linear probes on a frozen face embedding (FAb-Net paper §5.1): landmarks, head pose, mouth open.

FAb-Net (Wiles, Koepke, Zisserman, BMVC 2018) measures what its embedding
holds by training a *linear probe* on it, the encoder frozen: "batch-norm
followed by a linear fully connected layer with no bias", trained with "a
MSE loss" for regression and "a cross-entropy loss" for classification (a
binary cross-entropy "for each AU" on EmotioNet), "using Adam, a learning
rate of 0.001, beta1 = 0.9 and beta2 = 0.999" (§5.1).  This module is that
probe and its scores, for a VoxCeleb build of a face *sample set* (whose
true landmarks, pose and mouth opening are known per frame) and, unchanged,
for any features and targets a caller brings (the paper's MAFL, 300-W and
AFLW through :mod:`tasks.datasets.face_annotations`).

What is here
------------
:func:`crop_truth`
    The sample set's per-frame truth (:func:`tasks.samples.faces.frame_truth`)
    of the rows of a build's shards, carried into the crop the build cut:
    ``square_around(box, margin)`` of the row's ``box`` (the face box used,
    video pixels), resized to ``crop`` (256).  A frame pixel ``p`` goes to
    ``(p - x0 + 0.5) * crop / side - 0.5`` in the crop (``x0`` the square's
    left edge, ``y0`` its top, ``side`` its side): pixel centres at integers
    on both sides, as ``cv2.resize`` maps them (INTER_AREA and INTER_LINEAR
    alike), which is what :func:`tasks.labels.faces.crop_square` calls and
    the convention dlib's points in the shards' ``landmarks`` column use.
    Returns ``landmarks`` [n, 68, 2] (crop pixels, dlib's order), ``pose``
    [n, 3] (**roll, pitch, yaw** in degrees, in that order: the order of
    :class:`tasks.datasets.face_annotations.HeadPose` and of the paper's
    table 2) and ``opening`` [n] (the mouth opening in [0, 1]).
:class:`LinearProbe`, :func:`fit_probe`, :class:`FittedProbe`
    The probe (``BatchNorm1d(d)`` then ``Linear(d, k, bias=False)``) and its
    training: ``kind="regression"`` (MSE), ``"binary"`` (BCE with logits,
    one output per binary target: several action units are several outputs)
    or ``"classes"`` (cross-entropy, integer targets).  The loop is
    PyTorch Lightning's on the CPU (a linear layer on a few thousand vectors
    needs no accelerator), early stopping on the validation loss, and the
    weights of the best validation epoch are the ones returned.
:func:`landmark_scores`, :func:`pose_scores`, :func:`binary_scores`, :func:`bootstrap`
    The metrics with 95 % bootstrap intervals over groups (identities or
    utterances): mean landmark error in % of the inter-ocular distance
    (:func:`tasks.datasets.face_annotations.landmark_error`: eye centres
    0-1 of 5-point faces, outer eye corners 36-45 of 68-point faces, 300-W's
    normalisation), mean absolute error in degrees per angle and their mean,
    accuracy and ROC AUC of binary targets.
:func:`run_probes`
    Fit on train, early-stop on val, score on test, for the targets
    ``landmarks`` (regression on the 136 coordinates divided by the crop's
    side), ``pose`` (regression on the 3 angles) and ``mouth open`` (binary:
    ``opening > 0.2``, :data:`MOUTH_OPEN`); the rows of a results table and
    the learning curves.  The same function runs the baselines: the features
    of an untrained encoder, or dlib's 68 points (the shards' ``landmarks``
    column) as features, and dlib's points scored directly as landmark
    predictions without any probe (``direct_landmarks=``: the row
    ``"<name> (direct)"``, e.g. ``"dlib (direct)"``).
:func:`split_frames`, :func:`embed_frames`
    A split of a build's face shards as arrays (images resized to the
    model's input, the columns the truth and the groups need), and the
    embeddings of those images by any ``embed_fn`` (e.g. ``FabNet.embed``).

Choices where the paper is silent
---------------------------------
* **Epochs, patience, batch.**  ``max_epochs=500``, ``patience=20``
  (validations, one per epoch, without a lower validation loss), batch 64.
  Adam at the paper's 1e-3 moves each weight by about 1e-3 a step, so a
  linear map of standardised targets takes several hundred steps to fit
  (on a noiseless 8-d test problem: a relative error of 4e-4 after ~1,300
  steps).  On 300-W's 3,148 faces an epoch is ~50 steps and early stopping
  ends the run long before 500 epochs; on the few dozen frames of a sample
  set an epoch is a single step, and 500 is what lets the probe converge
  there at all.  20 epochs of patience ride out the noise of a small
  validation set without running long past the minimum; the weights kept
  are those of the epoch with the lowest validation loss, not the last (so
  the patience costs time, not accuracy).  Batches of 64 keep BatchNorm's
  batch statistics stable; a training set of 64 rows or fewer is one full
  batch per epoch, and with more the last partial batch is dropped (a batch
  of one row cannot be batch-normalised in training mode).  The validation
  set is scored in one pass (chunks of 4,096) with BatchNorm's running
  statistics.
* **Standardised regression targets.**  Each regression output is centred
  and scaled by the mean and standard deviation of the *training* targets
  (an output that is constant in train is centred only), the MSE is taken
  on those, and predictions are mapped back.  The paper's probe has no bias
  (BatchNorm's shift, times the linear weights, acts as one).  Adam moves
  every weight by about the learning rate a step whatever the gradient's
  size, so raw targets (pixel coordinates near 128 with a spread of tens,
  angles of a few degrees) would need weights of that size, ~1e5 steps at
  1e-3, and the MSE would weigh each output by its spread; standardised,
  every output needs weights of order one, they fit alike, and the
  validation loss (in standardised units) reads the same for every target.
  Landmarks are also divided by the crop's side before (so they lie in
  about [0, 1] whatever the crop size); the standardisation makes that scale
  immaterial to the fit.
* **Seeding.**  ``seed`` seeds the probe's initial weights (under
  ``torch.random.fork_rng``, so the caller's global RNG is left as it was)
  and the training loader's shuffling (its own ``torch.Generator``); on the
  CPU with the same thread count the same inputs give bit-identical weights,
  curves and predictions.  Lightning's ``deterministic=True`` is not set:
  it switches on ``torch.use_deterministic_algorithms`` for the whole
  process, and the CPU kernels used here are deterministic anyway.
* **No test data while fitting.**  :func:`fit_probe` sees train and val only;
  :func:`run_probes` passes it nothing of the test split, whose features are
  only ever predicted from and whose targets only ever scored.
* **Class weights.**  The paper reweights the under-represented classes of
  EmotioNet and AffectNet "inversely proportionally to the class
  frequencies"; ``balanced=True`` does that from the training targets
  (binary: ``pos_weight = negatives / positives`` per output; classes:
  ``n / (C * count)``).  It is off by default, and off for the mouth probe
  (about a quarter of a sample set's frames are open: not badly imbalanced).
* **Mouth open** is ``opening > 0.2`` (:data:`MOUTH_OPEN`).  ``opening`` is
  the syllable envelope the sample frame was drawn with; the jaw drops by
  ``opening x 6 %`` of the face box's height, so below 0.2 it has moved at
  most ~1.2 % of the face (1-2 pixels of a 256 crop), which is hard to see,
  while above it the lips part visibly.  About 23-26 % of all the frames of
  the default sample videos (silent lead and gaps included) are open by this
  rule.
* **Constant angles.**  The sample set draws no pitch (always 0): a probe
  would "predict" it perfectly from the training mean.  :func:`pose_scores`
  leaves out any angle whose true test values are all equal, says so
  (``ScoreSet.skipped``, and a row with NaN and a note in
  :func:`run_probes`), and the mean MAE is over the angles scored.  The
  paper's MAE column is the mean of its three angles; on AFLW none is
  constant.
* **Bootstrap.**  The intervals are percentile intervals of ``n_boot=1000``
  resamples of the *groups* with replacement (``numpy.random.default_rng(seed)``):
  frames of one identity or utterance are alike, so resampling frames would
  understate the uncertainty.  A resample's metric pools the items of the
  groups drawn (a group drawn twice counts twice).  With one group the
  interval is the point itself.
* **Accuracy** thresholds the predicted probability at 0.5; **AUC** (the
  paper's metric for action units) is the Mann-Whitney statistic (ties count
  a half), NaN for a resample or test set with only one class (left out of
  the interval).

Nothing here imports Prefect or the flows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, NamedTuple, Sequence

import lightning.pytorch as L
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from tasks.datasets.face_annotations import inter_ocular_distance, landmark_error
from tasks.labels.faces import CROP, N_LANDMARKS, square_around

KINDS = ("regression", "binary", "classes")
POSE_ANGLES = ("roll", "pitch", "yaw")  # the order of every pose array here (HeadPose's, the paper's table 2)
MOUTH_OPEN = 0.2  # a frame's mouth is open when its opening exceeds this
MAX_EPOCHS, PATIENCE, BATCH_SIZE = 500, 20, 64
LEARNING_RATE, BETAS = 1e-3, (0.9, 0.999)  # paper §5.1
N_BOOT, LEVEL = 1000, 0.95
TARGETS = ("landmarks", "pose", "mouth open")  # run_probes' targets, in order
ROW_FIELDS = ("features", "target", "metric", "value", "low", "high", "n_test", "n_groups", "note")
_EVAL_CHUNK = 4096
_FRAME_COLUMNS = ("identity", "video_id", "utterance", "frame_index", "box", "landmarks")


# ---------------------------------------------------------------- truth of a face sample set, in crop pixels


def frame_to_crop(points, box, margin: float = 0.4, crop: int = CROP) -> np.ndarray:
    """Frame pixels ``points`` (..., 2) to pixels of the ``crop`` x ``crop`` image cut around ``box``.

    The crop is ``square_around(box, margin)`` resized to ``crop``
    (:func:`tasks.labels.faces.crop_square`); pixel centres map to pixel
    centres: ``(p - x0 + 0.5) * crop / side - 0.5``.
    """
    x0, y0, side = square_around(tuple(float(v) for v in box), margin)
    p = np.asarray(points, np.float64)
    return (p - np.array([x0, y0], np.float64) + 0.5) * (crop / side) - 0.5


def _column_rows(rows) -> list[dict]:
    """``rows`` (a pyarrow Table, a list of dicts, or a dict of equal-length columns) as a list of dicts."""
    if isinstance(rows, pa.Table):
        return rows.select([c for c in ("video_id", "frame_index", "box") if c in rows.column_names]).to_pylist()
    if isinstance(rows, Mapping):
        names = [c for c in ("video_id", "frame_index", "box") if c in rows]
        n = len(rows[names[0]]) if names else 0
        return [{c: rows[c][i] for c in names} for i in range(n)]
    return list(rows)


def crop_truth(samples_dir, rows, margin: float = 0.4, crop: int = CROP) -> dict[str, np.ndarray]:
    """The true landmarks, pose and mouth opening of each row of a face build, in the row's crop.

    ``rows``: a pyarrow Table, a list of dicts or a dict of columns with
    ``video_id``, ``frame_index`` (the MP4's frame) and ``box`` (x, y, w, h
    video pixels: the face box the build cut around) of a build of the
    sample set in ``samples_dir`` (``sightsound samples faces``).  ``margin``
    and ``crop`` must be the build's (0.4 and 256 by default).  (The shards
    keep ``box`` as float32; dlib's boxes are whole pixels, so the square is
    the build's exactly; a fractional metadata box could in principle round
    the other way at an exact .5.)  Returns
    ``landmarks`` float64 [n, 68, 2] in crop pixels (dlib's order),
    ``pose`` [n, 3] roll, pitch, yaw in degrees, and ``opening`` [n] in
    [0, 1].  Each video's truth file is read once.
    """
    from tasks.samples.faces import frame_truth

    items = _column_rows(rows)
    truths: dict[str, dict[str, np.ndarray]] = {}
    landmarks = np.empty((len(items), N_LANDMARKS, 2), np.float64)
    pose = np.empty((len(items), 3), np.float64)
    opening = np.empty(len(items), np.float64)
    for i, row in enumerate(items):
        video, frame = str(row["video_id"]), int(row["frame_index"])
        if video not in truths:
            truths[video] = frame_truth(samples_dir, video)
        truth = truths[video]
        if not 0 <= frame < len(truth["frame"]):
            raise ValueError(f"frame {frame} of video {video!r} is not in the sample set's truth "
                             f"({len(truth['frame'])} frames): is {samples_dir} the set this build was made of?")
        landmarks[i] = frame_to_crop(truth["landmarks"][frame], row["box"], margin, crop)
        pose[i] = [truth[a][frame] for a in POSE_ANGLES]
        opening[i] = truth["opening"][frame]
    return {"landmarks": landmarks, "pose": pose, "opening": opening}


# ---------------------------------------------------------------- the probe


class LinearProbe(nn.Module):
    """Paper §5.1: ``BatchNorm1d`` on the embedding, then a fully connected layer without bias."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class _ProbeTask(L.LightningModule):
    """The probe under Lightning's loop: the loss of its kind, Adam, per-epoch losses into ``curve``."""

    def __init__(self, probe: LinearProbe, kind: str, lr: float, weight: torch.Tensor | None):
        super().__init__()
        self.probe, self.kind, self.lr = probe, kind, lr
        self.weight = weight
        self.curve: list[dict] = []
        self._sums = {"train": [0.0, 0], "val": [0.0, 0]}
        self._start = time.monotonic()

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            return F.mse_loss(out, y)
        if self.kind == "binary":
            return F.binary_cross_entropy_with_logits(out, y, pos_weight=self.weight)
        return F.cross_entropy(out, y, weight=self.weight)

    def configure_optimizers(self):
        return torch.optim.Adam(self.probe.parameters(), lr=self.lr, betas=BETAS)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.probe(x), y)
        self._sums[stage][0] += float(loss.detach()) * len(x)
        self._sums[stage][1] += len(x)
        return loss

    def on_train_start(self) -> None:
        self._start = time.monotonic()

    def on_train_epoch_start(self) -> None:
        self._sums["train"] = [0.0, 0]

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._sums["val"] = [0.0, 0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        (t_sum, t_n), (v_sum, v_n) = self._sums["train"], self._sums["val"]
        val = v_sum / v_n if v_n else math.nan
        self.log("val_loss", val)
        self.curve.append({"epoch": int(self.current_epoch), "step": int(self.global_step),
                           "wall_s": round(time.monotonic() - self._start, 3),
                           "train_loss": t_sum / t_n if t_n else math.nan, "val_loss": val})


class _KeepBest(L.Callback):
    """A copy of the probe's state (weights and BatchNorm statistics) at the lowest validation loss so far."""

    def __init__(self):
        self.best, self.epoch, self.state = math.inf, -1, None

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get("val_loss")
        if value is None or trainer.sanity_checking:
            return
        value = float(value)
        if math.isfinite(value) and value < self.best:
            self.best, self.epoch = value, int(pl_module.current_epoch)
            self.state = {k: v.detach().clone() for k, v in pl_module.probe.state_dict().items()}


@dataclass
class FittedProbe:
    """A trained :class:`LinearProbe` (the best validation epoch's weights) and how to read its outputs.

    ``predict(x)``: regression values in the targets' own units (the
    standardisation undone), binary probabilities, or class probabilities
    [n, C]; a regression or binary probe fitted on 1-D targets predicts 1-D.
    ``curve``: one dict per epoch (epoch, step: optimiser steps so far,
    wall_s: since training started, train_loss: the epoch's mean batch loss,
    val_loss), losses in the fitting units (standardised for regression).
    """

    probe: LinearProbe
    kind: str
    mean: np.ndarray | None
    std: np.ndarray | None
    curve: list[dict]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool
    one_d: bool = False

    def logits(self, x) -> np.ndarray:
        x = _features(x, "x", self.probe.norm.num_features)
        self.probe.eval()
        with torch.no_grad():
            out = [self.probe(torch.from_numpy(x[i:i + _EVAL_CHUNK])) for i in range(0, len(x), _EVAL_CHUNK)]
        return (torch.cat(out) if out else torch.zeros(0, self.probe.linear.out_features)).double().numpy()

    def predict(self, x) -> np.ndarray:
        z = self.logits(x)
        if self.kind == "regression":
            z = z * self.std + self.mean
        elif self.kind == "binary":
            z = 1.0 / (1.0 + np.exp(-z))
        else:
            z = np.exp(z - z.max(axis=1, keepdims=True))
            z = z / z.sum(axis=1, keepdims=True)
        return z[:, 0] if self.one_d else z


def _features(x, what: str, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{what} must be [n, d] features, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{what} has {a.shape[1]} features, the probe takes {dim}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has non-finite values")
    return np.ascontiguousarray(a)


def _targets(y, kind: str, n: int, what: str) -> np.ndarray:
    a = np.asarray(y)
    if len(a) != n:
        raise ValueError(f"{what} has {len(a)} rows, its features {n}")
    if kind == "classes":
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) and not np.all(a == np.round(a)):
            raise ValueError(f"{what} must be 1-D integer class indices for kind 'classes'")
        a = a.astype(np.int64)
        if (a < 0).any():
            raise ValueError(f"{what} has negative class indices")
        return a
    a = a.astype(np.float64)
    a = a[:, None] if a.ndim == 1 else a.reshape(n, -1)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} has non-finite values")
    if kind == "binary" and not np.isin(a, (0.0, 1.0)).all():
        raise ValueError(f"{what} must be 0 or 1 for kind 'binary'")
    return a


def class_weights(train_y: np.ndarray, kind: str, n_classes: int | None = None) -> np.ndarray:
    """The paper's inverse-frequency weights from training targets.

    ``binary`` ([n, k] 0/1): ``pos_weight`` per output, negatives / positives
    (1 where an output has no positives or no negatives); ``classes`` ([n]
    indices): ``n / (C * count)`` per class (0 for a class absent from train).
    """
    y = np.asarray(train_y)
    if kind == "binary":
        y = y.reshape(len(y), -1).astype(np.float64)
        pos = y.sum(axis=0)
        neg = len(y) - pos
        return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1), 1.0)
    if kind == "classes":
        c = int(n_classes if n_classes is not None else y.max() + 1)
        counts = np.bincount(y.astype(np.int64), minlength=c).astype(np.float64)
        return np.where(counts > 0, len(y) / (c * np.maximum(counts, 1)), 0.0)
    raise ValueError(f"class weights are for 'binary' or 'classes', not {kind!r}")


@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up lines (GPU available ..., ...) and its hints for data loaders, silenced for one fit."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # torch's deprecation, raised inside Lightning
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def fit_probe(train_x, train_y, val_x, val_y, kind: str, *, max_epochs: int = MAX_EPOCHS,
              patience: int = PATIENCE, batch_size: int = BATCH_SIZE, seed: int = 0, lr: float = LEARNING_RATE,
              balanced: bool = False, n_classes: int | None = None, log_dir=None,
              log_name: str = "probe") -> FittedProbe:
    """Train a :class:`LinearProbe` on ``train`` with early stopping on ``val`` (see the module docstring).

    ``kind``: ``"regression"`` (targets [n] or [n, k], standardised by the
    training targets' mean and deviation), ``"binary"`` ([n] or [n, k] of
    0/1) or ``"classes"`` ([n] integer indices; ``n_classes`` defaults to
    the largest index in train or val plus one).  Stops after ``patience``
    epochs without a lower validation loss, or at ``max_epochs``; the
    returned probe has the weights of the best validation epoch.
    ``log_dir``: also write Lightning's CSV log there (``<log_dir>/<log_name>/version_N``).
    """
    from lightning.pytorch.callbacks import EarlyStopping
    from torch.utils.data import DataLoader, TensorDataset

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if int(max_epochs) < 1 or int(patience) < 1 or int(batch_size) < 2:
        raise ValueError("max_epochs and patience must be at least 1, batch_size at least 2")
    tx, vx = _features(train_x, "train_x"), _features(val_x, "val_x")
    if vx.shape[1] != tx.shape[1]:
        raise ValueError(f"train_x has {tx.shape[1]} features, val_x {vx.shape[1]}")
    if len(tx) < 2 or len(vx) < 1:
        raise ValueError(f"a probe needs at least 2 training rows and 1 validation row, got {len(tx)} and {len(vx)}")
    ty, vy = _targets(train_y, kind, len(tx), "train_y"), _targets(val_y, kind, len(vx), "val_y")
    one_d = kind != "classes" and np.asarray(train_y).ndim == 1
    mean = std = weight = None
    if kind == "regression":
        mean = ty.mean(axis=0)
        std = ty.std(axis=0)
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # constant in train: centre only
        ty, vy = (ty - mean) / std, (vy - mean) / std
    if kind == "classes":
        n_out = int(n_classes if n_classes is not None else max(ty.max(), vy.max()) + 1)
        if ty.max() >= n_out or vy.max() >= n_out:
            raise ValueError(f"class indices must be below n_classes={n_out}")
    else:
        n_out = ty.shape[1]
    if balanced:
        if kind == "regression":
            raise ValueError("balanced=True weighs classes: it is for 'binary' or 'classes'")
        weight = torch.from_numpy(class_weights(ty, kind, n_out).astype(np.float32))

    as_y = (lambda a: torch.from_numpy(a)) if kind == "classes" else (lambda a: torch.from_numpy(a.astype(np.float32)))
    train_ds = TensorDataset(torch.from_numpy(tx), as_y(ty))
    val_ds = TensorDataset(torch.from_numpy(vx), as_y(vy))
    batch = min(int(batch_size), len(tx))
    train_loader = DataLoader(train_ds, batch_size=batch, shuffle=True, drop_last=len(tx) > batch,
                              generator=torch.Generator().manual_seed(int(seed)))
    val_loader = DataLoader(val_ds, batch_size=min(_EVAL_CHUNK, len(vx)), shuffle=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        probe = LinearProbe(tx.shape[1], n_out)
    task = _ProbeTask(probe, kind, float(lr), weight)
    stop = EarlyStopping(monitor="val_loss", mode="min", patience=int(patience), min_delta=0.0)
    best = _KeepBest()
    logger = False
    if log_dir is not None:
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(str(log_dir), name=log_name)
    with _quiet_lightning():
        trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=int(max_epochs), logger=logger,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, log_every_n_steps=1, callbacks=[stop, best],
                            default_root_dir=str(log_dir) if log_dir is not None else None)
        trainer.fit(task, train_loader, val_loader)
    if best.state is not None:
        probe.load_state_dict(best.state)
    probe.eval()
    return FittedProbe(probe=probe, kind=kind, mean=mean, std=std, curve=list(task.curve),
                       best_epoch=best.epoch, best_val_loss=best.best, stopped_early=bool(stop.stopped_epoch),
                       one_d=one_d)


# ---------------------------------------------------------------- scores with bootstrap intervals over groups


class Score(NamedTuple):
    """A metric's value and its bootstrap interval (``low``, ``high``)."""

    value: float
    low: float
    high: float


@dataclass
class ScoreSet:
    """The metrics of one target on one test set: ``metrics[name]``, with the test rows and groups counted.

    ``skipped`` names what was left out and why (e.g. ``{"pitch": "..."}``).
    """

    metrics: dict[str, Score]
    n: int
    n_groups: int
    skipped: dict[str, str] = field(default_factory=dict)


def _group_index(groups, n: int) -> tuple[np.ndarray, int]:
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must be one label per row ({n}), got shape {g.shape}")
    if n == 0:
        raise ValueError("nothing to score: no rows")
    _, inverse = np.unique(g, return_inverse=True)
    return inverse.reshape(n), int(inverse.max()) + 1


def _draws(n_groups: int, n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` resamples of the groups with replacement: [n_boot, n_groups] group indices."""
    return np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap(values, groups, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Score:
    """The mean of per-row ``values`` and its percentile interval over resamples of ``groups`` with replacement.

    A resample draws as many groups as there are, with replacement
    (``numpy.random.default_rng(seed).integers``), and pools their rows: its
    mean is the sum of the drawn groups' values over their row count.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    inverse, k = _group_index(groups, len(v))
    sums = np.bincount(inverse, weights=v, minlength=k)
    counts = np.bincount(inverse, minlength=k).astype(np.float64)
    idx = _draws(k, int(n_boot), seed)
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return Score(float(v.mean()), *_interval(means, level))


def landmark_scores(pred, true, groups, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> ScoreSet:
    """Mean landmark error in % of the inter-ocular distance (``error_iod_pct``), with its interval.

    ``pred`` and ``true`` are [n, 68, 2] (300-W's outer eye corners 36-45)
    or [n, 5, 2] (MAFL's eye centres 0-1), any pixel units (the same for
    both); [n, 136] or [n, 10] are taken as flattened points.
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if true.ndim == 2:
        true = true.reshape(len(true), -1, 2)
    if pred.ndim == 2:
        pred = pred.reshape(len(pred), -1, 2)
    inter_ocular_distance(true)  # refuses a point count without a convention, naming it
    per_face = np.atleast_1d(landmark_error(pred, true))
    _, k = _group_index(groups, len(per_face))
    return ScoreSet({"error_iod_pct": bootstrap(per_face, groups, n_boot=n_boot, seed=seed, level=level)},
                    len(per_face), k)


def pose_scores(pred, true, groups, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> ScoreSet:
    """Mean absolute error in degrees per angle (``mae_roll``, ``mae_pitch``, ``mae_yaw``) and their mean.

    ``pred`` and ``true`` are [n, 3]: roll, pitch, yaw.  An angle whose true
    values are all equal is not scored (``skipped``); ``mae_mean`` is over
    the others (per row, the mean absolute error of the scored angles, so
    its value is the mean of their MAEs).
    """
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    if pred.shape != true.shape or true.ndim != 2 or true.shape[1] != 3:
        raise ValueError(f"pred and true must both be [n, 3] (roll, pitch, yaw), got {pred.shape} and {true.shape}")
    _, k = _group_index(groups, len(true))
    err = np.abs(pred - true)
    metrics: dict[str, Score] = {}
    skipped: dict[str, str] = {}
    scored = []
    for j, angle in enumerate(POSE_ANGLES):
        if np.ptp(true[:, j]) == 0:
            skipped[angle] = f"true {angle} is {true[0, j]:g} in every test row: nothing to predict, not scored"
            continue
        scored.append(j)
        metrics[f"mae_{angle}"] = bootstrap(err[:, j], groups, n_boot=n_boot, seed=seed, level=level)
    if scored:
        metrics["mae_mean"] = bootstrap(err[:, scored].mean(axis=1), groups, n_boot=n_boot, seed=seed, level=level)
    return ScoreSet(metrics, len(true), k, skipped)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count a half); NaN without both classes."""
    from scipy.stats import rankdata

    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if not n_pos or not n_neg:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_scores(prob, true, groups, *, names: Sequence[str] | None = None, threshold: float = 0.5,
                  n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> ScoreSet:
    """Accuracy (``prob > threshold`` against ``true``) and ROC AUC of binary targets, with intervals.

    ``prob`` and ``true`` are [n] or [n, k] (k binary outputs, e.g. action
    units): one output gives ``accuracy`` and ``auc``; several give
    ``accuracy_<name>``, ``auc_<name>`` per output (``names``, default
    0, 1, ...) and ``accuracy_mean``, ``auc_mean`` (the means over outputs).
    Accuracy is a fraction in [0, 1]; an AUC is NaN where the test rows (or a
    resample) hold one class only.
    """
    p, t = np.asarray(prob, np.float64), np.asarray(true, np.float64)
    if p.shape != t.shape or p.ndim not in (1, 2):
        raise ValueError(f"prob and true must both be [n] or [n, k], got {p.shape} and {t.shape}")
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    inverse, k = _group_index(groups, len(t))
    labels = [str(x) for x in (names if names is not None else range(t.shape[1]))]
    if len(labels) != t.shape[1]:
        raise ValueError(f"{len(labels)} names for {t.shape[1]} outputs")
    correct = ((p > threshold) == (t > 0.5)).astype(np.float64)
    single = t.shape[1] == 1
    metrics: dict[str, Score] = {}
    for j, name in enumerate(labels):
        metrics["accuracy" if single else f"accuracy_{name}"] = bootstrap(correct[:, j], groups, n_boot=n_boot,
                                                                          seed=seed, level=level)
    if not single:
        metrics["accuracy_mean"] = bootstrap(correct.mean(axis=1), groups, n_boot=n_boot, seed=seed, level=level)
    # AUC is not a mean over rows: recompute it on each resample's rows.
    members = [np.flatnonzero(inverse == g) for g in range(k)]
    draws = _draws(k, int(n_boot), seed)
    aucs = np.array([[_auc(p[:, j], t[:, j]) for j in range(t.shape[1])]])
    boot = np.empty((len(draws), t.shape[1]))
    for b, idx in enumerate(draws):
        rows = np.concatenate([members[g] for g in idx])
        boot[b] = [_auc(p[rows, j], t[rows, j]) for j in range(t.shape[1])]
    for j, name in enumerate(labels):
        metrics["auc" if single else f"auc_{name}"] = Score(float(aucs[0, j]), *_interval(boot[:, j], level))
    if not single:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_boot = np.nanmean(boot, axis=1)
            value = float(np.nanmean(aucs[0])) if np.isfinite(aucs[0]).any() else math.nan
        metrics["auc_mean"] = Score(value, *_interval(mean_boot, level))
    return ScoreSet(metrics, len(t), k)


# ---------------------------------------------------------------- probes of one set of features, rows of a table


def _row(features: str, target: str, metric: str, score: Score | None, scores: ScoreSet, note: str = "") -> dict:
    value, low, high = score if score is not None else (math.nan, math.nan, math.nan)
    return {"features": features, "target": target, "metric": metric, "value": value, "low": low, "high": high,
            "n_test": scores.n, "n_groups": scores.n_groups, "note": note}


def _rows_of(features: str, target: str, scores: ScoreSet, note: str = "") -> list[dict]:
    rows = [_row(features, target, m, s, scores, note) for m, s in scores.metrics.items()]
    for what, why in scores.skipped.items():
        rows.append(_row(features, target, f"mae_{what}", None, scores, f"skipped: {why}"))
    if scores.skipped and "mae_mean" in scores.metrics:
        kept = [a for a in POSE_ANGLES if a not in scores.skipped]
        for r in rows:
            if r["metric"] == "mae_mean":
                r["note"] = "; ".join(part for part in (note, f"mean of {', '.join(kept)} only") if part)
    return rows


def _target_arrays(name: str, targets: Mapping, crop: int) -> tuple[str, np.ndarray] | None:
    """(kind, array [n, k]) that a probe of ``name`` fits, from one split's targets; None if the split lacks them."""
    if name == "landmarks" and "landmarks" in targets:
        lm = np.asarray(targets["landmarks"], np.float64)
        return "regression", lm.reshape(len(lm), -1) / crop
    if name == "pose" and "pose" in targets:
        return "regression", np.asarray(targets["pose"], np.float64).reshape(-1, 3)
    if name == "mouth open" and "opening" in targets:
        return "binary", (np.asarray(targets["opening"], np.float64).reshape(-1) > MOUTH_OPEN).astype(np.float64)
    return None


def run_probes(features: Mapping[str, np.ndarray], targets: Mapping[str, Mapping[str, np.ndarray]],
               groups: Mapping[str, np.ndarray], name: str, *, which: Sequence[str] = TARGETS, crop: int = CROP,
               direct_landmarks=None, seed: int = 0, n_boot: int = N_BOOT, log_dir=None,
               **fit_kw) -> tuple[list[dict], dict[str, list[dict]]]:
    """Fit each target's probe on ``train``, early-stop on ``val``, score on ``test``: ``(rows, curves)``.

    ``features[split]`` is [n, d] (an encoder's embeddings, or dlib's points
    as [n, 136]); ``targets[split]`` holds ``landmarks`` [n, 68, 2] or
    [n, 5, 2] (crop pixels), ``pose`` [n, 3] (roll, pitch, yaw) and
    ``opening`` [n] (any of them: a target runs when all three splits have
    it); ``groups[split]`` one label per row (only the test split's are
    used: the bootstrap's groups).  ``which`` picks among
    ``landmarks``, ``pose``, ``mouth open``.  Rows whose features or target
    are not finite (a frame stored without dlib points) are left out of that
    probe, and the row's note says how many.  ``direct_landmarks``: the test
    split's landmark predictions made without a probe ([n, 68, 2] in crop
    pixels, e.g. dlib's), scored as the row ``"<name> (direct)"``.
    ``fit_kw`` go to :func:`fit_probe` (``max_epochs``, ``patience``,
    ``batch_size``, ``balanced``); ``seed`` seeds the probes and the
    bootstrap.  Each row: features, target, metric, value, low, high (the
    95 % interval), n_test, n_groups, note.  ``curves[target]`` is the
    probe's learning curve (:attr:`FittedProbe.curve`).
    """
    unknown = [w for w in which if w not in TARGETS]
    if unknown:
        raise ValueError(f"unknown probe target(s) {unknown}; one of {', '.join(TARGETS)}")
    splits = ("train", "val", "test")
    missing = [s for s in splits if s not in features or s not in targets or (s == "test" and s not in groups)]
    if missing:
        raise ValueError("features, targets (and groups for test) are needed for train, val and test; "
                         f"missing {missing}")
    x = {s: np.asarray(features[s], np.float64).reshape(len(features[s]), -1) for s in splits}
    rows: list[dict] = []
    curves: dict[str, list[dict]] = {}
    for target in which:
        arrays = {s: _target_arrays(target, targets[s], crop) for s in splits}
        if any(a is None for a in arrays.values()):
            continue
        kind = arrays["train"][0]
        keep = {}
        for s in splits:
            y = arrays[s][1].reshape(len(arrays[s][1]), -1)
            if len(y) != len(x[s]):
                raise ValueError(f"{s}: {len(x[s])} feature rows but {len(y)} {target} targets")
            keep[s] = np.isfinite(x[s]).all(axis=1) & np.isfinite(y).all(axis=1)
        dropped = {s: int((~keep[s]).sum()) for s in splits if (~keep[s]).any()}
        note = "; ".join(f"{n} {s} rows without finite features or targets left out" for s, n in dropped.items())
        if target == "mouth open":
            note = "; ".join(part for part in (f"open: opening > {MOUTH_OPEN:g}", note) if part)
        fit = fit_probe(x["train"][keep["train"]], arrays["train"][1][keep["train"]],
                        x["val"][keep["val"]], arrays["val"][1][keep["val"]], kind, seed=seed,
                        log_dir=log_dir, log_name=f"{name}-{target}".replace(" ", "_").replace("/", "_"), **fit_kw)
        curves[target] = fit.curve
        pred = fit.predict(x["test"][keep["test"]])
        test_groups = np.asarray(groups["test"])[keep["test"]]
        if target == "landmarks":
            true = np.asarray(targets["test"]["landmarks"], np.float64)[keep["test"]]
            scores = landmark_scores(pred.reshape(true.shape) * crop, true, test_groups, n_boot=n_boot, seed=seed)
        elif target == "pose":
            true = np.asarray(targets["test"]["pose"], np.float64)[keep["test"]]
            scores = pose_scores(pred, true, test_groups, n_boot=n_boot, seed=seed)
        else:
            scores = binary_scores(pred, arrays["test"][1][keep["test"]], test_groups, n_boot=n_boot, seed=seed)
        rows += _rows_of(name, target, scores, note)
    if direct_landmarks is not None and "landmarks" in which and "landmarks" in targets["test"]:
        true = np.asarray(targets["test"]["landmarks"], np.float64)
        pred = np.asarray(direct_landmarks, np.float64).reshape(true.shape)
        ok = np.isfinite(pred.reshape(len(pred), -1)).all(axis=1) & np.isfinite(true.reshape(len(true), -1)).all(axis=1)
        note = f"no probe: the points scored as they are; {int((~ok).sum())} test rows without them left out" \
            if (~ok).any() else "no probe: the points scored as they are"
        scores = landmark_scores(pred[ok], true[ok], np.asarray(groups["test"])[ok], n_boot=n_boot, seed=seed)
        rows += _rows_of(f"{name} (direct)", "landmarks", scores, note)
    return rows, curves


# ---------------------------------------------------------------- frames of a build, and their embeddings


def split_frames(data_root, split: str, size: int = CROP, *, images: bool = True) -> dict[str, np.ndarray]:
    """Every frame of one split of a VoxCeleb build's face shards, as arrays, in part order.

    Keys: ``images`` uint8 [n, 3, size, size] (the stored 256 x 256 crops
    resized as :class:`tasks.training.windows.FacePairs` resizes them:
    torchvision v2, antialiased; absent with ``images=False``), ``identity``,
    ``video_id``, ``utterance`` (str arrays), ``track``
    (``identity/video_id/utterance``: the utterance as a group label),
    ``frame_index`` int64, ``box`` float64 [n, 4] (video pixels) and
    ``landmarks`` float64 [n, 68, 2]: dlib's points in pixels of the *stored*
    crop (not of ``size``: the coordinates :func:`crop_truth` gives), NaN
    for a row stored without them.  A split without shards is refused
    (:func:`tasks.training.windows.split_parts`' ValueError).
    """
    from tasks.datasets.voxceleb import layout
    from tasks.training.windows import _decoded, _open, _resized, split_parts

    columns = list(_FRAME_COLUMNS) + (["image"] if images else [])
    tables = [_open(p).read(columns=columns) for p in split_parts(layout(data_root).shards, split)]
    table = pa.concat_tables(tables)
    n = table.num_rows
    out: dict[str, np.ndarray] = {c: np.asarray(table.column(c).to_pylist(), dtype=object).astype(str)
                                  for c in ("identity", "video_id", "utterance")}
    out["track"] = np.array([f"{a}/{b}/{c}" for a, b, c in zip(out["identity"], out["video_id"], out["utterance"])])
    out["frame_index"] = table.column("frame_index").to_numpy().astype(np.int64)
    out["box"] = np.asarray(table.column("box").to_pylist(), np.float64).reshape(n, 4)
    points = np.full((n, N_LANDMARKS, 2), np.nan)
    for i, value in enumerate(table.column("landmarks").to_pylist()):
        if value is not None:
            points[i] = np.asarray(value, np.float64).reshape(N_LANDMARKS, 2)
    out["landmarks"] = points
    if images:
        frames = []
        for t in tables:  # one part's images at a time: decoded once, resized together
            if t.num_rows:
                frames.extend(_resized(_decoded(t.column("image").to_pylist(), "rgb"), (int(size), int(size)), "rgb"))
        out["images"] = (torch.stack(frames).numpy() if frames else np.zeros((0, 3, int(size), int(size)), np.uint8))
    return out


def embed_frames(embed_fn: Callable[[torch.Tensor], torch.Tensor], images, batch_size: int = 64,
                 device=None) -> np.ndarray:
    """``embed_fn`` of ``images`` in batches, under ``torch.no_grad``: float32 [n, d].

    ``images``: uint8 [n, 3, S, S] (scaled to [0, 1], as the models were
    trained) or float (taken as already in [0, 1]), numpy or torch.  The
    caller puts the model in eval mode; ``device``: where each batch goes.
    """
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise ValueError(f"images must be [n, C, S, S], got shape {tuple(x.shape)}")
    out = []
    with torch.no_grad():
        for i in range(0, len(x), int(batch_size)):
            b = x[i:i + int(batch_size)]
            b = b.float().div_(255.0) if b.dtype == torch.uint8 else b.float()
            if device is not None:
                b = b.to(device)
            out.append(embed_fn(b).detach().float().cpu().reshape(len(b), -1))
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy()
