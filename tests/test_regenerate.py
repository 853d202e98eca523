"""tasks.benchmarks and flow regenerate-benchmarks: every table from one command, unchanged trainings reused."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks import benchmarks as B

REPO = Path(__file__).resolve().parents[1]


def test_the_registry_declares_every_profile_of_each_table():
    for bench in B.BENCHMARKS.values():
        # each profile has data and trainings, or says why the table cannot be made in it
        assert set(bench.data) == set(bench.trainings), bench.table
        assert set(bench.data) | set(bench.unavailable) == set(B.PROFILES), bench.table
        assert not set(bench.data) & set(bench.unavailable), bench.table
        assert all(bench.trainings[p] for p in bench.data)
    assert {"tiny", "sample"} <= {p for b in B.BENCHMARKS.values() for p in b.data}
    assert [b.table for b in B.select(["piano-onsets"])] == ["piano-onsets"]
    with pytest.raises(ValueError, match="unknown table"):
        B.select(["nope"])


def test_the_paper_profile_uses_the_papers_configs_and_builds_valid_settings(tmp_path):
    """Every paper-profile training makes valid settings for its training flow (the flow's own validation), with the
    papers' network sizes and no time budget: the papers' plateau rule (or Magenta's schedule) ends them."""
    from flows.regenerate import _training_call

    made, skipped = B.in_profile(list(B.BENCHMARKS.values()), "paper")
    assert not skipped and {b.table for b in made} == set(B.BENCHMARKS)
    for bench in made:
        assert isinstance(bench.data["paper"], B.PublishedData), bench.table
        for training in bench.trainings["paper"]:
            assert "max_minutes" not in training.trainer, training.name
            needs = {field: str(tmp_path / "needed.ckpt") for field, _ in training.needs}  # (filled when run)
            resolved = dataclasses.replace(training, settings={**training.settings, **needs})
            _, settings, _ = _training_call(resolved, str(tmp_path / "root"), tmp_path / "run", 0)
            # the papers' sizes (the AV MLP has one size: its inputs' features decide it)
            assert getattr(settings, "config", "paper") in ("paper", "default"), (bench.table, training.name)
    # the face tables of the paper profile: the landmark probes on MAFL and 300-W, the keypoints' perceptual loss
    # on the user's VGG-19
    faces = B.BENCHMARKS["faces"]
    assert faces.evaluation_in("paper") == ("landmark-sets", {"sets": ["mafl", "300w"]})
    assert faces.evaluation_in("sample") == ("faces", {})
    kp = next(t for t in faces.trainings["paper"] if t.name == "keypoints-10")
    assert kp.settings["loss"] == "perceptual" and kp.settings["perceptual_weights"] == "{published}/vgg19/vgg19.pth"
    assert B.evaluation_key(faces, "d", {}, "c", 0, "paper") != B.evaluation_key(faces, "d", {}, "c", 0, "sample")
    # a table a profile cannot make is skipped with its reason, or refused when asked for by name
    lonely = B.Benchmark("lonely", "t", {"sample": None}, {"sample": ()}, "x", unavailable={"paper": "no data"})
    assert B.in_profile([lonely], "paper") == ([], {"lonely": "no data"})
    with pytest.raises(ValueError, match="lonely: not in the 'paper' profile: no data"):
        B.in_profile([lonely], "paper", named=True)
    assert len(B.missing_published([faces], "paper", tmp_path)) == 4  # VoxCeleb, MAFL, 300-W, the VGG
    # what a table needs is looked for too: piano-noisy needs Onsets and Frames' MAESTRO and the PianoYT list
    needed = B.with_needed([B.BENCHMARKS["piano-noisy"]], "paper")
    assert [b.table for b in needed] == ["piano-noisy", "transcription", "piano-onsets"]
    missing = B.missing_published(needed, "paper", tmp_path)
    assert missing == [f"{tmp_path / 'pianoyt/pianoyt.csv'}: missing (the PianoYT list (CSV), for piano-noisy, "
                       "piano-onsets; "
                       "data_manifests/README.md)",
                       f"{tmp_path / 'maestro'}: missing (a MAESTRO folder (its CSV, audio and MIDI), for "
                       "transcription; data_manifests/README.md)"]


def test_paper_profile_refuses_missing_downloads_before_any_work(tmp_path):
    for extra, said in (([], f"{tmp_path / 'pianoyt' / 'pianoyt.csv'}: missing (the PianoYT list (CSV), for "
                                 "piano-onsets, av-sync, piano-noisy; data_manifests/README.md) (and 6 more)"),
                        (["--only", "faces"], f"{tmp_path / 'voxceleb' / 'vox1_dev_txt.zip'}: missing (VoxCeleb1's "
                                              "txt zip (vox1_dev_txt.zip), for faces; data_manifests/README.md) "
                                              "(and 3 more)")):
        proc = subprocess.run([sys.executable, "-m", "flows.cli", "regenerate", "--profile", "paper", "--published",
                               str(tmp_path), "--out", str(tmp_path / "R"), *extra],
                              capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "R").exists()  # refused before any work


def test_published_data_is_built_from_the_users_folder(tmp_path):
    """The paper profile's MAESTRO entry is the user's folder itself (no copy); its files make the data digest."""
    from flows.regenerate import _Work
    from tasks.samples.piano_audio import make_piano_audio

    make_piano_audio(tmp_path / "published" / "maestro", pieces=3, seconds=3, seed=0)
    work = _Work("paper", tmp_path / "work", "code", 0, published=tmp_path / "published")
    folder, root, digest = work.data_of(B.BENCHMARKS["transcription"])
    assert Path(root) == tmp_path / "published" / "maestro" and len(digest) == 16
    assert work.samples_of(B.BENCHMARKS["transcription"]) is None  # no sample truth: pseudo-labels are it
    assert not (tmp_path / "work" / "data").exists() or not any((tmp_path / "work" / "data").rglob("*.wav"))


def test_a_training_is_reused_only_when_its_inputs_are_unchanged(tmp_path):
    t = B.Training("piano-onsets", "slope", {"variant": "slope", "config": "small"}, {"max_steps": 4})
    key = B.training_key(t, "data1", "code1", 0)
    assert key == B.training_key(t, "data1", "code1", 0)
    others = {B.training_key(t, "data2", "code1", 0), B.training_key(t, "data1", "code2", 0),
              B.training_key(t, "data1", "code1", 1),
              B.training_key(B.Training("piano-onsets", "slope", {"variant": "slope", "config": "small"},
                                        {"max_steps": 5}), "data1", "code1", 0)}
    assert key not in others and len(others) == 4
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"x")
    assert B.reusable(run, key) is None  # no summary, no inputs
    (run / "summary.json").write_text(json.dumps({"best_checkpoint": str(ckpt), "steps": 4}))
    assert B.reusable(run, key) is None  # not recorded as finished from these inputs
    B.record_inputs(run, key, t, "data1", "code1", 0)
    assert B.reusable(run, key)["steps"] == 4
    assert B.reusable(run, B.training_key(t, "data1", "code2", 0)) is None
    ckpt.unlink()
    assert B.reusable(run, key) is None  # its checkpoint is gone


def test_code_digest_follows_the_code(tmp_path):
    for d in B.CODE_DIRS:
        (tmp_path / d).mkdir()
        (tmp_path / d / "a.py").write_text("x = 1\n")
    (tmp_path / "tasks" / "evaluation").mkdir()
    (tmp_path / "tasks" / "evaluation" / "e.py").write_text("x = 1\n")
    first = B.code_digest(tmp_path)
    (tmp_path / "tasks" / "evaluation" / "e.py").write_text("x = 2\n")
    assert B.code_digest(tmp_path) == first  # an evaluation's change retrains nothing
    (tmp_path / "tasks" / "benchmarks.py").write_text("PROFILES = ()\n")
    assert B.code_digest(tmp_path) == first  # nor does the registry's (each key holds its own entry)
    (tmp_path / "tasks" / "a.py").write_text("x = 2\n")
    assert B.code_digest(tmp_path) != first


def _regenerate(out: Path, work: Path, *extra: str):
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "regenerate", "--profile", "tiny", "--out", str(out),
                           "--work", str(work), *extra],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "regenerate.json").read_text())


def test_regenerate_writes_every_table_then_reuses_every_training(tmp_path):
    """The whole registry at the tiny profile, twice: the second run trains nothing."""
    out, work = tmp_path / "R", tmp_path / "work"
    first = _regenerate(out, work)
    assert set(first["tables"]) == set(B.BENCHMARKS)
    for name in ("av-sync", "fabnet", "x2face", "landmarks", "keypoints-following"):
        assert "git_commit" in (out / f"{name}.md").read_text(), name
    assert (out / "figures" / "keypoints.png").is_file()
    # piano-onsets and av-sync ask for the same data: one build
    assert first["tables"]["av-sync"]["data_root"] == first["tables"]["piano-onsets"]["data_root"]
    info = first["tables"]["piano-onsets"]
    assert set(info["trainings"]) == {"resnet", "aggregation", "slope"}
    assert not any(t["reused"] for t in info["trainings"].values())
    md = (out / "piano-onsets.md").read_text()
    assert "git_commit" in md and "shards_digest" in md and "66.63" in md  # provenance; the thesis beside ours
    rows = pq.read_table(out / "piano-onsets.parquet").to_pylist()
    assert {r["model"] for r in rows} == {"ResNet", "ResNet + aggregation", "ResNet + aggregation + slope"}
    report = (out / "README.md").read_text()
    for name in ("piano-onsets", "av-sync", "fabnet", "x2face", "landmarks"):
        assert f"[{name}.md]({name}.md)" in report, name
    assert "Ours against the paper" in report and "<details><summary>Provenance" in report
    for png in ("figures/keypoints.png", "figures/curve-piano-onsets-slope.png", "av-sync-curve.png",
                "figures/piano-roll-slope.png", "figures/piano-roll-slope.wav"):
        assert f"]({png})" in report and (out / png).is_file(), png
    assert '<audio controls src="figures/piano-roll-slope.wav">' in report  # the prediction, to listen to
    assert "<table>" in (out / "README.html").read_text()
    # the second run (another OUT, the same work folder) reuses every training and checks against the first
    out2 = tmp_path / "R2"
    second = _regenerate(out2, work, "--check", str(out))
    assert "No number moved" in (out2 / "check.md").read_text()
    assert all(t["reused"] for table in second["tables"].values() for t in table["trainings"].values())
    assert all(table["evaluation_reused"] for table in second["tables"].values())  # nor evaluates
    for png in ("figures/keypoints.png", "av-sync-curve.png", "figures/piano-roll-slope.wav"):
        assert (out2 / png).read_bytes() == (out / png).read_bytes(), png  # the kept files, copied into R2
    n = len(second["tables"])
    assert f"{n} of {n} evaluations reused" in (out2 / "README.md").read_text()
    again = second["tables"]["piano-onsets"]
    assert {n: t["key"] for n, t in again["trainings"].items()} == {n: t["key"] for n, t in info["trainings"].items()}
    assert again["data_digest"] == info["data_digest"]
    assert second["wall_s"] < first["wall_s"]
    # --only one table: the trainings of other benchmarks it needs are reused and listed with it
    third = _regenerate(tmp_path / "R3", work, "--only", "piano-noisy")
    assert set(third["tables"]) == {"piano-noisy"}
    needed = third["tables"]["piano-noisy"]["needed"]
    assert {"piano-onsets/slope", "transcription/onsets-frames"} <= set(needed)
    assert all(t["reused"] for t in needed.values())
    assert needed["piano-onsets/slope"]["key"] == info["trainings"]["slope"]["key"]
    assert "`piano-onsets/slope` (reused)" in (tmp_path / "R3" / "README.md").read_text()


def test_a_kept_evaluation_is_copied_back_only_under_its_own_key(tmp_path):
    from flows.regenerate import _files_under, _keep_evaluation, _reuse_evaluation

    bench = next(iter(B.BENCHMARKS.values()))
    key = B.evaluation_key(bench, "data1", {"run": "k1"}, "code1", 0)
    assert key != B.evaluation_key(bench, "data1", {"run": "k2"}, "code1", 0)  # a retrained run
    assert key != B.evaluation_key(bench, "data1", {"run": "k1"}, "code2", 0)  # changed code
    assert key != B.evaluation_key(bench, "data2", {"run": "k1"}, "code1", 0)  # other data
    out, work = tmp_path / "R", tmp_path / "R" / "work"
    (work / "runs").mkdir(parents=True)
    (out / "old.md").write_text("an earlier table")
    before = _files_under(out, work)
    (out / "t.md").write_text("table")
    (out / "figures").mkdir()
    (out / "figures" / "f.png").write_bytes(b"png")
    (work / "runs" / "x.ckpt").write_bytes(b"not a result")
    _keep_evaluation(work / "evaluations" / "t", key, out, {"markdown": [str(out / "t.md")]}, before, work)
    kept = json.loads((work / "evaluations" / "t" / "evaluation.json").read_text())
    assert kept["files"] == ["figures/f.png", "t.md"]  # what it wrote, not what was there or the work folder
    other = tmp_path / "R2"
    assert _reuse_evaluation(work / "evaluations" / "t", "another key", other) is None
    assert _reuse_evaluation(tmp_path / "nothing kept", key, other) is None
    written = _reuse_evaluation(work / "evaluations" / "t", key, other)
    assert written == {"markdown": [str(other / "t.md")]} and (other / "figures" / "f.png").read_bytes() == b"png"


def test_parallel_trainings_run_in_child_processes(tmp_path):
    """--parallel 2: the violin students (one wave of three, after their teacher) train two at a time in child
    processes, each with its own log, and their summaries make the table as an in-process run's do."""
    out, work = tmp_path / "R", tmp_path / "work"
    result = _regenerate(out, work, "--only", "violin-pitch", "--parallel", "2")
    info = result["tables"]["violin-pitch"]
    assert len(info["trainings"]) == 4 and not any(t["reused"] for t in info["trainings"].values())
    for name, t in info["trainings"].items():
        run = work / "runs" / "violin-pitch" / name
        assert (run / "regenerate-train.log").is_file() and t["steps"] > 0, name
    assert (out / "violin-pitch.md").is_file()
    again = _regenerate(tmp_path / "R2", work, "--only", "violin-pitch", "--parallel", "2")
    assert all(t["reused"] for t in again["tables"]["violin-pitch"]["trainings"].values())
