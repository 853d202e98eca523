"""Training the violin pitch networks (thesis ch. 5) on VnYT shards, on the shared trainer: teacher, then students.

Two stages, as the thesis: the audio *teacher* (:class:`PitchTeacherTask`)
learns the pitch class from a spectrogram of the audio around each frame;
then a *student* (:class:`PitchStudentTask`, 1 or 5 frames) learns it from
the frames, with the cross-entropy on the pseudo-labels plus the L1
distillation loss to the frozen teacher's three fully-connected layers
(:func:`models.violin_pitch.distillation_loss`: each layer's term weighted
to equal the cross-entropy, the weights recomputed every step and logged as
``train_w_fc6`` .. ``train_w_fc8``).  ``distill=False`` trains a student on
the cross-entropy alone (the thesis: "did not converge"; measure it).

Both are classifiers over MIDI 55..88 (34 classes).  Unvoiced frames, and
labels outside the range, have target -1 and are left out of every loss and
metric (the thesis treats pitch estimation as classification of the
playing frames; it does not say how silence was handled).  Adam (1e-3),
the LR divided by 10 when the validation loss plateaus and an early stop
after that (the shared trainer's rule); the best checkpoint is kept by the
validation RPA (``val_rpa``: the share of voiced validation frames whose
class is within one semitone; ``val_pa``: exact).

The splits are the build's: ``train`` and ``val`` are disjoint parts of the
same videos (the build drops the 4 frames between them, so no 5-frame
window crosses the boundary), ``test`` the left-out videos.  Every network
sees the same windows: the middle frames of the 5-frame windows
(:class:`tasks.training.windows.FrameWindows`).

Augmentation of the students' frames (the chapter gives none; the piano
chapter's is used): resize to ``size * 150/145`` (414 x 207 for 400 x 200),
a random ``size`` crop, brightness jitter and Gaussian noise at 1% of the
image mean on 40% of the windows, the same draw for a window's frames.  The
teacher's audio is not augmented.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from models.violin_pitch import DISTILL_LAYERS, PitchStudent, PitchTeacher, ViolinPitchConfig, distillation_loss
from tasks.training.trainer import CheckpointError, TrainerSettings, fit, read_checkpoint, seed


@dataclass
class ViolinPitchSettings:
    """One training run of a violin pitch network: the data, the stage, the model, and how the trainer runs."""

    data_root: str = Field(description="the data root of a build-violinyt build (D, holding D/violinyt/shards)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    stage: Literal["teacher", "student", "all"] = Field(
        "all", description="teacher (audio), student (frames), or all: the teacher, then the students "
                           "(5 frames, 1 frame, 5 frames without distillation) in folders of --out")
    frames: int = Field(5, description="student input frames: 1 or 5 (fusion module)")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: VGG-M widths, 400x200 frames; small: CPU widths, 200x100 frames")
    teacher: str | None = Field(None, description="the teacher's checkpoint (students with distillation)")
    distill: bool = Field(True, description="distil from the teacher (off: cross-entropy alone)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam's learning rate")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, windows per loader worker")
    thesis_batches: bool = Field(
        True, description="batch 64 for the teacher and the 1-frame student, 24 for 5 frames (the thesis); "
                          "off: --batch-size for every stage")

    @field_validator("frames")
    @classmethod
    def _frames(cls, value: int) -> int:
        if value not in (1, 5):
            raise ValueError(f"frames must be 1 or 5, not {value}")
        return value


STUDENTS = ((5, True), (1, True), (5, False))  # (frames, distill) of the students a stage-"all" run trains


def stage_settings(settings: ViolinPitchSettings) -> list[ViolinPitchSettings]:
    """The runs ``settings`` stands for: itself, or for stage ``all`` the teacher then the students.

    With ``all``, each run goes to a folder of ``--out`` named by
    :func:`run_name` (``teacher``, ``student-5``, ``student-1``,
    ``student-5-nodistill``) and the students distil from
    ``teacher/checkpoints/best.ckpt`` unless ``teacher`` names another.
    """
    import dataclasses

    def batch(s: ViolinPitchSettings) -> ViolinPitchSettings:
        if not s.thesis_batches or s.stage == "all":
            return s
        size = 24 if s.stage == "student" and s.frames == 5 else 64
        return dataclasses.replace(s, trainer=dataclasses.replace(s.trainer, batch_size=size))

    if settings.stage != "all":
        return [batch(settings)]
    root = Path(settings.trainer.run_dir)
    teacher_ckpt = settings.teacher or str(root / "teacher" / "checkpoints" / "best.ckpt")

    def at(name: str) -> TrainerSettings:
        return dataclasses.replace(settings.trainer, run_dir=str(root / name))

    runs = [] if settings.teacher else [dataclasses.replace(settings, stage="teacher", trainer=at("teacher"))]
    for frames, distill in STUDENTS:
        s = dataclasses.replace(settings, stage="student", frames=frames, distill=distill, teacher=teacher_ckpt)
        runs.append(dataclasses.replace(s, trainer=at(run_name(s))))
    return [batch(r) for r in runs]


def masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the frames with a class (target >= 0); 0 (with a graph) when a batch has none."""
    keep = target >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], target[keep])


class _PitchTask(L.LightningModule):
    """What the teacher and the students share: classes, validation metrics, the optimiser."""

    monitor = ("val_rpa", "max")  # the best checkpoint
    plateau = ("val_loss", "min")  # LR division and early stop (the thesis: "when the loss on the validation set plateaus")
    clip_norm = None  # the thesis clips nothing

    def _inputs(self, batch) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _validation_metrics(self) -> None:
        from torchmetrics import MeanMetric

        self.val_rpa_metric, self.val_pa_metric = MeanMetric(), MeanMetric()

    def validation_step(self, batch, batch_idx):
        logits = self(self._inputs(batch))
        target = batch["target"]
        self.log("val_loss", masked_ce(logits, target), prog_bar=True, sync_dist=True, batch_size=len(target))
        keep = target >= 0
        if bool(keep.any()):
            error = (logits[keep].argmax(dim=1) - target[keep]).abs()
            self.val_rpa_metric.update((error <= 1).float())
            self.val_pa_metric.update((error == 0).float())

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val_rpa": self.val_rpa_metric.compute(), "val_pa": self.val_pa_metric.compute()},
                      prog_bar=True)
        self.val_rpa_metric.reset()
        self.val_pa_metric.reset()


    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate)


class PitchTeacherTask(_PitchTask):
    """The audio teacher: spectrogram of the audio around the frame -> pitch class, cross-entropy."""

    resume_keys = ("stage", "config")

    def __init__(self, config: str = "small", learning_rate: float = 1e-3, stage: str = "teacher"):
        super().__init__()
        self.save_hyperparameters()  # plain values only, so checkpoints load with weights_only=True
        self.net = PitchTeacher(ViolinPitchConfig.named(config, "teacher"))
        self._validation_metrics()

    @property
    def audio_samples(self) -> int:
        return self.net.config.segment_samples

    def _inputs(self, batch) -> torch.Tensor:
        return batch["audio"]

    def training_step(self, batch, batch_idx):
        loss = masked_ce(self(batch["audio"]), batch["target"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["target"]))
        return loss


class PitchStudentTask(_PitchTask):
    """A visual student (1 or 5 frames): cross-entropy plus, with ``distill``, L1 to the frozen teacher's layers.

    The teacher is read from ``teacher`` (a :class:`PitchTeacherTask`
    checkpoint) when training starts and is kept outside the module's
    parameters, so a student checkpoint holds the student only and loads
    without the teacher's file.
    """

    resume_keys = ("stage", "config", "frames", "distill")

    def __init__(self, config: str = "small", frames: int = 5, learning_rate: float = 1e-3, distill: bool = True,
                 teacher: str | None = None, stage: str = "student"):
        super().__init__()
        self.save_hyperparameters()
        self.net = PitchStudent(ViolinPitchConfig.named(config, "student", frames))
        self._validation_metrics()
        self._teacher: list = []  # [PitchTeacher] once loaded; a list keeps it out of the module's state

    @property
    def input_size(self) -> tuple[int, int]:
        return self.net.config.height, self.net.config.width

    @property
    def audio_samples(self) -> int | None:
        return ViolinPitchConfig.named(self.hparams.config, "teacher").segment_samples if self.hparams.distill else None

    def load_teacher(self) -> None:
        """Read the teacher checkpoint (refused in one line if it is not a violin teacher of this size)."""
        if not self.hparams.distill or self._teacher:
            return
        if not self.hparams.teacher:
            raise CheckpointError("a distilled student needs the teacher's checkpoint (--teacher CKPT), "
                                  "or --no-distill")
        teacher = load_net(self.hparams.teacher, stage="teacher", config=self.hparams.config)
        teacher.eval().requires_grad_(False)
        self._teacher = [teacher]

    def on_fit_start(self) -> None:
        self.load_teacher()
        if self._teacher:
            self._teacher[0].to(self.device)

    def _inputs(self, batch) -> torch.Tensor:
        return batch["frames"]

    def training_step(self, batch, batch_idx):
        target = batch["target"]
        logits, feats = self.net.forward_features(batch["frames"])
        ce = masked_ce(logits, target)
        loss = ce
        n = len(target)
        if self.hparams.distill:
            keep = target >= 0
            with torch.no_grad():
                self._teacher[0].eval()
                _, teacher_feats = self._teacher[0].forward_features(batch["audio"])
            if bool(keep.any()):
                distill, weights = distillation_loss([f[keep] for f in feats], [f[keep] for f in teacher_feats], ce)
                loss = ce + distill
                self.log_dict({f"train_w_{k}": w for k, w in zip(DISTILL_LAYERS, weights)}, batch_size=n)
                self.log("train_distill", distill, batch_size=n)
        self.log("train_ce", ce, batch_size=n)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        return loss


def load_net(checkpoint: str | Path, stage: str | None = None, config: str | None = None, frames: int | None = None):
    """The network of a violin pitch checkpoint (teacher or student), in eval mode; CheckpointError otherwise."""
    return net_of(read_checkpoint(checkpoint), checkpoint, stage, config, frames)


def net_of(ckpt: dict, checkpoint: str | Path, stage: str | None = None, config: str | None = None,
           frames: int | None = None):
    """:func:`load_net` of a checkpoint already read (``read_checkpoint``); ``checkpoint`` names it in errors."""
    hp = ckpt["hyper_parameters"]
    if hp.get("stage") not in ("teacher", "student") or "config" not in hp:
        raise CheckpointError(f"{checkpoint}: not a violin pitch checkpoint (a checkpoint of "
                              f"{hp.get('variant') and 'the piano onset model' or 'another model'})")
    for key, want in (("stage", stage), ("config", config), ("frames", frames)):
        if want is not None and hp.get(key, 1 if key == "frames" else None) != want:
            raise CheckpointError(f"{checkpoint}: a violin pitch {key} {hp.get(key)!r} checkpoint, not {want!r}")
    if hp["stage"] == "teacher":
        net = PitchTeacher(ViolinPitchConfig.named(hp["config"], "teacher"))
    else:
        net = PitchStudent(ViolinPitchConfig.named(hp["config"], "student", int(hp["frames"])))
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint}: its weights do not fit the network it names "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return net.eval()


def check_shards(data_root: str, splits=("train", "val")) -> None:
    """ValueError (one line, the file named) unless ``splits`` have violin shards of 400 x 200 (h x w) RGB frames.

    The loader would resize any frame to the network's input, so frames of
    another size (a piano build's 145 x 800 keyboards, a build by other
    settings) would train without an error and mean nothing: refused here.
    """
    import pyarrow.parquet as pq

    from tasks.datasets.violinyt import CROP_SIZE, layout
    from tasks.media import decode as media
    from tasks.store import storage
    from tasks.training.windows import split_parts

    shards = layout(data_root).shards
    for split in splits:
        part = split_parts(shards, split)[0]
        fs, path = storage.fs_of(part)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            missing = {"image", "midi", "audio_path", "audio_sample"} - set(pf.schema_arrow.names)
            if missing:
                raise ValueError(f"{part}: not a violin shard (no {', '.join(sorted(missing))} column)")
            first = next(pf.iter_batches(batch_size=1, columns=["image"])).column("image")[0].as_py()
        shape = np.asarray(media.decode_image(first)).shape
        if shape[:2] != CROP_SIZE or (len(shape) == 3 and shape[2] not in (3, 4)) or len(shape) == 2:
            raise ValueError(f"{part}: frames are {shape[0]}x{shape[1]}{'' if len(shape) == 3 else ' grayscale'}, "
                             f"not the {CROP_SIZE[0]}x{CROP_SIZE[1]} (h x w) RGB violinist crops of build-violinyt")


def windows(data_root: str, split: str, module: _PitchTask, *, train: bool, seed: int, buffer_size: int = 256):
    """The :class:`FrameWindows` of ``split`` that ``module`` trains or validates on."""
    from tasks.datasets.violinyt import layout
    from tasks.training.windows import FrameWindows, PitchLabels

    lay = layout(data_root)
    labels = PitchLabels(lay.root, audio_samples=module.audio_samples)
    if isinstance(module, PitchTeacherTask):
        return FrameWindows(lay.shards, split, labels=labels, images=False, shuffle=train,
                            buffer_size=buffer_size, seed=seed)
    return FrameWindows(lay.shards, split, labels=labels, color="rgb", frames=module.hparams.frames,
                        size=module.input_size, shuffle=train, augment=train, buffer_size=buffer_size, seed=seed)


def make_module(settings: ViolinPitchSettings) -> _PitchTask:
    if settings.stage == "teacher":
        return PitchTeacherTask(settings.config, settings.learning_rate)
    module = PitchStudentTask(settings.config, settings.frames, settings.learning_rate, settings.distill,
                              str(Path(settings.teacher).resolve()) if settings.teacher else None)
    module.load_teacher()  # a missing or wrong teacher is refused before any training
    return module


def network_name(stage: str, frames: int = 5, distill: bool = True) -> str:
    """``teacher``, ``student-5``, ``student-1``, ``student-5-nodistill``: a stage's folder and its table row."""
    if stage == "teacher":
        return "teacher"
    return f"student-{int(frames)}" + ("" if distill else "-nodistill")


def run_name(settings: ViolinPitchSettings) -> str:
    """The folder of ``settings``'s stage in a training flow (:func:`network_name`)."""
    return network_name(settings.stage, settings.frames, settings.distill)


def train(settings: ViolinPitchSettings, log=print, callbacks=()) -> dict:
    """Train one stage (teacher or student) under ``settings.trainer.run_dir``; return the trainer's summary."""
    from tasks.training.trainer import make_loader as _loader

    if settings.stage == "all":
        raise ValueError("stage 'all' is several runs: train each of stage_settings(settings)")
    (settings,) = stage_settings(settings)  # the thesis's batch size for this stage
    run = Path(settings.trainer.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    seed(settings.trainer)  # the initial weights follow --seed
    module = make_module(settings)
    data_seed = settings.trainer.seed
    train_set = windows(settings.data_root, "train", module, train=True, seed=data_seed, buffer_size=settings.buffer_size)
    val_set = windows(settings.data_root, "val", module, train=False, seed=data_seed)
    log(f"violin-pitch {run_name(settings)}/{settings.config}: {train_set.units} train and "
        f"{val_set.units} validation row groups")
    (run / "run_settings.json").write_text(json.dumps(
        {"violin_pitch": {k: v for k, v in vars(settings).items() if k != "trainer"},
         "trainer": vars(settings.trainer)}, indent=1, default=str) + "\n")
    summary = fit(module, _loader(train_set, settings.trainer, True), _loader(val_set, settings.trainer, False),
                  settings.trainer, callbacks)
    return {**summary, "stage": settings.stage, "frames": settings.frames, "distill": settings.distill,
            "config": settings.config}
