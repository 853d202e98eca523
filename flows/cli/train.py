"""``sightsound train onsets-frames|piano-onsets|violin-pitch|fabnet|x2face|keypoints|class-embedding|av-sync|
av-mlp`` and ``sightsound describe ...`` of the same models."""

from __future__ import annotations

import json

import click

from flows.cli.common import EXIT_OK, prefect_env
from flows.cli.options import Refused, make, settings_options
from tasks.training.av_mlp import AvMlpSettings
from tasks.training.av_sync import SyncSettings
from tasks.training.onsets_frames import TrainSettings
from tasks.training.piano_onsets import PianoOnsetsSettings
from tasks.training.fabnet import FabNetSettings
from tasks.training.class_embedding import ClassEmbeddingSettings
from tasks.training.keypoints import KeypointSettings
from tasks.training.violin_pitch import ViolinPitchSettings
from tasks.training.x2face import X2FaceSettings

EXAMPLES = """Examples:

\b
  sightsound samples piano-audio --out rendered --pieces 48
  sightsound train onsets-frames --data rendered --out runs/of --max-minutes 60
  sightsound train onsets-frames --data maestro-v3.0.0 --out runs/of-paper --config default --device cuda
  sightsound describe onsets-frames --config default
  sightsound train piano-onsets --data-root D --out runs/slope --variant slope --config small --max-minutes 30
  sightsound describe piano-onsets --variant slope --config paper
  sightsound train violin-pitch --data-root D --out runs/violin --config small --max-minutes 30
  sightsound train violin-pitch --data-root D --out runs/v5 --stage student --frames 5 --teacher runs/violin/teacher/checkpoints/best.ckpt
  sightsound describe violin-pitch --kind student --frames 5 --config paper
  sightsound train fabnet --data-root D --out runs/fabnet --every-variant --config small --max-minutes 30
  sightsound describe fabnet --config paper --sources 3
  sightsound train x2face --data-root D --out runs/x2face --config small --max-minutes 30
  sightsound train x2face --data-root D --out runs/x2face-2 --stage II --identity-weights vgg_face.pth --init runs/x2face/checkpoints/best.ckpt
  sightsound train keypoints --data-root D --out runs/keypoints-10 --keypoints 10 --max-minutes 30
  sightsound train keypoints --data-root D --out runs/keypoints-30 --keypoints 30 --loss perceptual --perceptual-weights vgg19.pth
  sightsound train class-embedding --data-root D --out runs/class-embedding --max-minutes 30
  sightsound train av-sync --data-root D --out runs/av-sync --config small --max-minutes 30
  sightsound describe av-sync --config paper
  sightsound train av-mlp --data-root D --out runs/av-mlp --onsets-frames runs/of/checkpoints/best.ckpt \\
      --visual runs/slope/checkpoints/best.ckpt --batch-size 256
"""


@click.group(epilog=EXAMPLES)
def train():
    """Train a model (a Prefect flow run; resumes from OUT/checkpoints/last.ckpt)."""


@train.command("onsets-frames", epilog=EXAMPLES)
@settings_options(TrainSettings)
def onsets_frames(**params) -> int:
    """Onsets and Frames on a MAESTRO-layout folder (flow train-onsets-frames, on the shared trainer)."""
    from tasks.datasets.maestro import MaestroError
    from tasks.training.onsets_frames import check_resume, recordings
    from tasks.training.trainer import CheckpointError

    settings = make(TrainSettings, params)
    try:  # refuse what would fail before Prefect starts: a bad folder, a last.ckpt it cannot go on from
        recordings(settings.data)
        check_resume(settings.out_dir, settings.config, settings.resume)  # (or an old trainer's run folder)
        settings.trainer_settings()  # amp on without CUDA
    except (MaestroError, CheckpointError, ValueError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.out_dir)
    from flows.tempserver import guard
    from flows.train_onsets_frames import train_onsets_frames

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_onsets_frames(settings=settings), indent=1))
    return EXIT_OK


@train.command("piano-onsets", epilog=EXAMPLES)
@settings_options(PianoOnsetsSettings)
def piano_onsets(**params) -> int:
    """The visual piano onset model of thesis ch. 6 on a PianoYT build (flow train-piano-onsets)."""
    from tasks.training.trainer import CheckpointError, read_checkpoint
    from tasks.datasets.pianoyt import layout as pianoyt_layout
    from tasks.training.windows import split_parts

    settings = make(PianoOnsetsSettings, params)
    try:  # refuse what would fail before Prefect starts: no shards, a last.ckpt it cannot go on from
        split_parts(pianoyt_layout(settings.data_root).shards, "train")
        last = settings.trainer.last_checkpoint
        if settings.trainer.resume and last.is_file():
            read_checkpoint(last, {"variant": settings.variant, "config": settings.config})
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_piano_onsets import train_piano_onsets

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_piano_onsets(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("violin-pitch", epilog=EXAMPLES)
@settings_options(ViolinPitchSettings)
def violin_pitch(**params) -> int:
    """The violin pitch networks of thesis ch. 5 on a VnYT build: teacher, then students (flow train-violin-pitch).

    --max-minutes is each stage's budget.
    """
    from tasks.training.trainer import CheckpointError, read_checkpoint
    from tasks.training.violin_pitch import check_shards, load_net, stage_settings

    settings = make(ViolinPitchSettings, params)
    try:  # refuse what would fail before Prefect starts: no shards, a wrong teacher, a last.ckpt of another stage
        check_shards(settings.data_root)  # violin shards with 400 x 200 RGB frames in train and val
        if settings.teacher:
            load_net(settings.teacher, stage="teacher", config=settings.config)
        elif settings.stage == "student" and settings.distill:
            raise ValueError("--stage student distils from a teacher: give --teacher CKPT (or --no-distill)")
        for stage in stage_settings(settings):
            last = stage.trainer.last_checkpoint
            if stage.trainer.resume and last.is_file():
                keys = {"stage": stage.stage, "config": stage.config}
                if stage.stage == "student":
                    keys.update(frames=stage.frames, distill=stage.distill)
                read_checkpoint(last, keys)
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_violin_pitch import train_violin_pitch

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_violin_pitch(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("fabnet", epilog=EXAMPLES)
@settings_options(FabNetSettings)
def fabnet(**params) -> int:
    """FAb-Net on a VoxCeleb build: one variant, or the table's three (flow train-fabnet).

    --max-minutes is each run's budget.
    """
    from tasks.training.fabnet import variant_settings
    from tasks.training.faces import check_shards
    from tasks.training.trainer import CheckpointError, read_checkpoint

    settings = make(FabNetSettings, params)
    try:  # refuse what would fail before Prefect starts: no face shards, a last.ckpt of another variant
        check_shards(settings.data_root)
        for _, run in variant_settings(settings):
            last = run.trainer.last_checkpoint
            if run.trainer.resume and last.is_file():
                read_checkpoint(last, {"model": "fabnet", "config": run.config, "sources": run.sources,
                                       "curriculum": run.curriculum})
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_fabnet import train_fabnet

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_fabnet(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("x2face", epilog=EXAMPLES)
@settings_options(X2FaceSettings)
def x2face(**params) -> int:
    """X2Face on a VoxCeleb build: stage I (L1), or stage II with the identity losses (flow train-x2face)."""
    from tasks.training.faces import check_shards
    from tasks.training.trainer import CheckpointError, read_checkpoint
    from tasks.training.x2face import load_identity_weights, load_net

    try:  # refuse what would fail before Prefect starts: no face shards, bad weights, a foreign last.ckpt
        settings = make(X2FaceSettings, params)
        check_shards(settings.data_root)
        if settings.identity_weights:
            load_identity_weights(settings.identity_weights)
        if settings.init:
            load_net(settings.init)
        last = settings.trainer.last_checkpoint
        if settings.trainer.resume and last.is_file():
            read_checkpoint(last, {"model": "x2face", "config": settings.config, "sources": settings.sources,
                                   "stage": settings.stage})
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_x2face import train_x2face

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_x2face(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("keypoints", epilog=EXAMPLES)
@settings_options(KeypointSettings)
def keypoints(**params) -> int:
    """Jakab et al.'s keypoint bottleneck on a VoxCeleb build (flow train-keypoints)."""
    from tasks.training.faces import check_shards
    from tasks.training.keypoints import KeypointTask, load_perceptual
    from tasks.training.trainer import CheckpointError, read_checkpoint

    try:  # refuse what would fail before Prefect starts: no face shards, bad VGG weights, a foreign last.ckpt
        settings = make(KeypointSettings, params)
        check_shards(settings.data_root)
        if settings.perceptual_weights:
            load_perceptual(settings.perceptual_weights)
        last = settings.trainer.last_checkpoint
        if settings.trainer.resume and last.is_file():
            read_checkpoint(last, {"model": "keypoints", "config": settings.config, "keypoints": settings.keypoints,
                                   "loss": settings.loss, "warps": settings.warps}, KeypointTask.resume_defaults)
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_keypoints import train_keypoints

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_keypoints(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("class-embedding", epilog=EXAMPLES)
@settings_options(ClassEmbeddingSettings)
def class_embedding(**params) -> int:
    """The class-embedding network's hierarchical warp on a VoxCeleb build (flow train-class-embedding)."""
    from tasks.training.faces import check_shards
    from tasks.training.trainer import CheckpointError, read_checkpoint

    try:  # refuse what would fail before Prefect starts: no face shards, a foreign last.ckpt
        settings = make(ClassEmbeddingSettings, params)
        check_shards(settings.data_root)
        last = settings.trainer.last_checkpoint
        if settings.trainer.resume and last.is_file():
            read_checkpoint(last, {"model": "class-embedding", "config": settings.config, "loss": settings.loss})
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_class_embedding import train_class_embedding

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_class_embedding(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("av-sync", epilog=EXAMPLES)
@settings_options(SyncSettings)
def av_sync(**params) -> int:
    """The audio-visual sync network of thesis ch. 7 on a PianoYT build and its audio (flow train-av-sync)."""
    from tasks.training.av_sync import check_data
    from tasks.training.trainer import CheckpointError, read_checkpoint

    settings = make(SyncSettings, params)
    try:  # refuse what would fail before Prefect starts: no shards or audio, a last.ckpt of another network
        check_data(settings.data_root)
        last = settings.trainer.last_checkpoint
        if settings.trainer.resume and last.is_file():
            read_checkpoint(last, {"config": settings.config, "max_shift": settings.max_shift})
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_av_sync import train_av_sync

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_av_sync(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@train.command("av-mlp", epilog=EXAMPLES)
@settings_options(AvMlpSettings)
def av_mlp(**params) -> int:
    """The audio-visual MLP of thesis ch. 6 table 2 on noisy mixtures of a PianoYT build (flow train-av-mlp)."""
    from tasks.training.av_mlp import check_settings
    from tasks.training.trainer import CheckpointError, read_checkpoint

    settings = make(AvMlpSettings, params)
    try:  # refuse what would fail before Prefect starts: checkpoints of other models, no shards, a foreign last.ckpt
        check_settings(settings)
        last = settings.trainer.last_checkpoint
        if settings.trainer.resume and last.is_file():
            read_checkpoint(last, {"snr": settings.snr, "mix_seed": settings.mix_seed})
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.trainer.run_dir)
    from flows.tempserver import guard
    from flows.train_av_mlp import train_av_mlp

    guard()  # Prefect's temporary server ends with this process
    click.echo(json.dumps(train_av_mlp(settings=settings, strict_gpu_limit=False), indent=1))
    return EXIT_OK


@click.group(epilog=EXAMPLES)
def describe():
    """Print a model's layers and parameter count."""


@describe.command("onsets-frames", epilog=EXAMPLES)
@click.option("--config", default="default", type=click.Choice(["default", "small"]), show_default=True,
              help="model sizes: the paper's, or the small CPU one")
def describe_onsets_frames(config) -> int:
    """Onsets and Frames' layers and parameter count."""
    from models.onsets_frames import OnsetsFramesConfig, describe as text

    click.echo(text(OnsetsFramesConfig.named(config)))
    return EXIT_OK


@describe.command("piano-onsets", epilog=EXAMPLES)
@click.option("--variant", default="slope", type=click.Choice(["resnet", "aggregation", "slope"]), show_default=True,
              help="resnet, + aggregation module, + slope module")
@click.option("--config", default="paper", type=click.Choice(["paper", "small"]), show_default=True,
              help="the thesis sizes, or the small CPU ones")
def describe_piano_onsets(variant, config) -> int:
    """The visual onset model's layers, output shapes and parameter counts."""
    from models.piano_onsets import PianoOnsetsConfig, describe as text

    click.echo(text(PianoOnsetsConfig.named(config, variant)))
    return EXIT_OK


@describe.command("violin-pitch", epilog=EXAMPLES)
@click.option("--kind", default="student", type=click.Choice(["teacher", "student"]), show_default=True,
              help="the audio teacher or a visual student")
@click.option("--frames", default=5, type=click.Choice(["1", "5"]), show_default=True,
              help="student input frames (5: with the fusion module)")
@click.option("--config", default="paper", type=click.Choice(["paper", "small"]), show_default=True,
              help="the thesis sizes (VGG-M widths, 400x200), or the small CPU ones")
def describe_violin_pitch(kind, frames, config) -> int:
    """A violin pitch network's layers, output shapes and parameter counts."""
    from models.violin_pitch import ViolinPitchConfig, describe as text

    click.echo(text(ViolinPitchConfig.named(config, kind, 1 if kind == "teacher" else int(frames))))
    return EXIT_OK


@describe.command("fabnet", epilog=EXAMPLES)
@click.option("--config", default="paper", type=click.Choice(["paper", "small"]), show_default=True,
              help="the supplementary's sizes (256x256), or the small CPU ones (64x64)")
@click.option("--sources", default="1", type=click.Choice(["1", "3"]), show_default=True,
              help="source frames (3: with the confidence decoder)")
def describe_fabnet(config, sources) -> int:
    """FAb-Net's layers, output shapes and parameter counts."""
    from models.fabnet import FabNetConfig, describe as text

    click.echo(text(FabNetConfig.named(config, confidence=sources == "3"), int(sources)))
    return EXIT_OK


@describe.command("keypoints", epilog=EXAMPLES)
@click.option("--config", default="paper", type=click.Choice(["paper", "small"]), show_default=True,
              help="the paper's sizes (128x128 frames, first block 32 channels), or the small CPU ones")
@click.option("--keypoints", default=10, type=click.IntRange(1), show_default=True, help="K")
def describe_keypoints(config, keypoints) -> int:
    """The keypoint bottleneck's layers, output shapes and parameter counts."""
    from models.keypoints import KeypointConfig, describe as text

    click.echo(text(KeypointConfig.named(config, keypoints)))
    return EXIT_OK


@describe.command("class-embedding", epilog=EXAMPLES)
@click.option("--config", default="paper", type=click.Choice(["paper", "small"]), show_default=True,
              help="the paper's sizes (256x256 frames, levels 32/64/128), or the small CPU ones")
def describe_class_embedding(config) -> int:
    """The class-embedding network's layers, output shapes and parameter counts."""
    from models.class_embedding import ClassEmbeddingConfig, describe as text

    click.echo(text(ClassEmbeddingConfig.named(config)))
    return EXIT_OK


@describe.command("av-sync", epilog=EXAMPLES)
@click.option("--config", default="paper", type=click.Choice(["paper", "small"]), show_default=True,
              help="the thesis sizes (145x800 frames, CREPE-size audio stream), or the small CPU ones")
def describe_av_sync(config) -> int:
    """The sync network's two streams: layers, output shapes and parameter counts."""
    from models.av_sync import SyncConfig, describe as text

    click.echo(text(SyncConfig.named(config)))
    return EXIT_OK
