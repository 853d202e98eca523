"""Flow ``regenerate-benchmarks``: every results table from one command, reusing what has not changed.

For each benchmark of the registry (:mod:`tasks.benchmarks`) and the chosen
profile, in order:

1. **Data.** The sample set is generated into ``WORK/data/<name>/samples``
   (skipped when its manifest is there: the generators are deterministic)
   and built by the build flow into ``WORK/data/<name>/root`` (the build's
   own caching makes a rebuild a no-op).  ``<name>`` is derived from the
   arguments, so entries that ask for the same data share one build.
2. **Trainings.** Each in ``WORK/runs/<table>/<run>``.  Its *key*
   (:func:`tasks.benchmarks.training_key`: settings, budget, the build's
   shard digest, the digest of the code under ``models/`` and ``tasks/``,
   the seed) is written to ``inputs.json`` when it starts; a finished run
   with the same key is reused and not trained again; an unfinished one with
   the same key resumes from its ``last.ckpt``; a run folder made from other
   inputs is cleared first, so a stale checkpoint is never resumed.
3. **Evaluation.** The model's evaluation flow writes ``OUT/<table>.md`` and
   ``.parquet``, the papers' numbers beside ours, with provenance.
4. **Report.** ``OUT/README.md`` (and ``.html``): every table, ours against
   the paper, each evaluation's figures and a training curve per run
   (:mod:`tasks.evaluation.report`); also the flow run's markdown artifact,
   and a table artifact per results table.
5. **Check** (``check=OLD``): every number that moved beyond its interval
   from the tables in ``OLD`` (:mod:`tasks.evaluation.compare`), in
   ``OUT/check.md``.

The runs are in-process here; running each training as a deployment run on
the GPU pool is the next step (issue 19).  Returns, per table, the paths
written and, per training, whether it was reused.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from prefect import flow, get_run_logger

from tasks.benchmarks import (Benchmark, SampleData, Training, code_digest, record_inputs, reusable, select,
                              training_key)


def _sample_set(data: SampleData, folder: Path) -> Path:
    """Generate the sample set once (the generators are deterministic); return its manifest."""
    done = folder / "regenerate-manifest.txt"
    if done.is_file():
        return Path(done.read_text().strip())
    if data.generator == "piano":
        from tasks.samples.piano import make_piano_samples as make
    elif data.generator == "faces":
        from tasks.samples.faces import make_face_samples as make
    else:
        raise ValueError(f"no sample generator {data.generator!r} in regenerate-benchmarks yet")
    manifest = make(folder, **data.args)
    done.write_text(f"{manifest}\n")
    return Path(manifest)


def _build(data: SampleData, manifest: Path, root: Path) -> list:
    """Build the sample set (cached by the build flow); return the shard files it holds."""
    from tasks.training.windows import split_parts

    if data.build == "pianoyt":
        from flows.build_pianoyt import build_pianoyt
        from flows.settings import PianoBuild
        from tasks.datasets.pianoyt import layout

        build_pianoyt(settings=PianoBuild(manifest=str(manifest), data_root=str(root), **data.build_args))
    elif data.build == "voxceleb":
        from flows.build_voxceleb import build_voxceleb
        from flows.settings import VoxCelebBuild
        from tasks.datasets.voxceleb import layout

        build_voxceleb(settings=VoxCelebBuild(metadata=str(manifest), data_root=str(root), **data.build_args))
    else:
        raise ValueError(f"no build {data.build!r} in regenerate-benchmarks yet")
    shards, files = layout(str(root)).shards, []
    for split in ("train", "val", "test"):  # (a piano build holds its validation videos in train)
        try:
            files += split_parts(shards, split)
        except ValueError:
            pass
    return files


# model -> (settings class, flow); the flow takes settings= and strict_gpu_limit=
def _trainers() -> dict:
    from flows.train_av_sync import train_av_sync
    from flows.train_class_embedding import train_class_embedding
    from flows.train_fabnet import train_fabnet
    from flows.train_keypoints import train_keypoints
    from flows.train_piano_onsets import train_piano_onsets
    from flows.train_x2face import train_x2face
    from tasks.training.av_sync import SyncSettings
    from tasks.training.class_embedding import ClassEmbeddingSettings
    from tasks.training.fabnet import FabNetSettings
    from tasks.training.keypoints import KeypointSettings
    from tasks.training.piano_onsets import PianoOnsetsSettings
    from tasks.training.x2face import X2FaceSettings

    return {"piano-onsets": (PianoOnsetsSettings, train_piano_onsets), "av-sync": (SyncSettings, train_av_sync),
            "fabnet": (FabNetSettings, train_fabnet), "x2face": (X2FaceSettings, train_x2face),
            "keypoints": (KeypointSettings, train_keypoints),
            "class-embedding": (ClassEmbeddingSettings, train_class_embedding)}


def _summary_of(result: dict) -> dict:
    """The trainer's summary from a training flow's return: itself, or the one run of ``{name: summary}``."""
    if "steps" in result:
        return result
    (summary,) = result.values()
    if "error" in summary:
        raise RuntimeError(summary["error"])
    return summary


def _train(training: Training, data_root: str, run_dir: Path, seed: int) -> dict:
    from tasks.training.trainer import TrainerSettings

    trainers = _trainers()
    if training.model not in trainers:
        raise ValueError(f"no training {training.model!r} in regenerate-benchmarks yet")
    settings_class, train_flow = trainers[training.model]
    trainer = TrainerSettings(run_dir=str(run_dir), seed=seed, progress_bar=False, **training.trainer)
    settings = settings_class(data_root=data_root, trainer=trainer, **training.settings)
    return _summary_of(train_flow(settings=settings, strict_gpu_limit=False))


def _evaluate(bench: Benchmark, data_root: str, samples: Path, checkpoints: dict, out: Path) -> dict:
    """Run the benchmark's evaluation flow on ``checkpoints`` (``{training name: (model, path)}``)."""
    paths = [p for _, p in checkpoints.values()]
    if bench.evaluation == "piano-onsets":
        from flows.evaluate_piano_onsets import evaluate_piano_onsets
        from flows.settings import PianoOnsetsEvaluation

        midi = str(samples / "midi") if bench.evaluation_args.get("reference_midi") else None
        result = evaluate_piano_onsets(settings=PianoOnsetsEvaluation(
            data_root=data_root, checkpoint=paths, reference_midi=midi, results=str(out)))
        return {"markdown": [result["markdown"]]}
    if bench.evaluation == "av-sync":
        from flows.evaluate_av_sync import evaluate_av_sync
        from flows.settings import AvSyncEvaluation

        result = evaluate_av_sync(settings=AvSyncEvaluation(data_root=data_root, checkpoint=paths, results=str(out)))
        return {"markdown": [result["markdown"]], "figures": [result["figure"]] if result.get("figure") else []}
    if bench.evaluation == "faces":
        from flows.evaluate_faces import evaluate_faces
        from flows.settings import FacesEvaluation

        of = {m: [p for model, p in checkpoints.values() if model == m]
              for m in ("fabnet", "x2face", "keypoints", "class-embedding")}
        result = evaluate_faces(settings=FacesEvaluation(
            data_root=data_root, samples=str(samples), checkpoint=of["fabnet"], x2face_checkpoint=of["x2face"],
            keypoints_checkpoint=of["keypoints"], class_embedding_checkpoint=of["class-embedding"],
            results=str(out), figure=str(out / "figures")))
        return {"markdown": [result[k] for k in ("fabnet", "x2face", "landmarks", "following") if result.get(k)],
                "figures": result["figures"]}
    raise ValueError(f"no evaluation {bench.evaluation!r} in regenerate-benchmarks yet")


def _one_training(training: Training, data_root: str, run_dir: Path, digest: str, code: str, seed: int) -> dict:
    """Reuse, resume or start one training; return its summary with ``reused``."""
    log = get_run_logger()
    key = training_key(training, digest, code, seed)
    done = reusable(run_dir, key)
    if done is not None:
        log.info("regenerate: %s reused (inputs unchanged, key %s)", run_dir, key)
        return {**done, "reused": True, "key": key}
    inputs = run_dir / "inputs.json"
    if run_dir.exists():
        try:
            old = json.loads(inputs.read_text()).get("key") if inputs.is_file() else None
        except ValueError:
            old = None
        if old != key:  # made from other inputs (or unknown ones): never resume its checkpoints
            log.info("regenerate: %s was made from other inputs; starting it again", run_dir)
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    inputs.write_text(json.dumps({"key": key, "finished": False}) + "\n")
    summary = _train(training, data_root, run_dir, seed)
    record_inputs(run_dir, key, training, digest, code, seed)
    return {**summary, "reused": False, "key": key}


def _publish(out_dir: Path, report_md: str, tables: dict) -> None:
    """The report as the flow run's markdown artifact, and each results table as a table artifact."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from tasks.evaluation.compare import read_rows

    create_markdown_artifact(key="results-report", markdown=Path(report_md).read_text(),
                             description=f"{out_dir}/README.md")
    for info in tables.values():
        for md in info["markdown"]:
            parquet = Path(md).with_suffix(".parquet")
            if parquet.is_file():
                key = "results-" + "".join(c if c.isalnum() else "-" for c in parquet.stem.lower())
                create_table_artifact(key=key, table=read_rows(parquet), description=str(parquet))


@flow(name="regenerate-benchmarks")
def regenerate_benchmarks(profile: str = "sample", out: str = "RESULTS", only: list[str] | None = None,
                          seed: int = 0, work: str | None = None, check: str | None = None) -> dict:
    """Build, train (or reuse) and evaluate every benchmark of ``only`` (all when empty) in ``profile``; write the
    report; with ``check``, compare the tables with those in that folder."""
    from tasks.evaluation.compare import compare_folders, format_check
    from tasks.evaluation.report import write_report
    from tasks.evaluation.results import git_commit, shards_digest

    log = get_run_logger()
    out_dir = Path(out).resolve()
    work_dir = Path(work).resolve() if work else out_dir / "work"
    code = code_digest()
    report: dict = {"profile": profile, "seed": seed, "code_digest": code, "git_commit": git_commit(),
                    "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tables": {}}
    start = time.monotonic()
    for bench in select(only):
        if profile not in bench.data:
            raise ValueError(f"{bench.table}: no {profile!r} profile (it has {', '.join(bench.data)})")
        t0 = time.monotonic()
        data = bench.data[profile]
        folder = work_dir / "data" / data.name
        manifest = _sample_set(data, folder / "samples")
        files = _build(data, manifest, folder / "root")
        data_root, digest = str(folder / "root"), shards_digest(files)
        runs = {}
        for training in bench.trainings[profile]:
            runs[training.name] = _one_training(training, data_root, work_dir / "runs" / bench.table / training.name,
                                                digest, code, seed)
        models = {t.name: t.model for t in bench.trainings[profile]}
        checkpoints = {n: (models[n], r.get("best_checkpoint") or r["last_checkpoint"]) for n, r in runs.items()}
        written = _evaluate(bench, data_root, folder / "samples", checkpoints, out_dir)
        report["tables"][bench.table] = {
            **written, "data_root": data_root, "data_digest": digest,
            "trainings": {n: {"reused": r["reused"], "key": r["key"], "steps": r.get("steps"),
                              "wall_s": r.get("wall_s"), "metrics_csv": r.get("metrics_csv")}
                          for n, r in runs.items()},
            "wall_s": round(time.monotonic() - t0, 1)}
        log.info("regenerate: %s written (%s)", bench.table, ", ".join(written["markdown"]))
    report["wall_s"] = round(time.monotonic() - start, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "regenerate.json").write_text(json.dumps(report, indent=1) + "\n")
    report["report"] = write_report(out_dir)
    _publish(out_dir, report["report"], report["tables"])
    if check:
        moved, tables = compare_folders(check, out_dir)
        (out_dir / "check.md").write_text(format_check(moved, tables, check, out_dir))
        report["check"] = {"moved": len(moved), "markdown": str(out_dir / "check.md")}
        log.info("regenerate: %d numbers moved against %s (%s)", len(moved), check, out_dir / "check.md")
    return report
