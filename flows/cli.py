"""The ``sightsound`` command line.

    sightsound samples piano|violin --out DIR [--videos N] [--seconds S] [--seed K]
    sightsound build-pianoyt --manifest M --data-root D [--labeler NAME]
    sightsound build-violinyt (--manifest M | --urmp DIR) --data-root D
    sightsound samples faces --out DIR [--identities N] [--utterances M] [--seconds S] [--seed K]
    sightsound build-voxceleb --metadata (TXT_DIR | TXT.zip | M.csv) --data-root D [--sources TEMPLATE]
    sightsound evaluate voxceleb-crops --data-root D   # dlib re-detection rate of the crops
    sightsound label piano INPUT --out OUT.mid [--labeler NAME] [--reference TRUE.mid]
    sightsound label violin INPUT --out OUT.csv [--rate 100] [--reference TRUE.mid]
    sightsound evaluate pianoyt-labels|violinyt-labels --samples S --data-root D
    sightsound audit violin --samples S [--out TABLE.md]
    sightsound demo [--out DIR]          # sample set + build-pianoyt, the README's quick start
    sightsound samples piano-audio --out DIR --pieces N [--seconds 30]   # rendered pieces, MAESTRO layout
    sightsound train onsets-frames --data DIR --out DIR [--config small|default] [--max-minutes M]
    sightsound describe onsets-frames [--config default|small]
    sightsound evaluate transcription --ref DIR --est [NAME=]DIR [--est ...]

Exit codes of the builds (and ``demo``): 0 every video built; 3 the build
finished but some videos failed (see status.parquet); 2 the manifest or the
arguments were refused before any work started; 1 an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_SOME_FAILED = 0, 1, 2, 3


def _prefect_env(data_root: str | Path) -> None:
    """Keep Prefect's cached task results beside the data they describe.

    Must run before prefect is imported: Prefect reads its settings then.
    Users who set these variables themselves keep their values.
    """
    from tasks.store import storage

    local = Path(data_root) if storage.is_local(data_root) else storage.scratch_dir("prefect")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(local / ".prefect" / "results"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary local server otherwise tries to send telemetry at start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _data_root(text: str) -> str:
    """A local data root made absolute; an fsspec URL (s3://, memory://, ...) kept as it is."""
    from tasks.store import storage

    return storage.root_location(text)


def _print_table(rows: list[dict]) -> None:
    from tasks.datasets.records import format_table

    print(format_table(rows))


def _refused(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_REFUSED


def _runner_option(p) -> None:
    from flows.runners import ENV_VAR, HELP

    p.add_argument("--runner", default=None, metavar="SPEC",
                   help=f"where the tasks run: {HELP} (default: ${ENV_VAR}, else threads)")


def _build_setup(args) -> tuple[str, str | None]:
    """The data root and the checked ``--runner`` of a build command; sets Prefect's environment.

    Raises ValueError for a bad runner spec, before Prefect starts.
    """
    data_root = _data_root(args.data_root)
    runner = _use_runner(args.runner)
    _prefect_env(data_root)
    return data_root, runner


def _use_runner(spec: str | None) -> str | None:
    """Check ``--runner`` before Prefect starts (ValueError); the flow modules read $SIGHTSOUND_RUNNER at import."""
    from flows.runners import ENV_VAR, parse_spec

    parse_spec(spec)
    if spec:
        os.environ[ENV_VAR] = spec
    return spec


def cmd_samples(args) -> int:
    if args.kind == "piano-audio":
        return cmd_samples_piano_audio(args)
    if args.kind == "faces":
        from tasks.samples.faces import make_face_samples

        manifest = make_face_samples(Path(args.out), identities=args.identities, utterances=args.utterances,
                                     seconds=args.seconds if args.seconds is not None else 4.0, seed=args.seed)
        out = Path(args.out)
        print(f"wrote {args.identities} identities x {args.utterances} utterances; manifest: {manifest}")
        print(f"build it: sightsound build-voxceleb --metadata {manifest} --data-root DATA")
        print(f"      or: sightsound build-voxceleb --metadata {out / 'vox1.zip'} "
              f"--sources '{out.resolve() / 'videos'}/{{id}}.mp4' --data-root DATA")
        return EXIT_OK
    if args.seconds is None:
        args.seconds = 20.0
    if args.kind == "piano":
        from tasks.samples.piano import make_piano_samples as make
    else:
        from tasks.samples.violin import make_violin_samples as make
    manifest = make(Path(args.out), videos=args.videos, seconds=args.seconds, seed=args.seed)
    print(f"wrote {args.videos} {args.kind} videos; manifest: {manifest}")
    return EXIT_OK


def _report(result: dict, name: str) -> int:
    print()
    print(f"{name}: {result['root']}")
    _print_table(result["summary"])
    failed = [r for r in result["records"] if r["state"] != "done"]
    for r in failed:
        print(f"  failed {r['video_id']} at {r['stage']}: {r['error']}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def run_build_pianoyt(manifest: Path, data_root: Path, labeler: str = "transkun", device: str = "auto",
                      refresh: bool = False, image_format: str = "png",
                      crop_reference: tuple[int, int] | None = None, acquire_attempts: int = 4,
                      acquire_backoff_s: float = 2.0, checkpoint: str | None = None,
                      runner: str | None = None, label_window_s: float | None = None) -> int:
    from tasks.datasets.manifest import CROP_REFERENCE, ManifestError, read_pianoyt
    from tasks.labels.transcribe import WINDOW_S

    try:
        read_pianoyt(manifest, tuple(crop_reference or CROP_REFERENCE))  # refuse a bad manifest before Prefect starts
        options = _labeler_options(labeler, device, checkpoint)
        runner = _use_runner(runner)
    except (ManifestError, ValueError) as exc:
        return _refused(exc)
    _prefect_env(data_root)
    from flows.build_pianoyt import build_pianoyt
    from flows.runners import run_flow

    result = run_flow(build_pianoyt, runner,
        manifest=str(manifest), data_root=str(data_root), labeler=labeler, labeler_options=options,
        crop_reference=tuple(crop_reference or CROP_REFERENCE), image_format=image_format,
        acquire_attempts=acquire_attempts, acquire_backoff_s=acquire_backoff_s, refresh=refresh,
        label_window_s=WINDOW_S if label_window_s is None else label_window_s,
    )
    return _report(result, "build-pianoyt")


def _size(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. 1920x1080) as two positive integers; argparse refuses anything else with exit 2."""
    from tasks.datasets.manifest import check_crop_reference

    try:
        w, h = text.lower().split("x")
        return check_crop_reference((int(w), int(h)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in whole pixels, e.g. 1920x1080") from None


def cmd_build_pianoyt(args) -> int:
    return run_build_pianoyt(
        Path(args.manifest).resolve(), _data_root(args.data_root), args.labeler, args.device,
        args.refresh, args.image_format, args.crop_reference, args.acquire_attempts, args.acquire_backoff,
        checkpoint=args.checkpoint, runner=args.runner, label_window_s=args.label_window,
    )


def _yin_settings(args) -> dict:
    return {
        "min_midi": args.min_midi, "max_midi": args.max_midi, "min_confidence": args.min_confidence,
        "silence_db": args.silence_db, "tolerance": args.tolerance,
    }


def cmd_build_violinyt(args) -> int:
    from tasks.datasets.manifest import CROP_REFERENCE, ManifestError, read_violin
    from tasks.datasets.urmp import read_urmp

    if bool(args.manifest) == bool(args.urmp):
        return _refused("give exactly one of --manifest (a violin CSV) or --urmp (a URMP folder)")
    reference = tuple(args.crop_reference or CROP_REFERENCE)
    try:
        read_urmp(args.urmp, crop_reference=reference) if args.urmp else read_violin(args.manifest, reference)
    except ManifestError as exc:
        return _refused(exc)
    try:
        data_root, runner = _build_setup(args)
    except ValueError as exc:
        return _refused(exc)
    from flows.build_violinyt import build_violinyt
    from flows.runners import run_flow

    result = run_flow(build_violinyt, runner,
        data_root=str(data_root),
        manifest=str(Path(args.manifest).resolve()) if args.manifest else None,
        urmp=str(Path(args.urmp).resolve()) if args.urmp else None,
        yin=_yin_settings(args), crop_reference=tuple(args.crop_reference or CROP_REFERENCE),
        image_format=args.image_format, acquire_attempts=args.acquire_attempts,
        acquire_backoff_s=args.acquire_backoff, refresh=args.refresh,
    )
    return _report(result, "build-violinyt")


def cmd_label(args) -> int:
    src = Path(args.input)
    if not src.is_file():
        return _refused(f"no such file: {src}")
    if args.kind == "piano":
        from tasks.labels.transcribe import get_transcriber, read_midi, transcribe_file, write_midi

        try:
            options = _labeler_options(args.labeler, args.device, args.checkpoint)
        except ValueError as exc:
            return _refused(exc)
        notes = transcribe_file(src, get_transcriber(args.labeler, **options), args.label_window)
        write_midi(notes, args.out)
        print(f"{len(notes)} notes -> {args.out}")
        if args.reference:
            from tasks.evaluation.scores import note_onset_prf

            print(json.dumps({"note_onset": note_onset_prf(read_midi(args.reference), notes)}))
        return EXIT_OK

    import tempfile

    from tasks.evaluation.audit import melody_scores, true_pitch_hz
    from tasks.media.decode import extract_audio, read_wav
    from tasks.labels.pitch import YinSettings, yin_track

    with tempfile.TemporaryDirectory() as tmp:
        audio, sr = read_wav(extract_audio(src, Path(tmp) / "a.wav", 44100))
    track = yin_track(audio, sr, args.rate, settings=YinSettings(**_yin_settings(args)))
    lines = ["time,midi,hz,confidence"] + [
        f"{t:.4f},{m},{h:.3f},{c:.4f}"
        for t, m, h, c in zip(track["time"], track["midi"], track["hz"], track["confidence"])
    ]
    from tasks.store.atomic import write_text_atomic

    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"{len(track['time'])} frames ({int(track['voiced'].sum())} voiced) -> {args.out}")
    if args.reference:
        if args.rate != 100:
            return _refused("--reference scores at the default --rate 100")
        est = track["hz"] * track["voiced"]
        scores = melody_scores(true_pitch_hz(args.reference, track["time"]), est)
        print(json.dumps({"melody": {k: float(v) for k, v in scores.items()}}))
    return EXIT_OK


def cmd_build_voxceleb(args) -> int:
    from tasks.datasets.manifest import ManifestError
    from tasks.datasets.voxceleb import read_metadata

    if args.detector not in ("hog", "cnn"):
        return _refused(f"unknown detector {args.detector!r}")
    try:
        utts = read_metadata(args.metadata, args.convention, args.sources)  # refuse bad metadata up front
    except ManifestError as exc:
        return _refused(exc)
    print(f"{len(utts)} utterances, boxes read as {utts[0].units}")
    try:
        data_root, runner = _build_setup(args)
    except ValueError as exc:
        return _refused(exc)
    from flows.build_voxceleb import build_voxceleb
    from flows.runners import run_flow

    result = run_flow(build_voxceleb, runner,
        metadata=str(Path(args.metadata).resolve()), data_root=str(data_root), convention=utts[0].units,
        source_template=_absolute_template(args.sources), detector=args.detector, min_iou=args.min_iou,
        margin=args.margin, acquire_attempts=args.acquire_attempts, acquire_backoff_s=args.acquire_backoff,
        refresh=args.refresh,
    )
    return _report(result, "build-voxceleb")


def _absolute_template(template: str) -> str:
    """A local-path source template made absolute, so the flow resolves it the same from any folder."""
    from urllib.parse import urlparse

    if urlparse(template).scheme or Path(template).is_absolute():
        return template
    return str(Path.cwd() / template)


def cmd_evaluate(args) -> int:
    if args.kind == "transcription":
        return cmd_evaluate_transcription(args)
    if not args.data_root:
        return _refused(f"evaluate {args.kind} needs --data-root")
    if args.kind == "voxceleb-crops":
        from tasks.datasets.voxceleb import redetect_build

        rows = redetect_build(_data_root(args.data_root), detector=args.detector)
        if not rows:
            return _refused(f"no face shards under {args.data_root}/voxceleb")
        _print_table(rows)
        return EXIT_OK
    from tasks.evaluation.scores import score_pianoyt_build, score_violinyt_build

    score = score_pianoyt_build if args.kind == "pianoyt-labels" else score_violinyt_build
    if not args.samples:
        return _refused(f"evaluate {args.kind} needs --samples")
    rows = score(Path(args.samples), Path(args.data_root))
    if not rows:
        return _refused("no built video of the data root has a true MIDI in the sample folder")
    _print_table(rows)
    return EXIT_OK


def cmd_audit(args) -> int:
    from tasks.datasets.manifest import ManifestError, read_violin

    try:
        rows = read_violin(Path(args.samples) / "manifest.csv")
    except ManifestError as exc:
        return _refused(exc)
    pairs = [(r.source, str(Path(args.samples) / "midi" / f"{r.video_id}.mid")) for r in rows]
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.audit_violin import audit_violin
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process

    table = audit_violin(pairs=pairs, crepe_model=args.crepe_model, out=args.out)
    print(table)
    return EXIT_OK


def cmd_demo(args) -> int:
    out = Path(args.out).resolve()
    from tasks.samples.piano import make_piano_samples

    manifest = make_piano_samples(out / "samples", videos=args.videos, seconds=args.seconds, seed=args.seed)
    print(f"sample set: {manifest}")
    return run_build_pianoyt(manifest, out / "data", device=args.device)


# ---- Onsets and Frames (issue 5): rendered training set, training, description, scores, labeler options


def _window(text: str) -> float:
    from tasks.labels.transcribe import OVERLAP_S

    value = float(text)
    if value != 0 and value <= 2 * OVERLAP_S:
        raise argparse.ArgumentTypeError(f"a label window must be 0 (the whole file) or over {2 * OVERLAP_S:g} s")
    return value


def _label_window_option(p) -> None:
    from tasks.labels.transcribe import OVERLAP_S, WINDOW_S

    p.add_argument("--label-window", type=_window, default=WINDOW_S, metavar="SECONDS",
                   help=f"piano: transcribe the audio {WINDOW_S:g} s at a time (default), windows overlapping by "
                        f"{OVERLAP_S:g} s, so memory does not grow with its length; 0: the whole file at once")


def _labeler_options(labeler: str, device: str, checkpoint: str | None) -> dict:
    """The options ``get_transcriber`` takes for ``labeler``; ``--checkpoint`` belongs to onsets-frames only."""
    options = {"device": device}
    if labeler == "onsets-frames":
        if not checkpoint:
            raise ValueError("--labeler onsets-frames needs --checkpoint PATH (a checkpoint of train onsets-frames)")
        from tasks.store.cache import file_fingerprint
        from tasks.labels.transcribe import check_labeler

        check_labeler(labeler, {"checkpoint": checkpoint})  # a bad checkpoint: one line, before any work
        options["checkpoint"] = str(Path(checkpoint).resolve())
        options["fingerprint"] = file_fingerprint(checkpoint)  # in the label task's cache key
    elif checkpoint:
        raise ValueError(f"--checkpoint is for --labeler onsets-frames, not {labeler}")
    return options


def cmd_samples_piano_audio(args) -> int:
    from tasks.samples.piano_audio import make_piano_audio

    try:
        csv_path = make_piano_audio(Path(args.out), pieces=args.pieces,
                                    seconds=args.seconds if args.seconds is not None else 30.0, seed=args.seed,
                                    soundfonts=args.soundfont, augmentation=not args.no_augment,
                                    log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        return _refused(exc)
    print(f"wrote {args.pieces} rendered pieces in MAESTRO's layout: {csv_path}")
    return EXIT_OK


def cmd_train(args) -> int:
    from models.onsets_frames import CheckpointError
    from tasks.datasets.maestro import MaestroError, read_maestro
    from tasks.training.onsets_frames import check_resume

    try:
        read_maestro(args.data)  # refuse a bad folder before Prefect starts
        check_resume(args.out, args.config, not args.no_resume)  # and a last.pt the run could not resume from
    except (MaestroError, CheckpointError) as exc:
        return _refused(exc)
    out = Path(args.out).resolve()
    _prefect_env(out)
    from flows.train_onsets_frames import train_onsets_frames
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process

    summary = train_onsets_frames(
        data=str(Path(args.data).resolve()), out_dir=str(out), config=args.config, max_steps=args.max_steps,
        max_minutes=args.max_minutes, batch_size=args.batch_size, window_seconds=args.window_seconds,
        learning_rate=args.learning_rate, validate_every=args.validate_every, device=args.device, amp=args.amp,
        seed=args.seed, resume=not args.no_resume, threads=args.threads,
    )
    print(json.dumps(summary, indent=1))
    return EXIT_OK


def cmd_describe(args) -> int:
    from models.onsets_frames import OnsetsFramesConfig, describe

    print(describe(OnsetsFramesConfig.named(args.config)))
    return EXIT_OK


def _est_dirs(values: list[str]) -> dict:
    out = {}
    for v in values:
        name, _, folder = v.rpartition("=") if "=" in v else ("", "", v)
        out[name or Path(folder).name] = folder
    return out


def cmd_evaluate_transcription(args) -> int:
    if not args.ref or not args.est:
        return _refused("evaluate transcription needs --ref DIR and at least one --est [NAME=]DIR")
    from tasks.datasets.records import format_table
    from tasks.evaluation.scores import score_transcriptions

    try:
        summary, _ = score_transcriptions(args.ref, _est_dirs(args.est))
    except ValueError as exc:
        return _refused(exc)
    table = format_table(summary)
    print(table)
    if args.out:
        from tasks.store.atomic import write_text_atomic

        write_text_atomic(args.out, table + "\n")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.train_onsets_frames import publish_table
    from flows.tempserver import guard

    guard()  # Prefect's temporary server ends with this process

    publish_table(key="evaluate-transcription", rows=summary,
                  description=f"note- and frame-level scores against {args.ref}")
    return EXIT_OK


def _build_options(b) -> None:
    b.add_argument("--data-root", required=True)
    b.add_argument("--crop-reference", type=_size, default=None,
                   help="WxH of the frame the manifest's crop boxes refer to (default 1280x720)")
    b.add_argument("--acquire-attempts", type=int, default=4, help="download attempts per video (default 4)")
    b.add_argument("--acquire-backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubling each time (default 2)")
    b.add_argument("--refresh", action="store_true", help="ignore cached task results and redo every step")
    _runner_option(b)


def _yin_options(p) -> None:
    from tasks.labels.pitch import YinSettings

    d = YinSettings()
    p.add_argument("--min-midi", type=int, default=d.min_midi, help=f"lowest pitch (default {d.min_midi})")
    p.add_argument("--max-midi", type=int, default=d.max_midi, help=f"highest pitch (default {d.max_midi})")
    p.add_argument("--min-confidence", type=float, default=d.min_confidence,
                   help=f"periodicity below which a frame is unvoiced (default {d.min_confidence})")
    p.add_argument("--silence-db", type=float, default=d.silence_db,
                   help=f"level below which a frame is unvoiced (default {d.silence_db})")
    p.add_argument("--tolerance", type=float, default=d.tolerance, help=f"yinfft tolerance (default {d.tolerance})")


def build_parser() -> argparse.ArgumentParser:
    from tasks.labels.transcribe import LABELERS

    p = argparse.ArgumentParser(prog="sightsound", description="Rebuild the sight-to-sound datasets.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("samples", help="generate a sample set in a published manifest format")
    s.add_argument("kind", choices=["piano", "violin", "faces", "piano-audio"])
    s.add_argument("--out", required=True)
    s.add_argument("--videos", type=int, default=3, help="piano, violin")
    s.add_argument("--identities", type=int, default=3, help="faces")
    s.add_argument("--utterances", type=int, default=2, help="faces: utterances per identity")
    s.add_argument("--seconds", type=float, default=None,
                   help="length of each video (piano, violin; default 20) or utterance (faces; default 4)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pieces", type=int, default=48, help="piano-audio: pieces to render (default 48)")
    s.add_argument("--soundfont", action="append", default=None,
                   help="piano-audio: a SoundFont to render with (repeat for several; default TimGM6mb)")
    s.add_argument("--no-augment", action="store_true", help="piano-audio: no gain/EQ/room/noise augmentation")
    s.set_defaults(func=cmd_samples)

    b = sub.add_parser("build-pianoyt", help="build PianoYT shards from a manifest (Prefect flow build-pianoyt)")
    b.add_argument("--manifest", required=True)
    b.add_argument("--labeler", default="transkun", choices=sorted(LABELERS))
    b.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    b.add_argument("--checkpoint", default=None, help="--labeler onsets-frames: the model checkpoint (.pt)")
    b.add_argument("--image-format", default="png", choices=["png", "jpeg"])
    _label_window_option(b)
    _build_options(b)
    b.set_defaults(func=cmd_build_pianoyt)

    v = sub.add_parser("build-violinyt", help="build violin shards (Prefect flow build-violinyt)")
    v.add_argument("--manifest", help="a violin manifest (PianoYT's CSV format, violinist box)")
    v.add_argument("--urmp", help="a folder in URMP's published layout (violin tracks, ground-truth pitch)")
    v.add_argument("--image-format", default="jpeg", choices=["png", "jpeg"])
    _build_options(v)
    _yin_options(v)
    v.set_defaults(func=cmd_build_violinyt)

    f = sub.add_parser("build-voxceleb", help="build VoxCeleb face shards (Prefect flow build-voxceleb)")
    f.add_argument("--metadata", required=True,
                   help="VoxCeleb txt metadata (a folder holding txt/ or a zip of it) or a CSV manifest")
    f.add_argument("--convention", default="auto", choices=["auto", "vox1", "vox2"],
                   help="box units: vox1 pixels of a 360-high frame, vox2 fractions (default: detect)")
    f.add_argument("--sources", default="https://www.youtube.com/watch?v={id}",
                   help="where each YouTube id of txt metadata is downloaded from; a URL or a local path "
                        "with {id} (default: YouTube)")
    f.add_argument("--detector", default="hog", choices=["hog", "cnn"],
                   help="dlib's HOG detector (default) or its CNN detector (for GPU machines)")
    f.add_argument("--min-iou", type=float, default=0.3,
                   help="least overlap of a detection with the metadata box (default 0.3)")
    f.add_argument("--margin", type=float, default=0.4,
                   help="crop margin on each side, as a fraction of the face box (default 0.4)")
    _build_options(f)
    f.set_defaults(func=cmd_build_voxceleb)

    lab = sub.add_parser("label", help="pseudo-label one audio or video file")
    lab.add_argument("kind", choices=["piano", "violin"])
    lab.add_argument("input")
    lab.add_argument("--out", required=True)
    lab.add_argument("--labeler", default="transkun", choices=sorted(LABELERS), help="piano only")
    lab.add_argument("--device", default="auto", help="piano only")
    lab.add_argument("--checkpoint", default=None, help="piano, --labeler onsets-frames: the model checkpoint (.pt)")
    lab.add_argument("--rate", type=float, default=100.0, help="violin: analysis frames per second (default 100)")
    lab.add_argument("--reference", help="true MIDI: print the scores against it")
    _label_window_option(lab)
    _yin_options(lab)
    lab.set_defaults(func=cmd_label)

    e = sub.add_parser("evaluate", help="score a build of a sample set against the samples' true MIDI")
    e.add_argument("kind", choices=["pianoyt-labels", "violinyt-labels", "voxceleb-crops", "transcription"])
    e.add_argument("--samples", help="the sample folder (with midi/<id>.mid); not for voxceleb-crops")
    e.add_argument("--detector", default="hog", choices=["hog", "cnn"], help="voxceleb-crops: dlib detector")
    e.add_argument("--data-root", default=None, help="the build's data root (not for transcription)")
    e.add_argument("--ref", help="transcription: folder of true MIDI files (matched to estimates by file name)")
    e.add_argument("--est", action="append", default=None,
                   help="transcription: [NAME=]folder of estimated MIDI files (repeat to compare systems)")
    e.add_argument("--out", default=None, help="transcription: also write the markdown table here")
    e.set_defaults(func=cmd_evaluate)

    a = sub.add_parser("audit", help="compare pitch trackers on a sample set (violin)")
    a.add_argument("kind", choices=["violin"])
    a.add_argument("--samples", required=True, help="a violin sample folder (manifest.csv, videos/, midi/)")
    a.add_argument("--out", default=None, help="also write the markdown table here")
    a.add_argument("--crepe-model", default="full", choices=["full", "tiny"])
    a.set_defaults(func=cmd_audit)

    d = sub.add_parser("demo", help="generate the piano sample set and build it (the quick start)")
    d.add_argument("--out", default="demo")
    d.add_argument("--videos", type=int, default=3)
    d.add_argument("--seconds", type=float, default=20.0)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="train a model (Prefect flow train-onsets-frames)")
    t.add_argument("kind", choices=["onsets-frames"])
    t.add_argument("--data", required=True, help="a MAESTRO-layout folder (or its CSV)")
    t.add_argument("--out", required=True, help="folder for checkpoints, logs and cached features")
    t.add_argument("--config", default="small", choices=["small", "default"],
                   help="model sizes: small (CPU, default) or default (the paper's)")
    t.add_argument("--max-steps", type=int, default=50000)
    t.add_argument("--max-minutes", type=float, default=None, help="wall-time limit of this run")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--window-seconds", type=float, default=5.12, help="training window length (default 5.12)")
    t.add_argument("--learning-rate", type=float, default=6e-4)
    t.add_argument("--validate-every", type=int, default=250)
    t.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    t.add_argument("--amp", default="auto", choices=["auto", "on", "off"], help="float16 AMP (auto: on CUDA)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/last.pt exists")
    t.set_defaults(func=cmd_train)

    ds = sub.add_parser("describe", help="print a model's layers and parameter count")
    ds.add_argument("kind", choices=["onsets-frames"])
    ds.add_argument("--config", default="default", choices=["default", "small"])
    ds.set_defaults(func=cmd_describe)
    return p


def main(argv: list[str] | None = None) -> int:
    from tasks.store.storage import DataRootBusy

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DataRootBusy as exc:  # another build holds the data root (flows.runners.run_flow)
        return _refused(exc)


if __name__ == "__main__":
    sys.exit(main())
