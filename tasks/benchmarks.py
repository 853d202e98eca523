"""The registry of benchmarks: each results table's data, trainings, evaluation, in one place (issue 19).

A :class:`Benchmark` says what one results table needs, per *profile*:

* **data**: a :class:`SampleData` (which sample generator, with which
  arguments, built by which build flow), or a user's published manifest;
* **trainings**: :class:`Training` entries (a model's train function, its
  settings as plain values, a time and step budget, and ``needs``: the
  settings filled with another training's checkpoint, such as a student's
  teacher; that training runs first, and its key is part of this one's);
* **evaluation**: the evaluation flow that writes the table from the
  trained checkpoints (the papers' numbers are that flow's: every table
  already prints them beside ours).

``regenerate-benchmarks`` (:mod:`flows.regenerate`) walks the registry:
builds what data is missing, trains what is not trained yet (a training
whose inputs are unchanged is reused: :func:`training_key`), and evaluates.
Adding a model is adding one entry to :data:`BENCHMARKS`; nothing here
imports Prefect.

Profiles
    ``sample``: the generated sample sets and ``small`` configs, trainings
    of a few minutes each: the whole registry runs on a 2-core CPU.
    ``tiny``: the same path in seconds (a few steps, a few short videos),
    for tests of the machinery; its numbers mean nothing.
    ``paper``: the published data sets the user downloaded
    (:class:`PublishedData`, under one folder: ``data_manifests/`` or
    ``--published``), the papers' configs and batches, each training
    stopped by its paper's plateau rule under a step cap (:data:`PAPER_BUDGET`):
    GPU work, a run of the GPU pool per training (``--dispatch deployments``).
    A benchmark that cannot be made in a profile says why in
    :attr:`Benchmark.unavailable`; one whose evaluation differs there names it
    in :attr:`Benchmark.evaluation_for` (the face benchmark's paper tables are
    its landmark probes on MAFL and 300-W, with no per-frame truth to score
    X2Face or the pose probes on).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("tiny", "sample", "paper")
ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "data_manifests"  # where the paper profile looks for the downloaded sets by default
CODE_DIRS = ("models", "tasks")  # a change in these retrains (flows/ only orchestrates) ...
# ... but for the evaluations, which have keys of their own, and this registry (a training's key holds its own
# entry's settings and budget, so a change to another entry or profile retrains nothing):
NOT_TRAINING = ("tasks/evaluation", "tasks/benchmarks.py")
EVALUATION_DIRS = ("models", "tasks", "flows")  # a change anywhere in these evaluates again


@dataclass(frozen=True)
class SampleData:
    """A generated sample set and its build: ``generator`` ("piano", ...) with ``args``, built by ``build``."""

    generator: str
    args: dict
    build: str  # "pianoyt" | "violinyt" | "voxceleb", or "none": the sample set is the data (MAESTRO's layout)
    build_args: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A folder name unique to the arguments (so two profiles or entries that agree share one build)."""
        text = json.dumps({"generator": self.generator, "args": self.args, "build": self.build,
                           "build_args": self.build_args}, sort_keys=True)
        return f"{self.generator}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class PublishedData:
    """A published set the user downloaded: ``path`` under the published-data folder, built by ``build``
    (``"none"``: the folder is the data, MAESTRO's layout); ``what`` names it in the error when it is missing."""

    path: str
    build: str
    what: str
    build_args: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """A folder name unique to the path, build and arguments."""
        text = json.dumps({"path": self.path, "build": self.build, "build_args": self.build_args}, sort_keys=True)
        return f"published-{Path(self.path).parts[0]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class Training:
    """One training of a benchmark: ``model`` ("piano-onsets", ...), its run ``name``, settings and budget."""

    model: str
    name: str
    settings: dict  # the model's settings as plain values, without data_root and trainer
    trainer: dict  # the shared trainer's settings (without run_dir): budget, batch, validation cadence
    # (settings field, training): the field gets that training's checkpoint; "run" names one of this benchmark's
    # trainings, "table/run" another benchmark's (trained on that benchmark's data)
    needs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Benchmark:
    """One results table and what makes it, per profile."""

    table: str  # the evaluation's table name (RESULTS/<table>.md)
    title: str
    data: dict  # profile -> SampleData | PublishedData
    trainings: dict  # profile -> tuple[Training, ...]
    evaluation: str  # the evaluation's name in flows.regenerate.EVALUATIONS
    evaluation_args: dict = field(default_factory=dict)
    unavailable: dict = field(default_factory=dict)  # profile -> why this table cannot be made in it
    evaluation_for: dict = field(default_factory=dict)  # profile -> (evaluation, args) where it is another
    # profile -> PublishedData the trainings or the evaluation read besides the data (a string setting may name
    # one as "{published}/<path>")
    inputs: dict = field(default_factory=dict)

    def evaluation_in(self, profile: str) -> tuple[str, dict]:
        """The evaluation and its arguments in ``profile``."""
        return self.evaluation_for.get(profile, (self.evaluation, self.evaluation_args))


PIANO = {"sample": SampleData("piano", {"videos": 12, "seconds": 30, "seed": 11}, "pianoyt"),
         "tiny": SampleData("piano", {"videos": 4, "seconds": 4, "seed": 11}, "pianoyt"),
         "paper": PublishedData("pianoyt/pianoyt.csv", "pianoyt", "the PianoYT list (CSV)")}
PIANO_AUDIO = {"sample": SampleData("piano-audio", {"pieces": 80, "seconds": 30, "seed": 0}, "none"),
               "tiny": SampleData("piano-audio", {"pieces": 7, "seconds": 4, "seed": 0}, "none"),
               "paper": PublishedData("maestro", "none", "a MAESTRO folder (its CSV, audio and MIDI)")}
VIOLIN = {"sample": SampleData("violin", {"videos": 16, "seconds": 30, "seed": 21}, "violinyt"),
          "tiny": SampleData("violin", {"videos": 4, "seconds": 3, "seed": 5, "width": 640, "height": 360},
                             "violinyt"),
          "paper": PublishedData("violin/violin.csv", "violinyt", "a violin list (CSV, PianoYT's format)")}
FACES = {"sample": SampleData("faces", {"identities": 20, "utterances": 4, "seconds": 6, "seed": 3}, "voxceleb",
                              {"per_second": 10}),
         "tiny": SampleData("faces", {"identities": 3, "utterances": 1, "seconds": 2, "seed": 3}, "voxceleb",
                            {"per_second": 5}),
         "paper": PublishedData("voxceleb/vox1_dev_txt.zip", "voxceleb", "VoxCeleb1's txt zip (vox1_dev_txt.zip)")}
SAMPLE_BUDGET = {"max_minutes": 10, "max_steps": 100000, "num_workers": 0}
# The papers stop on a validation plateau (the trainer's early stop); the step cap only bounds a run that never
# plateaus (our choice: the papers give epochs or nothing).  Validation every 1000 steps, 4 loader workers.
PAPER_BUDGET = {"max_steps": 300000, "val_every": 1000, "num_workers": 4}
# What the paper profile's face benchmark reads besides VoxCeleb: the labelled sets its landmark tables are scored
# on, and the ImageNet VGG-19 of the keypoints' perceptual loss.
FACE_INPUTS = (PublishedData("mafl", "none", "a CelebA folder with MAFL's lists"),
               PublishedData("300w", "none", "a 300-W folder"),
               PublishedData("vgg19/vgg19.pth", "none", "a torchvision VGG-19 state dict (ImageNet weights), for the "
                                                        "keypoints' perceptual loss"))
TINY_BUDGET = {"max_steps": 4, "val_every": 2, "batch_size": 4, "num_workers": 0}


def _piano_onsets() -> Benchmark:
    variants = ("resnet", "aggregation", "slope")

    def runs(trainer: dict, config: str = "small") -> tuple[Training, ...]:
        return tuple(Training("piano-onsets", v, {"variant": v, "config": config}, trainer) for v in variants)

    return Benchmark(
        table="piano-onsets", title="Visual piano onsets (thesis ch. 6, table 1)",
        data=PIANO, trainings={"sample": runs({**SAMPLE_BUDGET, "val_every": 200}), "tiny": runs(TINY_BUDGET),
                               "paper": runs(PAPER_BUDGET, "paper")},
        evaluation="piano-onsets", evaluation_args={"reference_midi": True})


def _av_sync() -> Benchmark:
    def runs(trainer: dict, config: str = "small") -> tuple[Training, ...]:
        return (Training("av-sync", "av-sync", {"config": config}, trainer),)

    return Benchmark(table="av-sync", title="Audio-visual offsets (thesis ch. 7, fig. 7.3)", data=PIANO,
                     trainings={"sample": runs({**SAMPLE_BUDGET, "val_every": 100}), "tiny": runs(TINY_BUDGET),
                                "paper": runs(PAPER_BUDGET, "paper")},
                     evaluation="av-sync")


def _faces() -> Benchmark:
    def paper(trainer: dict) -> tuple[Training, ...]:  # the papers' sizes, batches, losses and optimisers
        fab = {"config": "paper", "paper_batches": True}
        kp = {"config": "paper", "paper_batches": True, "loss": "perceptual",
              "perceptual_weights": "{published}/vgg19/vgg19.pth", "warps": True}
        return (Training("fabnet", "fabnet", {**fab, "sources": 1, "curriculum": False}, trainer),
                Training("fabnet", "fabnet-curriculum", {**fab, "sources": 1, "curriculum": True}, trainer),
                Training("fabnet", "fabnet-curriculum-3src", {**fab, "sources": 3, "curriculum": True}, trainer),
                Training("keypoints", "keypoints-10", {**kp, "keypoints": 10}, trainer),
                Training("keypoints", "keypoints-30", {**kp, "keypoints": 30}, trainer),
                Training("class-embedding", "class-embedding", {"config": "paper"}, trainer))

    def runs(trainer: dict) -> tuple[Training, ...]:
        fab = {"config": "small", "paper_batches": False}
        kp = {"config": "small", "paper_batches": False, "learning_rate": 1e-3, "weight_decay": 0.0, "warps": True}
        return (Training("fabnet", "fabnet", {**fab, "sources": 1, "curriculum": False}, trainer),
                Training("fabnet", "fabnet-curriculum", {**fab, "sources": 1, "curriculum": True}, trainer),
                Training("fabnet", "fabnet-curriculum-3src", {**fab, "sources": 3, "curriculum": True}, trainer),
                Training("x2face", "x2face-stage1", {"config": "small", "paper_batches": False}, trainer),
                # lr 1e-3 without weight decay: the paper's 1e-2 with decay collapses the points under the l2 loss;
                # TPS-warped pairs: the points follow the face better (docs/landmarks.md, "Training", "Measured")
                Training("keypoints", "keypoints-10", {**kp, "keypoints": 10}, trainer),
                Training("keypoints", "keypoints-30", {**kp, "keypoints": 30}, trainer),
                Training("class-embedding", "class-embedding", {"config": "small"}, trainer))

    return Benchmark(table="faces", title="Faces: FAb-Net probes, X2Face, the landmark table", data=FACES,
                     trainings={"sample": runs({**SAMPLE_BUDGET, "val_every": 100, "batch_size": 16}),
                                "tiny": runs(TINY_BUDGET), "paper": paper(PAPER_BUDGET)},
                     evaluation="faces",
                     # the paper profile has no per-frame truth: the papers' landmark tables on MAFL and 300-W
                     # (X2Face and the pose and mouth probes need the sample set's truth, or AFLW: not yet)
                     evaluation_for={"paper": ("landmark-sets", {"sets": ["mafl", "300w"]})},
                     inputs={"paper": FACE_INPUTS})


def _violin_pitch() -> Benchmark:
    def runs(trainer: dict, batches: bool, config: str = "small") -> tuple[Training, ...]:
        common = {"config": config, "thesis_batches": batches}
        students = tuple(Training("violin-pitch", f"student-{frames}" + ("" if distill else "-nodistill"),
                                  {**common, "stage": "student", "frames": frames, "distill": distill}, trainer,
                                  needs=(("teacher", "teacher"),) if distill else ())
                         for frames, distill in ((5, True), (1, True), (5, False)))
        return (Training("violin-pitch", "teacher", {**common, "stage": "teacher"}, trainer), *students)

    return Benchmark(table="violin-pitch", title="Visual pitch for the violin (thesis ch. 5, table 2)", data=VIOLIN,
                     trainings={"sample": runs({**SAMPLE_BUDGET, "val_every": 100}, True),
                                "tiny": runs(TINY_BUDGET, False), "paper": runs(PAPER_BUDGET, True, "paper")},
                     evaluation="violin-pitch")


def _transcription() -> Benchmark:
    def runs(trainer: dict, window: float, config: str = "small") -> tuple[Training, ...]:
        return (Training("onsets-frames", "onsets-frames", {"config": config, "window_seconds": window}, trainer),)

    # paper: Magenta's schedule has no plateau rule, so the cap is the run's length (our choice, as the window)
    return Benchmark(table="transcription", title="Onsets and Frames' own transcription scores", data=PIANO_AUDIO,
                     trainings={"sample": runs({"max_minutes": 60, "max_steps": 100000, "val_every": 250}, 5.12),
                                "tiny": runs({"max_steps": 2, "val_every": 2, "batch_size": 2}, 1.0),
                                "paper": runs({"max_steps": 300000, "val_every": 5000, "num_workers": 4}, 20.0,
                                              "default")},
                     evaluation="transcription")


def _piano_noisy() -> Benchmark:
    def runs(trainer: dict) -> tuple[Training, ...]:
        return (Training("av-mlp", "av-mlp", {}, trainer,
                         needs=(("onsets_frames", "transcription/onsets-frames"), ("visual", "piano-onsets/slope"))),)

    return Benchmark(table="piano-noisy", title="Note onsets from noisy audio (thesis ch. 6, table 2)", data=PIANO,
                     trainings={"sample": runs({**SAMPLE_BUDGET, "val_every": 100}), "tiny": runs(TINY_BUDGET),
                                "paper": runs(PAPER_BUDGET)},
                     evaluation="piano-noisy", evaluation_args={"reference_midi": True})


BENCHMARKS: dict[str, Benchmark] = {b.table: b for b in (_piano_onsets(), _av_sync(), _transcription(), _piano_noisy(),
                                                         _violin_pitch(), _faces())}


def find_training(table: str, name: str, profile: str) -> tuple[Benchmark, Training]:
    """The benchmark ``table`` and its training ``name`` in ``profile``; ValueError naming what is missing."""
    if table not in BENCHMARKS:
        raise ValueError(f"a training needs {table}/{name}, but there is no benchmark {table!r}")
    bench = BENCHMARKS[table]
    for training in bench.trainings.get(profile, ()):
        if training.name == name:
            return bench, training
    raise ValueError(f"a training needs {table}/{name}, but {table} has no training {name!r} in {profile!r}")


def select(only: list[str] | None = None) -> list[Benchmark]:
    """The benchmarks named in ``only`` (all when empty); ValueError naming an unknown one."""
    if not only:
        return list(BENCHMARKS.values())
    unknown = [t for t in only if t not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(unknown)}: one of {', '.join(BENCHMARKS)}")
    return [BENCHMARKS[t] for t in only]


def in_profile(benches: list[Benchmark], profile: str, named: bool = False) -> tuple[list[Benchmark], dict]:
    """``(the benchmarks that can be made in profile, {table: why not} for the others)``.  ``named``: the
    benchmarks were asked for by name (``--only``), so one that cannot be made is a ValueError, not a skip."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    made, skipped = [], {}
    for bench in benches:
        if profile in bench.data:
            made.append(bench)
            continue
        why = bench.unavailable.get(profile, f"no {profile!r} entry in the registry")
        if named:
            raise ValueError(f"{bench.table}: not in the {profile!r} profile: {why}")
        skipped[bench.table] = why
    return made, skipped


def with_needed(benches: list[Benchmark], profile: str) -> list[Benchmark]:
    """``benches`` and every benchmark whose trainings they need in ``profile``, directly or not (each once)."""
    out, todo = {}, list(benches)
    while todo:
        bench = todo.pop(0)
        if bench.table in out:
            continue
        out[bench.table] = bench
        for training in bench.trainings.get(profile, ()):
            todo += [BENCHMARKS[need.rpartition("/")[0]] for _, need in training.needs if "/" in need]
    return list(out.values())


def missing_published(benches: list[Benchmark], profile: str, folder) -> list[str]:
    """One line per published file or folder that ``benches`` need in ``profile`` and ``folder`` lacks."""
    wanted: dict[str, tuple[PublishedData, list[str]]] = {}
    for bench in benches:
        for data in (bench.data.get(profile), *bench.inputs.get(profile, ())):
            if isinstance(data, PublishedData):
                wanted.setdefault(data.path, (data, []))[1].append(bench.table)
    return [f"{Path(folder) / path}: missing ({data.what}, for {', '.join(tables)}; data_manifests/README.md)"
            for path, (data, tables) in wanted.items() if not (Path(folder) / path).exists()]


def plan(only: list[str] | None, profile: str, published=None) -> tuple[list[Benchmark], dict, Path]:
    """``(the benchmarks to make, {table: why not} for those the profile skips, the published folder)``: the checks
    the command runs before any work and the flow runs again (a deployment run has no command before it).
    ValueError (one line) for an unknown table, one the profile cannot make that ``only`` names, or a missing
    published file (the first, and how many more)."""
    benches, skipped = in_profile(select(only), profile, named=bool(only))
    folder = Path(published).resolve() if published else PUBLISHED
    missing = missing_published(with_needed(benches, profile), profile, folder)
    if missing:
        raise ValueError(missing[0] + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return benches, skipped, folder


def code_digest(root: Path = ROOT, dirs: tuple[str, ...] = CODE_DIRS, skip: tuple[str, ...] = NOT_TRAINING) -> str:
    """SHA-256 (16 hex) over the paths and contents of every ``.py`` file under ``dirs`` but ``skip``: by
    default the training code (:data:`CODE_DIRS` but :data:`NOT_TRAINING`: a change in an evaluation retrains
    nothing); ``dirs=EVALUATION_DIRS, skip=()`` gives the evaluations' digest."""
    h = hashlib.sha256()
    for d in dirs:
        for path in sorted((root / d).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if any(rel == n or rel.startswith(n + "/") for n in skip):
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def training_key(training: Training, data_digest: str, code: str, seed: int, upstream: dict | None = None) -> str:
    """What decides whether a training must run again: its settings, budget, data, code and seed, and the keys of
    the trainings it needs (``upstream``: a retrained teacher retrains its students)."""
    text = json.dumps({"model": training.model, "name": training.name, "settings": training.settings,
                       "trainer": training.trainer, "data": data_digest, "code": code, "seed": seed,
                       **({"upstream": upstream} if upstream else {})}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def evaluation_key(bench: Benchmark, data_digest: str, trainings: dict[str, str], code: str, seed: int,
                   profile: str | None = None) -> str:
    """What decides whether a table must be evaluated again: its evaluation and arguments, the data, the keys of
    every training it reads (``trainings``: name or ``table/name`` -> key), the code (``models/``, ``tasks/``
    and ``flows/``) and the seed."""
    evaluation, args = bench.evaluation_in(profile) if profile else (bench.evaluation, bench.evaluation_args)
    text = json.dumps({"table": bench.table, "evaluation": evaluation, "args": args,
                       "data": data_digest, "trainings": trainings, "code": code, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reusable(run_dir: Path, key: str) -> dict | None:
    """The summary of a finished training in ``run_dir`` made from the same inputs (``key``), else None."""
    inputs, summary = run_dir / "inputs.json", run_dir / "summary.json"
    if not (inputs.is_file() and summary.is_file()):
        return None
    try:
        if json.loads(inputs.read_text()).get("key") != key:
            return None
        done = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    best = done.get("best_checkpoint") or done.get("last_checkpoint")
    return done if best and Path(best).is_file() else None


def record_inputs(run_dir: Path, key: str, training: Training, data_digest: str, code: str, seed: int) -> None:
    """Write ``run_dir/inputs.json`` after a training finished: what :func:`reusable` compares next time."""
    (run_dir / "inputs.json").write_text(json.dumps(
        {"key": key, "model": training.model, "name": training.name, "settings": training.settings,
         "trainer": training.trainer, "data_digest": data_digest, "code_digest": code, "seed": seed},
        indent=1, sort_keys=True) + "\n")
