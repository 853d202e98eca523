"""The ``sightsound`` command line.

    sightsound samples piano --out DIR [--videos N] [--seconds S] [--seed K]
    sightsound build-pianoyt --manifest M --data-root D [--labeler NAME]
    sightsound label piano INPUT --out OUT.mid [--labeler NAME] [--reference TRUE.mid]
    sightsound evaluate pianoyt-labels --samples S --data-root D
    sightsound demo [--out DIR]          # sample set + build-pianoyt, the README's quick start

Exit codes of ``build-pianoyt`` (and ``demo``): 0 every video built; 3 the
build finished but some videos failed (see status.parquet); 2 the manifest or
the arguments were refused before any work started; 1 an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_REFUSED, EXIT_SOME_FAILED = 0, 1, 2, 3


def _prefect_env(data_root: Path) -> None:
    """Keep Prefect's cached task results beside the data they describe.

    Must run before prefect is imported: Prefect reads its settings then.
    Users who set these variables themselves keep their values.
    """
    cache = data_root / ".prefect"
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(cache / "results"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary local server otherwise tries to send telemetry at start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _print_table(rows: list[dict]) -> None:
    from tasks.dataset import format_table

    print(format_table(rows))


def cmd_samples(args) -> int:
    if args.kind == "piano":
        from tasks.samples.piano import make_piano_samples

        manifest = make_piano_samples(Path(args.out), videos=args.videos, seconds=args.seconds, seed=args.seed)
        print(f"wrote {args.videos} piano videos; manifest: {manifest}")
        return EXIT_OK
    print(f"unknown sample kind {args.kind!r}", file=sys.stderr)
    return EXIT_REFUSED


def run_build_pianoyt(manifest: Path, data_root: Path, labeler: str = "transkun", device: str = "auto",
                      refresh: bool = False, image_format: str = "png",
                      crop_reference: tuple[int, int] | None = None, acquire_attempts: int = 4,
                      acquire_backoff_s: float = 2.0) -> int:
    from tasks.manifest import CROP_REFERENCE, ManifestError, read_pianoyt

    try:
        read_pianoyt(manifest)  # refuse a bad manifest before Prefect starts anything
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    _prefect_env(data_root)
    from flows.build_pianoyt import build_pianoyt

    result = build_pianoyt(
        manifest=str(manifest),
        data_root=str(data_root),
        labeler=labeler,
        labeler_options={"device": device},
        crop_reference=tuple(crop_reference or CROP_REFERENCE),
        image_format=image_format,
        acquire_attempts=acquire_attempts,
        acquire_backoff_s=acquire_backoff_s,
        refresh=refresh,
    )
    print()
    print(f"build-pianoyt: {result['root']}")
    _print_table(result["summary"])
    failed = [r for r in result["records"] if r["state"] != "done"]
    for r in failed:
        print(f"  failed {r['video_id']} at {r['stage']}: {r['error']}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def cmd_build_pianoyt(args) -> int:
    return run_build_pianoyt(
        Path(args.manifest).resolve(), Path(args.data_root).resolve(), args.labeler, args.device,
        args.refresh, args.image_format, args.crop_reference, args.acquire_attempts, args.acquire_backoff,
    )


def cmd_label(args) -> int:
    if args.kind != "piano":
        print(f"unknown label kind {args.kind!r}", file=sys.stderr)
        return EXIT_REFUSED
    from tasks.transcribe import get_transcriber, read_midi, transcribe_file, write_midi

    src = Path(args.input)
    if not src.is_file():
        print(f"error: no such file: {src}", file=sys.stderr)
        return EXIT_REFUSED
    transcriber = get_transcriber(args.labeler, device=args.device)
    notes = transcribe_file(src, transcriber)
    write_midi(notes, args.out)
    print(f"{len(notes)} notes -> {args.out}")
    if args.reference:
        from tasks.evaluate import note_onset_prf

        score = note_onset_prf(read_midi(args.reference), notes)
        print(json.dumps({"note_onset": score}))
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from tasks.evaluate import score_pianoyt_build

    rows = score_pianoyt_build(Path(args.samples), Path(args.data_root))
    if not rows:
        print("error: no built video of the data root has a true MIDI in the sample folder", file=sys.stderr)
        return EXIT_REFUSED
    _print_table(rows)
    return EXIT_OK


def cmd_demo(args) -> int:
    out = Path(args.out).resolve()
    from tasks.samples.piano import make_piano_samples

    manifest = make_piano_samples(out / "samples", videos=args.videos, seconds=args.seconds, seed=args.seed)
    print(f"sample set: {manifest}")
    return run_build_pianoyt(manifest, out / "data", device=args.device)


def build_parser() -> argparse.ArgumentParser:
    from tasks.transcribe import LABELERS

    p = argparse.ArgumentParser(prog="sightsound", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("samples", help="generate a sample set in a published manifest format")
    s.add_argument("kind", choices=["piano"])
    s.add_argument("--out", required=True)
    s.add_argument("--videos", type=int, default=3)
    s.add_argument("--seconds", type=float, default=20.0)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_samples)

    b = sub.add_parser("build-pianoyt", help="build PianoYT shards from a manifest (Prefect flow build-pianoyt)")
    b.add_argument("--manifest", required=True)
    b.add_argument("--data-root", required=True)
    b.add_argument("--labeler", default="transkun", choices=sorted(LABELERS))
    b.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    b.add_argument("--image-format", default="png", choices=["png", "jpeg"])
    b.add_argument("--crop-reference", type=_size, default=None,
                   help="WxH of the frame the manifest's crop boxes refer to (default 1280x720)")
    b.add_argument("--acquire-attempts", type=int, default=4, help="download attempts per video (default 4)")
    b.add_argument("--acquire-backoff", type=float, default=2.0,
                   help="seconds before the first retry, doubling each time (default 2)")
    b.add_argument("--refresh", action="store_true", help="ignore cached task results and redo every step")
    b.set_defaults(func=cmd_build_pianoyt)

    lab = sub.add_parser("label", help="pseudo-label one audio or video file")
    lab.add_argument("kind", choices=["piano"])
    lab.add_argument("input")
    lab.add_argument("--out", required=True)
    lab.add_argument("--labeler", default="transkun", choices=sorted(LABELERS))
    lab.add_argument("--device", default="auto")
    lab.add_argument("--reference", help="true MIDI: print the note-onset precision, recall and F1")
    lab.set_defaults(func=cmd_label)

    e = sub.add_parser("evaluate", help="score a build of a sample set against the samples' true MIDI")
    e.add_argument("kind", choices=["pianoyt-labels"])
    e.add_argument("--samples", required=True, help="the sample folder (with midi/<id>.mid)")
    e.add_argument("--data-root", required=True)
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="generate the piano sample set and build it (the quick start)")
    d.add_argument("--out", default="demo")
    d.add_argument("--videos", type=int, default=3)
    d.add_argument("--seconds", type=float, default=20.0)
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--device", default="auto")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
