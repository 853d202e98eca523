"""``sightsound evaluate ...`` and ``sightsound audit violin``: score builds, labels and transcriptions."""

from __future__ import annotations

from pathlib import Path

import click

from flows.cli.common import EXIT_OK, prefect_env, print_table, quiet_server
from flows.cli.options import Refused, make, settings_options
from flows.settings import (AvMlpEvaluation, AvSyncEvaluation, FacesEvaluation, LandmarkSetEvaluation,
                            PianoOnsetsEvaluation, ViolinPitchEvaluation)

EXAMPLES = """Examples:

\b
  sightsound evaluate pianoyt-labels --samples demo/samples --data-root demo/data
  sightsound evaluate violinyt-labels --samples violin-samples --data-root data
  sightsound evaluate voxceleb-crops --data-root data
  sightsound evaluate transcription --ref rendered/test --est transkun=out/transkun --est of=out/of
  sightsound evaluate piano-onsets --data-root D --checkpoint runs/slope/checkpoints/best.ckpt \\
      --checkpoint runs/resnet/checkpoints/best.ckpt --reference-midi samples/midi
  sightsound evaluate violin-pitch --data-root D --checkpoint runs/violin/teacher/checkpoints/best.ckpt \\
      --checkpoint runs/violin/student-5/checkpoints/best.ckpt --truth-midi violin-samples/midi --figure figs
  sightsound evaluate faces --data-root D --samples face-samples --checkpoint runs/fabnet/fabnet/checkpoints/best.ckpt \\
      --x2face-checkpoint runs/x2face/checkpoints/best.ckpt --keypoints-checkpoint runs/keypoints-10/checkpoints/best.ckpt \\
      --class-embedding-checkpoint runs/class-embedding/checkpoints/best.ckpt --figure figs
  sightsound evaluate landmarks --set mafl --root CELEBA --keypoints-checkpoint runs/keypoints-10/checkpoints/best.ckpt \\
      --checkpoint runs/fabnet/fabnet-curriculum/checkpoints/best.ckpt --figure figs
  sightsound evaluate av-sync --data-root D --checkpoint runs/av-sync/checkpoints/best.ckpt
  sightsound evaluate av-mlp --data-root D --checkpoint runs/av-mlp/checkpoints/best.ckpt --reference-midi samples/midi
  sightsound audit violin --samples violin-samples --out audit.md
  sightsound audit violin --samples violin-samples --recordings violin-hard --out audit.md --figure audit.png
"""

samples_option = click.option("--samples", required=True, type=click.Path(exists=True, file_okay=False),
                              help="the sample folder the build was made from (with midi/<id>.mid)")
data_root_option = click.option("--data-root", required=True, help="the build's data root")


@click.group(epilog=EXAMPLES)
def evaluate():
    """Score a build, or transcriptions, against the truth."""


def _scores(rows: list[dict], empty: str) -> int:
    if not rows:
        raise Refused(empty)
    print_table(rows)
    return EXIT_OK


def _label_scores(dataset: str, score_name: str, what: str) -> None:
    """``evaluate <dataset>-labels``: ``tasks.evaluation.scores.<score_name>`` of a build of a sample set."""

    @evaluate.command(f"{dataset}-labels", epilog=EXAMPLES, help=what)
    @samples_option
    @data_root_option
    def command(samples, data_root) -> int:
        from tasks.evaluation import scores

        return _scores(getattr(scores, score_name)(Path(samples), Path(data_root)),
                       "no built video of the data root has a true MIDI in the sample folder")


_label_scores("pianoyt", "score_pianoyt_build",
              "Note-onset P/R/F1 of a piano build's pseudo-labels against the samples' true MIDI.")
_label_scores("violinyt", "score_violinyt_build",
              "Raw pitch accuracy of a violin build's labels against the samples' true MIDI.")


@evaluate.command("voxceleb-crops", epilog=EXAMPLES)
@data_root_option
@click.option("--detector", default="hog", type=click.Choice(["hog", "cnn"]), show_default=True,
              help="dlib's detector")
def voxceleb_crops(data_root, detector) -> int:
    """In how many stored face crops dlib finds exactly one face again."""
    from tasks.datasets.voxceleb import redetect_build
    from tasks.store import storage

    return _scores(redetect_build(storage.root_location(data_root), detector=detector),
                   f"no face shards under {data_root}/voxceleb")


def _est_dirs(values: tuple[str, ...]) -> dict:
    out = {}
    for v in values:
        name, _, folder = v.rpartition("=") if "=" in v else ("", "", v)
        out[name or Path(folder).name] = folder
    return out


@evaluate.command("transcription", epilog=EXAMPLES)
@click.option("--ref", required=True, type=click.Path(exists=True, file_okay=False),
              help="folder of true MIDI files (matched to estimates by file name)")
@click.option("--est", required=True, multiple=True, metavar="[NAME=]DIR",
              help="folder of estimated MIDI files (repeat to compare systems)")
@click.option("--out", type=click.Path(dir_okay=False), help="also write the markdown table here")
def transcription(ref, est, out) -> int:
    """Note- and frame-level mir_eval scores of transcription folders (flow evaluate-transcription)."""
    from tasks.datasets.records import format_table
    from tasks.evaluation.scores import score_transcriptions

    try:
        summary, _ = score_transcriptions(ref, _est_dirs(est))
    except ValueError as exc:
        raise Refused(exc) from None
    table = format_table(summary)
    click.echo(table)
    if out:
        from tasks.store.atomic import write_text_atomic

        write_text_atomic(out, table + "\n")
    quiet_server()
    from flows.evaluate_transcription import evaluate_transcription
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    evaluate_transcription(key="evaluate-transcription", rows=summary,
                           description=f"note- and frame-level scores against {ref}")
    return EXIT_OK


@evaluate.command("piano-onsets", epilog=EXAMPLES)
@settings_options(PianoOnsetsEvaluation)
def piano_onsets(**params) -> int:
    """Thesis ch. 6 table 1: note-onset P/R/Acc/F1 of trained models on the test split (evaluate-piano-onsets)."""
    from tasks.datasets.pianoyt import layout as pianoyt_layout
    from tasks.training.trainer import CheckpointError, read_checkpoint
    from tasks.training.windows import split_parts

    settings = make(PianoOnsetsEvaluation, params)
    try:
        split_parts(pianoyt_layout(settings.data_root).shards, "test")
        for checkpoint in settings.checkpoint:
            read_checkpoint(checkpoint, None)
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.results)
    from flows.evaluate_piano_onsets import evaluate_piano_onsets
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    out = evaluate_piano_onsets(settings=settings)
    print_table(out["rows"])
    click.echo(f"written: {out['markdown']} and {out['parquet']}")
    return EXIT_OK


@evaluate.command("violin-pitch", epilog=EXAMPLES)
@settings_options(ViolinPitchEvaluation)
def violin_pitch(**params) -> int:
    """Thesis ch. 5 table 2: RPA, RPA tol, PA, ACA, ACE of the teacher and students on the test split."""
    from tasks.training.trainer import CheckpointError
    from tasks.training.violin_pitch import check_shards, load_net

    settings = make(ViolinPitchEvaluation, params)
    try:
        check_shards(settings.data_root, ("test",))
        for checkpoint in settings.checkpoint:
            load_net(checkpoint)  # a checkpoint of another model is refused here, in one line
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.results)
    from flows.evaluate_violin_pitch import evaluate_violin_pitch
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    out = evaluate_violin_pitch(settings=settings)
    print_table(out["rows"])
    click.echo(f"written: {out['markdown']} and {out['parquet']}" + (
        f"; figures: {', '.join(out['figures'])}" if out.get("figures") else ""))
    return EXIT_OK


def _one_pianoyt_checkpoint(settings, model: str, load) -> None:
    """Refuse, in one line, a data root without a pianoyt test split, other than one ``--checkpoint``, or a
    checkpoint ``load`` does not take (one of another model); then point Prefect at the results folder."""
    from tasks.datasets.pianoyt import layout
    from tasks.training.trainer import CheckpointError
    from tasks.training.windows import split_parts

    try:
        split_parts(layout(settings.data_root).shards, "test")
        if len(settings.checkpoint) != 1:
            raise ValueError(f"give one --checkpoint of train {model}")
        load(settings.checkpoint[0])
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.results)


@evaluate.command("av-sync", epilog=EXAMPLES)
@settings_options(AvSyncEvaluation)
def av_sync(**params) -> int:
    """Thesis ch. 7: the sync network's offset curve (fig. 7.3) and each test video's audio-visual offset."""
    from tasks.training.av_sync import load_net

    settings = make(AvSyncEvaluation, params)
    _one_pianoyt_checkpoint(settings, "av-sync", load_net)
    from flows.evaluate_av_sync import evaluate_av_sync
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    out = evaluate_av_sync(settings=settings)
    print_table(out["rows"])
    click.echo(f"written: {out['markdown']}, {out['parquet']} and {out['figure']}")
    return EXIT_OK


@evaluate.command("av-mlp", epilog=EXAMPLES)
@settings_options(AvMlpEvaluation)
def av_mlp(**params) -> int:
    """Thesis ch. 6 table 2: note onsets from noisy audio, Onsets and Frames alone against the audio-visual MLP."""
    from tasks.training.av_mlp import load_task

    settings = make(AvMlpEvaluation, params)
    _one_pianoyt_checkpoint(settings, "av-mlp", load_task)
    from flows.evaluate_av_mlp import evaluate_av_mlp
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    out = evaluate_av_mlp(settings=settings)
    print_table(out["rows"])
    click.echo(f"written: {out['markdown']} and {out['parquet']}")
    return EXIT_OK


@evaluate.command("faces", epilog=EXAMPLES)
@settings_options(FacesEvaluation)
def faces(**params) -> int:
    """FAb-Net's linear probes (landmarks, pose, mouth) and X2Face's test L1 and pose on a face build's test split."""
    from tasks.training.fabnet import load_net
    from tasks.training.faces import check_shards
    from tasks.training.class_embedding import load_net as load_class_embedding
    from tasks.training.keypoints import load_net as load_keypoints
    from tasks.training.trainer import CheckpointError
    from tasks.training.x2face import load_net as load_x2face

    settings = make(FacesEvaluation, params)
    try:
        check_shards(settings.data_root, ("train", "val", "test"))
        if not (Path(settings.samples) / "truth.json").is_file():
            raise ValueError(f"{settings.samples}: not a face sample set (no truth.json)")
        for checkpoint in settings.checkpoint:
            load_net(checkpoint)  # a checkpoint of another model is refused here, in one line
        for checkpoint in settings.x2face_checkpoint:
            load_x2face(checkpoint)
        for checkpoint in settings.keypoints_checkpoint:
            load_keypoints(checkpoint)
        for checkpoint in settings.class_embedding_checkpoint:
            load_class_embedding(checkpoint)
    except (ValueError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.results)
    from flows.evaluate_faces import evaluate_faces
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    out = evaluate_faces(settings=settings)
    print_table(out["fabnet_rows"])
    for key in ("x2face_rows", "landmark_rows", "following_rows"):
        if out.get(key):
            print_table(out[key])
    written = [out["fabnet"]] + [out[k] for k in ("x2face", "landmarks", "following") if out.get(k)]
    click.echo(f"written: {', '.join(written)}" + (f"; figures: {', '.join(out['figures'])}" if out["figures"] else ""))
    return EXIT_OK


@click.group(epilog=EXAMPLES)
def audit():
    """Compare label makers on a sample set."""


@audit.command("violin", epilog=EXAMPLES)
@samples_option
@click.option("--recordings", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="also score a folder of *.wav recordings with their *.mid (samples violin-hard or "
                   "violin-recordings); repeatable")
@click.option("--out", type=click.Path(dir_okay=False), help="also write the markdown tables here")
@click.option("--figure", type=click.Path(dir_okay=False), help="draw one excerpt: truth, raw and default labels (PNG)")
@click.option("--crepe-model", default="full", type=click.Choice(["full", "tiny"]), show_default=True,
              help="torchcrepe's model size")
def audit_violin(samples, recordings, out, figure, crepe_model) -> int:
    """yinfft step by step, librosa pYIN and torchcrepe against the true MIDI (flow audit-violin)."""
    from tasks.datasets.manifest import ManifestError, read_violin

    try:
        rows = read_violin(Path(samples) / "manifest.csv")
    except ManifestError as exc:
        raise Refused(exc) from None
    pairs = [(r.source, str(Path(samples) / "midi" / f"{r.video_id}.mid")) for r in rows]
    sets = {}
    for folder in recordings:
        found = [(str(w), str(w.with_suffix(".mid"))) for w in sorted(Path(folder).glob("*.wav"))]
        if not found:
            raise Refused(f"{folder}: no .wav recordings (make some with: sightsound samples violin-hard --out DIR)")
        missing = [m for _, m in found if not Path(m).is_file()]
        if missing:
            raise Refused(f"{missing[0]}: the true MIDI of a recording is missing")
        sets[Path(folder).name] = found
    quiet_server()
    from flows.audit_violin import audit_violin as flow
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    click.echo(flow(pairs=pairs, crepe_model=crepe_model, out=out, recordings=sets, figure=figure))
    return EXIT_OK


@evaluate.command("landmarks", epilog=EXAMPLES)
@settings_options(LandmarkSetEvaluation)
def landmarks(**params) -> int:
    """The face models' landmark probes on MAFL or 300-W as downloaded: RESULTS/landmarks-<set>.md."""
    from tasks.datasets.face_annotations import AnnotationError
    from tasks.evaluation.annotated import check_root
    from tasks.training.class_embedding import load_net as load_class_embedding
    from tasks.training.fabnet import load_net
    from tasks.training.keypoints import load_net as load_keypoints
    from tasks.training.trainer import CheckpointError

    settings = make(LandmarkSetEvaluation, params)
    try:
        check_root(settings.labelled_set, settings.root)  # the lists and points, before any work
        for checkpoints, load in ((settings.checkpoint, load_net), (settings.keypoints_checkpoint, load_keypoints),
                                  (settings.class_embedding_checkpoint, load_class_embedding)):
            for checkpoint in checkpoints:
                load(checkpoint)  # a checkpoint of another model is refused here, in one line
    except (ValueError, AnnotationError, CheckpointError) as exc:
        raise Refused(exc) from None
    prefect_env(settings.results)
    from flows.evaluate_faces import evaluate_landmarks
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process
    out = evaluate_landmarks(settings=settings)
    print_table(out["rows"])
    click.echo(f"written: {out['markdown']} and {out['parquet']}" + (f"; {out['following']}" if out.get("following")
                                                                      else ""))
    return EXIT_OK
