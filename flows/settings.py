"""The settings of every flow: one typed object per flow, the one place their defaults are written.

Each build flow takes one parameter, ``settings``: a pydantic model below.
Prefect validates it when a run starts (a deployment's parameters too) and
shows its fields, descriptions and defaults in the UI's run form.  The CLI's
flags are made from the same fields (:mod:`flows.cli.options`): the flag is
the field's name with dashes (or ``flag`` in its extra schema), its help is
the description, and its default the field's.  Training takes
:class:`tasks.training.onsets_frames.TrainSettings` and the violin labels
:class:`tasks.labels.pitch.YinSettings`, pydantic dataclasses of the tasks
that use them.

Local paths are made absolute when a settings object is made, so a run reads
the same files from any working folder; URLs are kept as they are.  This
module imports no Prefect: the CLI builds settings before Prefect starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.datasets.manifest import CROP_REFERENCE, check_crop_reference
from tasks.datasets.voxceleb import YOUTUBE_URL
from tasks.labels.pitch import YinSettings
from tasks.labels.transcribe import OVERLAP_S, WINDOW_S
from tasks.store import storage



def _absolute(path: str | None) -> str | None:
    """A local path made absolute; a URL (``scheme://``) or None kept."""
    if path is None or urlparse(str(path)).scheme not in ("", "file"):
        return path
    return str(Path(path).resolve())


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuildSettings(Settings):
    """What every build takes: where the data goes and how downloads are retried."""

    data_root: str = Field(
        description="folder or fsspec URL (s3://, gs://, memory://...) the dataset is built under")
    acquire_attempts: int = Field(4, ge=1, le=100, description="download attempts per video")
    acquire_backoff_s: float = Field(
        2.0, ge=0, description="seconds before the first download retry, doubling each time",
        json_schema_extra={"flag": "acquire-backoff"})
    refresh: bool = Field(False, description="ignore cached task results and redo every step")

    @field_validator("data_root")
    @classmethod
    def _root(cls, value: str) -> str:
        return storage.root_location(value)



class CroppedBuild(BuildSettings):
    """A build that crops each frame to a box the manifest gives."""

    crop_reference: tuple[int, int] = Field(
        CROP_REFERENCE, description="WIDTHxHEIGHT of the frame the manifest's crop boxes refer to")

    @field_validator("crop_reference")
    @classmethod
    def _reference(cls, value) -> tuple[int, int]:
        return check_crop_reference(value)


class PianoLabeling(Settings):
    """How the piano pseudo-labels are made (``build pianoyt`` and ``label piano``)."""

    labeler: Literal["transkun", "onsets-frames"] = Field(
        "transkun", description="the audio transcriber that makes the pseudo-labels")
    device: str = Field("auto", description="where the labeler runs: cpu, cuda or auto")
    checkpoint: str | None = Field(
        None, description="--labeler onsets-frames: its checkpoint (RUN/checkpoints/best.ckpt, or an older best.pt)")
    label_window_s: float = Field(
        WINDOW_S, ge=0, json_schema_extra={"flag": "label-window"},
        description=f"seconds of audio the labeler sees at once, windows overlapping by {OVERLAP_S:g} s, "
                    "so memory does not grow with a video's length; 0: the whole file")

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, value):
        return _absolute(value)

    @field_validator("label_window_s")
    @classmethod
    def _window(cls, value: float) -> float:
        if value != 0 and value <= 2 * OVERLAP_S:
            raise ValueError(f"a label window must be 0 (the whole file) or over {2 * OVERLAP_S:g} s")
        return value


class PianoBuild(CroppedBuild, PianoLabeling):
    """Flow ``build-pianoyt``: a PianoYT manifest to keyboard crops with note labels (thesis ch. 6)."""

    manifest: str = Field(description="a PianoYT manifest (CSV: video id or URL, split, keyboard box)",
        json_schema_extra={"input": True})
    image_format: Literal["png", "jpeg"] = Field("png", description="how the frames are stored")
    av_offset: str | None = Field(
        None, description="a checkpoint of train av-sync: estimate each video's audio-visual offset, record it "
                          "and move the labels by it before the shards are written", json_schema_extra={"input": True})

    @field_validator("manifest", "av_offset")
    @classmethod
    def _path(cls, value):
        return _absolute(value)


class ViolinBuild(CroppedBuild):
    """Flow ``build-violinyt``: violin videos to violinist crops with pitch labels (thesis ch. 5)."""

    manifest: str | None = Field(None, description="a violin manifest (PianoYT's CSV format, violinist box)",
        json_schema_extra={"input": True})
    urmp: str | None = Field(None, description="a folder in URMP's published layout (ground-truth pitch)",
        json_schema_extra={"input": True})
    yin: YinSettings = Field(default_factory=YinSettings, description="aubio yinfft's pitch range and thresholds")
    image_format: Literal["png", "jpeg"] = Field("jpeg", description="how the frames are stored")

    @field_validator("manifest", "urmp")
    @classmethod
    def _path(cls, value):
        return _absolute(value)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.manifest is None) == (self.urmp is None):
            raise ValueError("give exactly one of --manifest (a violin CSV) or --urmp (a URMP folder)")
        return self


class VoxCelebBuild(BuildSettings):
    """Flow ``build-voxceleb``: VoxCeleb metadata to face-track crops checked by dlib."""

    metadata: str = Field(description="VoxCeleb txt metadata (a folder holding txt/, or a zip of it) or a CSV",
        json_schema_extra={"input": True})
    convention: Literal["auto", "vox1", "vox2"] = Field(
        "auto", description="box units: vox1 pixels of a 360-high frame, vox2 fractions; auto: detect")
    sources: str = Field(
        YOUTUBE_URL, description="where each YouTube id is downloaded from: a URL or a local path with {id}")
    detector: Literal["hog", "cnn"] = Field("hog", description="dlib's HOG detector, or its CNN one (GPU)")
    min_iou: float = Field(0.3, gt=0, le=1, description="least overlap of a detection with the metadata box")
    margin: float = Field(0.4, ge=0, le=2, description="crop margin on each side, a fraction of the face box")
    per_second: float = Field(1.0, gt=0, description="face crops kept per second of each utterance")

    @field_validator("metadata", "sources")
    @classmethod
    def _path(cls, value):
        return _absolute(value)


class EvaluationSettings(Settings):
    """What every evaluation of trained checkpoints takes: its subclasses' ``data_root`` and ``checkpoint`` fields."""

    @field_validator("data_root", check_fields=False)
    @classmethod
    def _root(cls, value: str) -> str:
        return storage.root_location(value)

    @field_validator("checkpoint", check_fields=False)
    @classmethod
    def _checkpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one --checkpoint")
        return [_absolute(v) for v in value]


class PianoOnsetsEvaluation(EvaluationSettings):
    """Flow ``evaluate-piano-onsets``: table 1 of thesis ch. 6 for one or more trained checkpoints."""

    data_root: str = Field(description="the data root the models were trained on (its test split is scored)")
    checkpoint: list[str] = Field(description="a checkpoint of train piano-onsets (repeat for several variants)",
                                  json_schema_extra={"input": True})
    reference_midi: str | None = Field(
        None, description="a folder of true MIDI files <video id>.mid (the sample set's midi/): the MIDI test set",
        json_schema_extra={"input": True})
    results: str = Field("RESULTS", description="folder the table is written to (piano-onsets.md and .parquet)")

    @field_validator("reference_midi", "results")
    @classmethod
    def _path(cls, value):
        return _absolute(value)


class ViolinPitchEvaluation(EvaluationSettings):
    """Flow ``evaluate-violin-pitch``: table 2 of thesis ch. 5 for the trained teacher and students."""

    data_root: str = Field(description="the data root the networks were trained on (its test split is scored)")
    checkpoint: list[str] = Field(description="a checkpoint of train violin-pitch (repeat: teacher, students)",
                                  json_schema_extra={"input": True})
    truth_midi: str | None = Field(
        None, description="a folder of true MIDI files <video id>.mid (the sample set's midi/): scores against the "
                          "truth (a URMP build's labels are its truth)", json_schema_extra={"input": True})
    subset: Literal["auto", "Vn1", "VnAll", "VnYT", "URMP"] = Field(
        "auto", description="the thesis subset whose numbers go beside ours (auto: URMP for a URMP build, else VnYT)")
    results: str = Field("RESULTS", description="folder the table is written to (violin-pitch.md and .parquet)")
    figure: str | None = Field(None, description="also draw each test video's pitch tracks, PNGs in this folder")

    @field_validator("truth_midi", "results", "figure")
    @classmethod
    def _path(cls, value):
        return _absolute(value)


class AvMlpEvaluation(EvaluationSettings):
    """Flow ``evaluate-av-mlp``: table 2 of thesis ch. 6, note onsets from noisy audio (``piano-noisy``)."""

    data_root: str = Field(description="the pianoyt data root the MLP was trained on (its test split is scored)")
    checkpoint: list[str] = Field(description="a checkpoint of train av-mlp", json_schema_extra={"input": True})
    reference_midi: str | None = Field(
        None, description="a folder of true MIDI files <video id>.mid (the sample set's midi/): the MIDI test set",
        json_schema_extra={"input": True})
    results: str = Field("RESULTS", description="folder the table is written to (piano-noisy.md and .parquet)")

    @field_validator("reference_midi", "results")
    @classmethod
    def _path(cls, value):
        return _absolute(value)


class AvSyncEvaluation(EvaluationSettings):
    """Flow ``evaluate-av-sync``: the sync network's offset curve (thesis fig. 7.3) and each test video's offset."""

    data_root: str = Field(description="the pianoyt data root the network was trained on (its test split is scored)")
    checkpoint: list[str] = Field(description="a checkpoint of train av-sync", json_schema_extra={"input": True})
    max_shift: float = Field(2.0, gt=0, le=10, description="the curve runs over audio shifts of +- this, s")
    results: str = Field("RESULTS", description="folder the table and curve are written to (av-sync.md, .parquet, "
                                                "av-sync-curve.parquet, av-sync-curve.png)")

    @field_validator("results")
    @classmethod
    def _path(cls, value):
        return _absolute(value)


class FacesEvaluation(EvaluationSettings):
    """Flow ``evaluate-faces``: FAb-Net's probe table and X2Face's L1 and pose table on a face build's test split."""

    data_root: str = Field(description="the data root the face models were trained on (its test split is scored)")
    samples: str = Field(description="the face sample set the build was made from (its per-frame truth: landmarks, "
                                     "pose, mouth opening)", json_schema_extra={"input": True})
    checkpoint: list[str] = Field(description="a checkpoint of train fabnet (repeat: one per variant)",
                                  json_schema_extra={"input": True})
    x2face_checkpoint: list[str] = Field(default_factory=list,
                                         description="a checkpoint of train x2face (repeat: stage I, stage II)",
                                         json_schema_extra={"input": True})
    keypoints_checkpoint: list[str] = Field(
        default_factory=list, description="a checkpoint of train keypoints (repeat: K = 10, K = 30): the landmark "
                                          "table landmarks.md beside FAb-Net's", json_schema_extra={"input": True})
    class_embedding_checkpoint: list[str] = Field(
        default_factory=list, description="a checkpoint of train class-embedding: its embedding's landmark probe "
                                          "in landmarks.md", json_schema_extra={"input": True})
    margin: float = Field(0.4, gt=0, description="the build's crop margin (build voxceleb --margin)")
    seed: int = Field(0, description="seed of the probes, the untrained encoder and the bootstrap")
    results: str = Field("RESULTS", description="folder the tables go to (fabnet.md, x2face.md, landmarks.md and "
                                                ".parquet)")
    figure: str | None = Field(None, description="also draw the landmark, keypoint and X2Face figures, PNGs in "
                                                 "this folder")

    @field_validator("samples", "results", "figure")
    @classmethod
    def _path(cls, value):
        return _absolute(value)

    @field_validator("x2face_checkpoint", "keypoints_checkpoint", "class_embedding_checkpoint")
    @classmethod
    def _x2face(cls, value: list[str]) -> list[str]:
        return [_absolute(v) for v in value]


class LandmarkSetEvaluation(Settings):
    """Flow ``evaluate-landmarks``: the face models' landmark probes on a labelled still-image set (MAFL, 300-W)."""

    labelled_set: Literal["mafl", "300w"] = Field(
        description="mafl: a CelebA folder with MAFL's lists (5 points); 300w: a 300-W folder (68 points); the "
                    "layouts: data_manifests/README.md", json_schema_extra={"flag": "set"})
    root: str = Field(description="the set's folder, as downloaded", json_schema_extra={"input": True})
    checkpoint: list[str] = Field(default_factory=list, description="a checkpoint of train fabnet (repeat)",
                                  json_schema_extra={"input": True})
    keypoints_checkpoint: list[str] = Field(default_factory=list, description="a checkpoint of train keypoints "
                                            "(repeat: K = 10, K = 30)", json_schema_extra={"input": True})
    class_embedding_checkpoint: list[str] = Field(default_factory=list, description="a checkpoint of train "
                                                  "class-embedding", json_schema_extra={"input": True})
    limit: int | None = Field(None, ge=1, description="at most this many faces of each list (the first ones): a "
                                                       "quick look, not the papers' protocol")
    seed: int = Field(0, description="seed of the probes, the untrained networks and the bootstrap")
    results: str = Field("RESULTS", description="folder the table goes to (landmarks-mafl.md or "
                                                "landmarks-300w.md, and .parquet)")
    figure: str | None = Field(None, description="also draw the probes' and keypoints' test predictions, PNGs in "
                                                 "this folder")

    @field_validator("root", "results", "figure")
    @classmethod
    def _path(cls, value):
        return _absolute(value)

    @field_validator("checkpoint", "keypoints_checkpoint", "class_embedding_checkpoint")
    @classmethod
    def _checkpoints(cls, value: list[str]) -> list[str]:
        return [_absolute(v) for v in value]

    @model_validator(mode="after")
    def _some_model(self):
        if not (self.checkpoint or self.keypoints_checkpoint or self.class_embedding_checkpoint):
            raise ValueError("give at least one --checkpoint, --keypoints-checkpoint or --class-embedding-checkpoint")
        return self
