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
   shard digest, the digest of the code under ``models/`` and ``tasks/``
   but ``tasks/evaluation/`` and the registry, the seed, the keys of the
   trainings it needs) is written to ``inputs.json`` when it starts; a finished run
   with the same key is reused and not trained again; an unfinished one with
   the same key resumes from its ``last.ckpt``; a run folder made from other
   inputs is cleared first, so a stale checkpoint is never resumed.
3. **Evaluation.** The model's evaluation flow writes ``OUT/<table>.md`` and
   ``.parquet``, the papers' numbers beside ours, with provenance.  Every
   file it writes under ``OUT`` is kept in ``WORK/evaluations/<table>``
   with the evaluation's key (:func:`tasks.benchmarks.evaluation_key`: the
   data, the keys of the trainings it reads, the code under ``models/``,
   ``tasks/`` and ``flows/``, the seed); a later run with the same key
   copies those files instead of evaluating again.
4. **Report.** ``OUT/README.md`` (and ``.html``): every table, ours against
   the paper, each evaluation's figures and a training curve per run
   (:mod:`tasks.evaluation.report`); also the flow run's markdown artifact,
   and a table artifact per results table.
5. **Check** (``check=OLD``): every number that moved beyond its interval
   from the tables in ``OLD`` (:mod:`tasks.evaluation.compare`), in
   ``OUT/check.md``.

The trainings run in this process (``dispatch="local"``) or as runs of
their training deployments on the GPU pool (``dispatch="deployments"``,
see :class:`_Work`); the flow itself runs as a deployment too
(``regenerate-benchmarks/sample`` and the scheduled
``regenerate-benchmarks/retrain-weekly`` of ``deploy/prefect.yaml``).
Returns, per table, the paths written and, per training and evaluation,
whether it was reused.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from prefect import flow, get_run_logger

from tasks.benchmarks import (EVALUATION_DIRS, PUBLISHED, Benchmark, PublishedData, SampleData, Training,
                              code_digest, evaluation_key, find_training, plan, record_inputs, reusable,
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
    elif data.generator == "violin":
        from tasks.samples.violin import make_violin_samples as make
    elif data.generator == "piano-audio":
        from tasks.samples.piano_audio import make_piano_audio as make
    else:
        raise ValueError(f"no sample generator {data.generator!r} in regenerate-benchmarks yet")
    manifest = make(folder, **data.args)
    done.write_text(f"{manifest}\n")
    return Path(manifest)


def _build(data: SampleData | PublishedData, manifest: Path, root: Path) -> list:
    """Build the sample set or published list (cached by the build flow); return the shard files it holds."""
    from tasks.training.windows import split_parts

    if data.build == "none":  # the sample set itself is the data (MAESTRO's layout): its files are the digest's
        from tasks.datasets.maestro import maestro_files

        return maestro_files(manifest)
    if data.build == "pianoyt":
        from flows.build_pianoyt import build_pianoyt
        from flows.settings import PianoBuild
        from tasks.datasets.pianoyt import layout

        build_pianoyt(settings=PianoBuild(manifest=str(manifest), data_root=str(root), **data.build_args))
    elif data.build == "violinyt":
        from flows.build_violinyt import build_violinyt
        from flows.settings import ViolinBuild
        from tasks.datasets.violinyt import layout

        build_violinyt(settings=ViolinBuild(manifest=str(manifest), data_root=str(root), **data.build_args))
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
    from flows.train_av_mlp import train_av_mlp
    from flows.train_av_sync import train_av_sync
    from flows.train_class_embedding import train_class_embedding
    from flows.train_fabnet import train_fabnet
    from flows.train_keypoints import train_keypoints
    from flows.train_piano_onsets import train_piano_onsets
    from flows.train_violin_pitch import train_violin_pitch
    from flows.train_x2face import train_x2face
    from tasks.training.av_mlp import AvMlpSettings
    from tasks.training.av_sync import SyncSettings
    from tasks.training.class_embedding import ClassEmbeddingSettings
    from tasks.training.fabnet import FabNetSettings
    from tasks.training.keypoints import KeypointSettings
    from tasks.training.piano_onsets import PianoOnsetsSettings
    from tasks.training.violin_pitch import ViolinPitchSettings
    from tasks.training.x2face import X2FaceSettings

    return {"piano-onsets": (PianoOnsetsSettings, train_piano_onsets), "av-sync": (SyncSettings, train_av_sync),
            "fabnet": (FabNetSettings, train_fabnet), "x2face": (X2FaceSettings, train_x2face),
            "keypoints": (KeypointSettings, train_keypoints),
            "class-embedding": (ClassEmbeddingSettings, train_class_embedding),
            "violin-pitch": (ViolinPitchSettings, train_violin_pitch), "av-mlp": (AvMlpSettings, train_av_mlp)}


def _summary_of(result: dict) -> dict:
    """The trainer's summary from a training flow's return: itself, or the one run of ``{name: summary}``."""
    if "steps" in result:
        return result
    (summary,) = result.values()
    if "error" in summary:
        raise RuntimeError(summary["error"])
    return summary


def _training_call(training: Training, data_root: str, run_dir: Path, seed: int):
    """``(flow, settings, extra parameters)`` of one training: the model's training flow and its settings object."""
    from tasks.training.trainer import TrainerSettings

    if training.model == "onsets-frames":  # its own settings (MAESTRO data, its LR decay), same trainer underneath
        from flows.train_onsets_frames import train_onsets_frames
        from tasks.training.onsets_frames import TrainSettings

        names = {"val_every": "validate_every"}
        budget = {names.get(k, k): v for k, v in training.trainer.items()}
        return train_onsets_frames, TrainSettings(data=data_root, out_dir=str(run_dir), seed=seed,
                                                  progress_bar=False, **training.settings, **budget), {}
    trainers = _trainers()
    if training.model not in trainers:
        raise ValueError(f"no training {training.model!r} in regenerate-benchmarks yet")
    settings_class, train_flow = trainers[training.model]
    trainer = TrainerSettings(run_dir=str(run_dir), seed=seed, progress_bar=False, **training.trainer)
    return train_flow, settings_class(data_root=data_root, trainer=trainer, **training.settings), \
        {"strict_gpu_limit": False}


def _train(training: Training, data_root: str, run_dir: Path, seed: int) -> dict:
    """Run the training in this process (its flow as a subflow); return the trainer's summary."""
    train_flow, settings, extra = _training_call(training, data_root, run_dir, seed)
    return _summary_of(train_flow(settings=settings, **extra))


def _train_in_child(training: Training, data_root: str, run_dir: Path, seed: int, threads: int, api_url: str) -> int:
    """Run the training in a child process (``--parallel``): its flow run on this run's Prefect server, ``threads``
    torch threads, its output in ``RUN/regenerate-train.log``; return the exit status (the summary is the
    trainer's ``RUN/summary.json``).  A process, not a thread: torch's seeding and thread count are per process."""
    import os
    import subprocess
    import sys

    spec = run_dir / "regenerate-train.json"
    spec.write_text(json.dumps({"training": dataclasses.asdict(training), "data_root": data_root,
                                "run_dir": str(run_dir), "seed": seed}) + "\n")
    env = {**os.environ, "PREFECT_API_URL": api_url, "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    child = "import sys; from flows.regenerate import _child; _child(sys.argv[1])"
    with open(run_dir / "regenerate-train.log", "wb") as log:
        return subprocess.run([sys.executable, "-c", child, str(spec)], env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1]).returncode


def _child(spec_path: str) -> None:
    """The child process of :func:`_train_in_child`."""
    spec = json.loads(Path(spec_path).read_text())
    t = spec["training"]
    training = Training(t["model"], t["name"], t["settings"], t["trainer"], tuple(tuple(n) for n in t["needs"]))
    _train(training, spec["data_root"], Path(spec["run_dir"]), spec["seed"])


def _submit(training: Training, data_root: str, run_dir: Path, seed: int):
    """Start the training as a run of its deployment ``<flow>/<flow>`` (deploy/prefect.yaml: the GPU pool) and
    return the flow run at once; the settings replace the deployment's (paths are absolute: a shared filesystem)."""
    from prefect.deployments import run_deployment
    from pydantic_core import to_jsonable_python

    train_flow, settings, _ = _training_call(training, data_root, run_dir, seed)
    return run_deployment(f"{train_flow.name}/{train_flow.name}", parameters={"settings": to_jsonable_python(settings)},
                          timeout=0, tags=["regenerate-benchmarks"])


def _wait(flow_run_id, poll_s: float = 5.0):
    """The final state of a flow run (polled)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(poll_s)


def _by_model(checkpoints: dict) -> dict[str, list[str]]:
    """``{training name: (model, path)}`` -> the paths of each face model (empty where it has none)."""
    return {m: [p for model, p in checkpoints.values() if model == m]
            for m in ("fabnet", "x2face", "keypoints", "class-embedding")}


def _evaluate(bench: Benchmark, evaluation: tuple[str, dict], data_root: str, samples: Path | None,
              checkpoints: dict, out: Path, published: Path = PUBLISHED) -> dict:
    """Run ``evaluation`` (its name and arguments: the benchmark's in this profile) on ``checkpoints`` (``{training
    name: (model, path)}``); ``samples``: the sample set whose truth is scored against (None for published data:
    the pseudo-labels are the truth); ``published``: the folder of the published sets it may read."""
    kind, args = evaluation
    midi = str(samples / "midi") if samples is not None and args.get("reference_midi") else None
    paths = [p for _, p in checkpoints.values()]
    if kind == "landmark-sets":  # the face models on MAFL / 300-W as the user downloaded them
        from flows.evaluate_faces import evaluate_landmarks
        from flows.settings import LandmarkSetEvaluation

        of = _by_model(checkpoints)
        markdown, figures = [], []
        for labelled in args["sets"]:
            result = evaluate_landmarks(settings=LandmarkSetEvaluation(
                labelled_set=labelled, root=str(published / labelled), checkpoint=of["fabnet"],
                keypoints_checkpoint=of["keypoints"], class_embedding_checkpoint=of["class-embedding"],
                results=str(out), figure=str(out / "figures")))
            markdown += [result["markdown"]] + ([result["following"]] if result.get("following") else [])
            figures += result["figures"]
        return {"markdown": markdown, "figures": figures}
    if kind == "piano-onsets":
        from flows.evaluate_piano_onsets import evaluate_piano_onsets
        from flows.settings import PianoOnsetsEvaluation

        result = evaluate_piano_onsets(settings=PianoOnsetsEvaluation(
            data_root=data_root, checkpoint=paths, reference_midi=midi, results=str(out)))
        from tasks.evaluation.piano_onsets import piano_roll_figures

        figures = piano_roll_figures(samples, {name: p for name, (_, p) in checkpoints.items()}, out / "figures",
                                     log=get_run_logger().info) if midi else []
        return {"markdown": [result["markdown"]], "figures": figures}
    if kind == "av-sync":
        from flows.evaluate_av_sync import evaluate_av_sync
        from flows.settings import AvSyncEvaluation

        result = evaluate_av_sync(settings=AvSyncEvaluation(data_root=data_root, checkpoint=paths, results=str(out)))
        return {"markdown": [result["markdown"]], "figures": [result["figure"]] if result.get("figure") else []}
    if kind == "transcription":
        from tasks.evaluation.transcription import write_transcription_table

        (ckpt,) = paths
        return {"markdown": [write_transcription_table(data_root, ckpt, out, bench.title,
                                                       log=get_run_logger().info)]}
    if kind == "piano-noisy":
        from flows.evaluate_av_mlp import evaluate_av_mlp
        from flows.settings import AvMlpEvaluation

        result = evaluate_av_mlp(settings=AvMlpEvaluation(data_root=data_root, checkpoint=paths,
                                                          reference_midi=midi, results=str(out)))
        return {"markdown": [result["markdown"]]}
    if kind == "violin-pitch":
        from flows.evaluate_violin_pitch import evaluate_violin_pitch
        from flows.settings import ViolinPitchEvaluation

        result = evaluate_violin_pitch(settings=ViolinPitchEvaluation(
            data_root=data_root, checkpoint=paths, truth_midi=str(samples / "midi") if samples else None,
            results=str(out), figure=str(out / "figures")))
        return {"markdown": [result["markdown"]], "figures": result.get("figures", [])}
    if kind == "faces":
        if samples is None:
            raise ValueError("the face evaluation needs the face sample set's truth")
        from flows.evaluate_faces import evaluate_faces
        from flows.settings import FacesEvaluation

        of = _by_model(checkpoints)
        result = evaluate_faces(settings=FacesEvaluation(
            data_root=data_root, samples=str(samples), checkpoint=of["fabnet"], x2face_checkpoint=of["x2face"],
            keypoints_checkpoint=of["keypoints"], class_embedding_checkpoint=of["class-embedding"],
            results=str(out), figure=str(out / "figures")))
        return {"markdown": [result[k] for k in ("fabnet", "x2face", "landmarks", "following") if result.get(k)],
                "figures": result["figures"]}
    raise ValueError(f"no evaluation {kind!r} in regenerate-benchmarks yet")


def _files_under(out: Path, skip: Path) -> dict[str, int]:
    """Every file under ``out`` but those under ``skip`` (the work folder), relative path -> mtime in ns."""
    import os

    found = {}
    for folder, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if Path(folder, d).resolve() != skip]
        for name in files:
            path = Path(folder, name)
            found[path.relative_to(out).as_posix()] = path.stat().st_mtime_ns
    return found


def _reuse_evaluation(cache: Path, key: str, out: Path) -> dict | None:
    """Copy the files of an evaluation kept with the same ``key`` into ``out``; its ``written`` there, else None."""
    meta = cache / "evaluation.json"
    try:
        info = json.loads(meta.read_text()) if meta.is_file() else {}
    except ValueError:
        info = {}
    kept, files = cache / "files", info.get("files")
    if info.get("key") != key or not isinstance(files, list) or not all((kept / rel).is_file() for rel in files):
        return None
    for rel in files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kept / rel, out / rel)
    return {k: [str(out / rel) for rel in rels] for k, rels in info["written"].items()}


def _keep_evaluation(cache: Path, key: str, out: Path, written: dict, before: dict[str, int], skip: Path) -> None:
    """Keep the files the evaluation wrote under ``out`` (new or changed since ``before``) with its key.  An
    evaluation that wrote a result outside ``out`` is not kept (it runs again next time)."""
    relative = {}
    for k, paths in written.items():
        rels = []
        for p in paths:
            p = Path(p).resolve()
            if not p.is_relative_to(out):
                return
            rels.append(p.relative_to(out).as_posix())
        relative[k] = rels
    files = sorted(rel for rel, mtime in _files_under(out, skip).items() if before.get(rel) != mtime)
    shutil.rmtree(cache, ignore_errors=True)
    for rel in files:
        (cache / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / rel, cache / "files" / rel)
    (cache / "evaluation.json").write_text(json.dumps({"key": key, "files": files, "written": relative}, indent=1)
                                           + "\n")


def _prepare(run_dir: Path, key: str) -> dict | None:
    """The summary of a finished run made from the same inputs (then nothing runs), else None, with ``run_dir``
    ready: cleared if made from other inputs (never resume a stale checkpoint), ``inputs.json`` started."""
    log = get_run_logger()
    done = reusable(run_dir, key)
    if done is not None:
        log.info("regenerate: %s reused (inputs unchanged, key %s)", run_dir, key)
        return done
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
    return None


class _Work:
    """The data and trainings of one regeneration, each made (or reused) once.

    A training that ``needs`` another's checkpoint (a student's teacher; the
    noisy-audio MLP's networks) has that one made first, in its own
    benchmark's folder and on its own benchmark's data.  The trainings run in
    *waves*: each wave is every training whose needs are done.  With
    ``dispatch="local"`` a wave's trainings run one after another in this
    process, or with ``parallel`` > 1 in child processes, that many at a
    time, each with ``cores // parallel`` torch threads and its flow run on
    this run's server (a time budget then buys fewer steps per run than
    alone, so the tables move); with ``"deployments"`` they are all started at once as runs of
    their training deployments (the GPU pool: as many at a time as there are
    GPU workers and slots of the ``gpu`` limit), and the wave waits for all
    of them, so one failed run does not stop the others.
    """

    def __init__(self, profile: str, work_dir: Path, code: str, seed: int, dispatch: str = "local",
                 parallel: int = 1, published: Path = PUBLISHED):
        if dispatch not in ("local", "deployments"):
            raise ValueError(f"dispatch must be 'local' or 'deployments', not {dispatch!r}")
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self.profile, self.work_dir, self.code, self.seed, self.dispatch = profile, work_dir, code, seed, dispatch
        self.parallel, self.published = parallel, Path(published)
        self.data: dict[str, tuple[Path, str, str]] = {}  # data name -> (folder, data root, shard digest)
        self.runs: dict[str, dict] = {}  # "table/run" -> summary with reused and key

    def samples_of(self, bench: Benchmark) -> Path | None:
        """The sample set behind ``bench``'s data (its truth: MIDI, face landmarks), None for published data."""
        data = bench.data[self.profile]
        return None if isinstance(data, PublishedData) else self.data_of(bench)[0] / "samples"

    def data_of(self, bench: Benchmark) -> tuple[Path, str, str]:
        from tasks.evaluation.results import shards_digest

        data = bench.data[self.profile]
        if data.name not in self.data:  # (benchmarks that ask for the same data share one build)
            folder = self.work_dir / "data" / data.name
            if isinstance(data, PublishedData):  # the user's download; built into WORK unless it is the data
                source = self.published / data.path
                root = source if data.build == "none" else folder / "root"
                files = _build(data, source, root)
            else:
                root = folder / ("samples" if data.build == "none" else "root")
                files = _build(data, _sample_set(data, folder / "samples"), root)
            self.data[data.name] = (folder, str(root), shards_digest(files))
        return self.data[data.name]

    def _needs(self, bench: Benchmark, training: Training) -> list[tuple[str, Benchmark, Training]]:
        out = []
        for field, need in training.needs:
            table, _, name = need.rpartition("/")
            other, dep = find_training(table or bench.table, name, self.profile)
            out.append((field, other, dep))
        return out

    def _order(self, bench: Benchmark, training: Training, order: list, chain: tuple[str, ...] = ()) -> None:
        ref = f"{bench.table}/{training.name}"
        if ref in chain:
            raise ValueError(f"trainings that need each other: {' -> '.join(chain + (ref,))}")
        if any(r == ref for r, _, _ in order):
            return
        for _, other, dep in self._needs(bench, training):
            self._order(other, dep, order, chain + (ref,))
        order.append((ref, bench, training))

    def _run_children(self, children: list) -> list:
        """Run each ``(ref, training, run_dir, key, digest, resolved, data_root)`` in a child process,
        ``self.parallel`` at a time, with an equal share of this machine's cores; ``started`` entries whose last
        item is the child's exit status."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            api_url = str(client.api_url)
        threads = max(1, (os.cpu_count() or 1) // self.parallel)
        log = get_run_logger()
        log.info("regenerate: %d trainings, %d at a time, %d torch threads each", len(children), self.parallel,
                 threads)
        with ThreadPoolExecutor(self.parallel) as pool:
            codes = list(pool.map(lambda c: _train_in_child(c[5], c[6], c[2], self.seed, threads, api_url),
                                  children))
        return [(ref, training, run_dir, key, digest, code)
                for (ref, training, run_dir, key, digest, _, _), code in zip(children, codes)]

    def needed_elsewhere(self, bench: Benchmark) -> list[str]:
        """``table/run`` of every training of another benchmark that ``bench``'s trainings need, directly or not."""
        order: list = []
        for training in bench.trainings[self.profile]:
            self._order(bench, training, order)
        return [ref for ref, other, _ in order if other.table != bench.table]

    def train_all(self, pairs: list[tuple[Benchmark, Training]]) -> None:
        """Make (or reuse) every training of ``pairs`` and what they need, wave by wave."""
        order: list = []
        for bench, training in pairs:
            self._order(bench, training, order)
        pending = [x for x in order if x[0] not in self.runs]
        while pending:
            wave = [x for x in pending
                    if all(f"{o.table}/{d.name}" in self.runs for _, o, d in self._needs(x[1], x[2]))]
            started, failed, children = [], [], []
            for ref, bench, training in wave:
                settings, upstream = dict(training.settings), {}
                for field, other, dep in self._needs(bench, training):
                    done = self.runs[f"{other.table}/{dep.name}"]
                    settings[field] = done.get("best_checkpoint") or done["last_checkpoint"]
                    upstream[f"{other.table}/{dep.name}"] = done["key"]
                _, data_root, digest = self.data_of(bench)
                key = training_key(training, digest, self.code, self.seed, upstream)
                run_dir = self.work_dir / "runs" / bench.table / training.name
                done = _prepare(run_dir, key)
                if done is not None:
                    self.runs[ref] = {**done, "reused": True, "key": key}
                    continue
                settings = {k: v.format(published=self.published) if isinstance(v, str) and "{published}" in v else v
                            for k, v in settings.items()}  # a published input a setting names (the VGG weights)
                resolved = dataclasses.replace(training, settings=settings)
                if self.dispatch == "local" and self.parallel == 1:
                    summary = _train(resolved, data_root, run_dir, self.seed)
                    record_inputs(run_dir, key, training, digest, self.code, self.seed)
                    self.runs[ref] = {**summary, "reused": False, "key": key}
                elif self.dispatch == "local":
                    children.append((ref, training, run_dir, key, digest, resolved, data_root))
                else:
                    started.append((ref, training, run_dir, key, digest, _submit(resolved, data_root, run_dir,
                                                                                 self.seed)))
            if children:  # --parallel: the wave's trainings in child processes, `parallel` at a time
                started += self._run_children(children)
            for ref, training, run_dir, key, digest, flow_run in started:
                extra = {}
                if isinstance(flow_run, int):  # a child's exit status
                    failure = f"exit status {flow_run}; see {run_dir / 'regenerate-train.log'}" if flow_run else None
                else:
                    final = _wait(flow_run.id)
                    failure = None if final.state.is_completed() else f"flow run {final.name}: {final.state.name}"
                    extra = {"flow_run": str(final.id)}
                summary_file = run_dir / "summary.json"
                if failure or not summary_file.is_file():
                    failed.append(f"{ref} ({failure or 'no summary.json'})")
                    continue
                record_inputs(run_dir, key, training, digest, self.code, self.seed)
                self.runs[ref] = {**_summary_of(json.loads(summary_file.read_text())), "reused": False, "key": key,
                                  **extra}
            if failed:
                raise RuntimeError(f"trainings failed: {', '.join(failed)}")
            pending = [x for x in pending if x[0] not in self.runs]


def _training_entry(run: dict) -> dict:
    """What ``regenerate.json`` keeps of one training's summary."""
    return {"reused": run["reused"], "key": run["key"], "steps": run.get("steps"), "wall_s": run.get("wall_s"),
            "metrics_csv": run.get("metrics_csv"), **({"flow_run": run["flow_run"]} if run.get("flow_run") else {})}


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
                          seed: int = 0, work: str | None = None, check: str | None = None,
                          dispatch: str = "local", parallel: int = 1, published: str | None = None) -> dict:
    """Build, train (or reuse) and evaluate every benchmark of ``only`` (all when empty) in ``profile``; write the
    report; with ``check``, compare the tables with those in that folder.  ``dispatch``: ``local`` trains in this
    process (``parallel`` > 1: each wave's trainings in child processes, that many at a time, the cores shared
    among them); ``deployments`` starts each wave of trainings at once as runs of their training deployments (a
    server, GPU workers, and a filesystem they share with this run).  ``published``: the folder holding the
    ``paper`` profile's downloads (default ``data_manifests/``); a benchmark the profile cannot make is skipped,
    and the report says why (named in ``only``, it is an error)."""
    from tasks.evaluation.compare import compare_folders, format_check
    from tasks.evaluation.report import write_report
    from tasks.evaluation.results import git_commit

    log = get_run_logger()
    out_dir = Path(out).resolve()
    work_dir = Path(work).resolve() if work else out_dir / "work"
    code, evaluation_code = code_digest(), code_digest(dirs=EVALUATION_DIRS, skip=())
    report: dict = {"profile": profile, "seed": seed, "code_digest": code, "git_commit": git_commit(),
                    "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "tables": {}}
    start = time.monotonic()
    benches, skipped, folder = plan(only, profile, published)  # before any work
    work = _Work(profile, work_dir, code, seed, dispatch, parallel, folder)
    for table, why in skipped.items():
        log.warning("regenerate: %s is not in the %s profile: %s", table, profile, why)
    report["skipped"] = skipped
    for bench in benches:
        work.data_of(bench)
    t_train = time.monotonic()
    work.train_all([(bench, t) for bench in benches for t in bench.trainings[profile]])
    report["training_wall_s"] = round(time.monotonic() - t_train, 1)
    for bench in benches:
        t0 = time.monotonic()
        _, data_root, digest = work.data_of(bench)
        runs = {t.name: work.runs[f"{bench.table}/{t.name}"] for t in bench.trainings[profile]}
        models = {t.name: t.model for t in bench.trainings[profile]}
        checkpoints = {n: (models[n], r.get("best_checkpoint") or r["last_checkpoint"]) for n, r in runs.items()}
        needed = work.needed_elsewhere(bench)
        key = evaluation_key(bench, digest, {**{n: r["key"] for n, r in runs.items()},
                                             **{ref: work.runs[ref]["key"] for ref in needed}}, evaluation_code, seed,
                             profile)
        cache = work_dir / "evaluations" / bench.table
        written = _reuse_evaluation(cache, key, out_dir)
        evaluation_reused = written is not None
        if evaluation_reused:
            log.info("regenerate: %s evaluation reused (inputs unchanged, key %s)", bench.table, key)
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            before = _files_under(out_dir, work_dir)
            written = _evaluate(bench, bench.evaluation_in(profile), data_root, work.samples_of(bench), checkpoints,
                                out_dir, folder)
            _keep_evaluation(cache, key, out_dir, written, before, work_dir)
        report["tables"][bench.table] = {
            **written, "data_root": data_root, "data_digest": digest,
            "trainings": {n: _training_entry(r) for n, r in runs.items()},
            # what its trainings need from other benchmarks (trained or reused in their folders)
            "needed": {ref: _training_entry(work.runs[ref]) for ref in needed},
            "evaluation_reused": evaluation_reused, "evaluation_key": key,
            "wall_s": round(time.monotonic() - t0, 1),  # its evaluation (the data was built before the trainings)
            "training_wall_s": round(sum(r.get("wall_s") or 0 for r in runs.values() if not r["reused"]), 1)}
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
