"""evaluate faces: the FAb-Net probe table and the X2Face table on a face sample build (tiny runs), and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from tasks.training.trainer import TrainerSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A face sample set (3 identities: train, val, test one each), its build, and 2-step FAb-Net and X2Face runs."""
    pytest.importorskip("dlib")
    from tasks.datasets.voxceleb import build_utterance, layout, read_metadata
    from tasks.samples.faces import make_face_samples
    from tasks.training import class_embedding, fabnet, keypoints, x2face

    root = tmp_path_factory.mktemp("faces-eval")
    samples, data = root / "samples", root / "data"
    make_face_samples(samples, identities=3, utterances=1, seconds=2, seed=3)
    for u in read_metadata(samples / "txt"):
        utt = {"identity": u.identity, "video_id": u.video_id, "utterance": u.utterance,
               "boxes": [list(b) for b in u.boxes], "units": u.units, "key": u.key, "region": u.region}
        build_utterance(str(samples / "videos" / f"{u.video_id}.mp4"), utt, layout(data).shards, u.split, per_second=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def trainer(name):
        return TrainerSettings(run_dir=str(root / name), max_steps=2, val_every=2, batch_size=4, num_workers=0,
                               progress_bar=False, accelerator="cpu")

    fabnet.train(fabnet.FabNetSettings(data_root=str(data), trainer=trainer("fab"), paper_batches=False),
                 log=lambda *a: None)
    x2face.train(x2face.X2FaceSettings(data_root=str(data), trainer=trainer("x2f"), paper_batches=False),
                 log=lambda *a: None)
    keypoints.train(keypoints.KeypointSettings(data_root=str(data), trainer=trainer("kp"), paper_batches=False),
                    log=lambda *a: None)
    class_embedding.train(class_embedding.ClassEmbeddingSettings(data_root=str(data), trainer=trainer("ce")),
                          log=lambda *a: None)
    torch.set_num_threads(threads)
    return (samples, data, root / "fab" / "checkpoints" / "last.ckpt", root / "x2f" / "checkpoints" / "last.ckpt",
            root / "kp" / "checkpoints" / "last.ckpt", root / "ce" / "checkpoints" / "last.ckpt")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def test_evaluate_faces_writes_both_tables_and_figures(trained, tmp_path):
    samples, data, fab, x2f, kp, ce = trained
    proc = _cli("evaluate", "faces", "--data-root", data, "--samples", samples, "--checkpoint", fab,
                "--x2face-checkpoint", x2f, "--keypoints-checkpoint", kp, "--class-embedding-checkpoint", ce,
                "--results", tmp_path / "RESULTS",
                "--figure", tmp_path / "figs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (tmp_path / "RESULTS" / "fabnet.md").read_text()
    for text in ("fabnet-curriculum", "untrained encoder", "dlib points", "dlib points (direct)", "error_iod_pct",
                 "mae_roll", "mae_yaw", "mouth open", "300-W 5.73 / MAFL 3.49", "git_commit", "not an unseen face"):
        assert text in md, text
    rows = pq.read_table(tmp_path / "RESULTS" / "fabnet.parquet").to_pylist()
    direct = [r for r in rows if r["features"] == "dlib points (direct)"]
    assert direct and 0 < direct[0]["value"] < 15  # dlib's own points on the test crops: a few % of the eye distance
    x2 = pq.read_table(tmp_path / "RESULTS" / "x2face.parquet").to_pylist()
    l1 = {(r["model"].split(" (")[0], r["sources"]) for r in x2 if r["metric"].startswith("test L1")}
    assert l1 == {("x2face stage I", 1), ("x2face stage I", 3), ("identity warp", 1), ("identity warp", 3)}
    assert any(r["metric"].startswith("pose from the driving vector, mae_mean") for r in x2)
    assert "Stage I only" in (tmp_path / "RESULTS" / "x2face.md").read_text()
    assert any(r["metric"].startswith("audio -> driving vector") for r in x2)
    landmarks = pq.read_table(tmp_path / "RESULTS" / "landmarks.parquet").to_pylist()
    assert {r["features"] for r in landmarks} >= {"keypoints-10", "untrained keypoints-10", "fabnet-curriculum",
                                                  "class-embedding", "untrained class-embedding"}
    assert all(r["target"] == "landmarks" and r["value"] > 0 for r in landmarks)
    assert "MAFL 3.19" in (tmp_path / "RESULTS" / "landmarks.md").read_text()
    following = pq.read_table(tmp_path / "RESULTS" / "keypoints-following.parquet").to_pylist()
    assert {r["features"]: r["points"] for r in following} == {"keypoints-10": 10, "untrained keypoints-10": 10}
    for png in ("fabnet-landmarks.png", "x2face-grid-0.png", "x2face-pose-sweep-0.png", "x2face-audio-0.png",
                "keypoints.png", "class-embedding-warps-0.png"):
        assert (tmp_path / "figs" / png).stat().st_size > 10_000
    # drive x2face: by another frame, and by a pose through the maps the evaluation fitted
    import json

    import cv2
    import numpy as np

    from tasks.evaluation.face_probes import split_frames

    frames = split_frames(data, "test", 256)
    for i, name in ((0, "src.png"), (len(frames["track"]) - 1, "drv.png")):
        cv2.imwrite(str(tmp_path / name), np.transpose(frames["images"][i], (1, 2, 0))[..., ::-1])
    maps = tmp_path / "RESULTS" / "x2face-pose-maps-0.pt"
    proc = _cli("drive", "x2face", "--source", tmp_path / "src.png", "--driving", tmp_path / "drv.png",
                "--checkpoint", x2f, "--out", tmp_path / "driven.png")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = cv2.imread(str(tmp_path / "driven.png"))
    assert out.shape[0] == 64 + 4 and out.shape[1] == 4 * 64 + 5 * 2  # four 64 x 64 panels, 2-pixel padding
    proc = _cli("drive", "x2face", "--source", tmp_path / "src.png", "--pose", "5,0,-3", "--pose-maps", maps,
                "--checkpoint", x2f, "--out", tmp_path / "posed.png")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["pose"] == [5.0, 0.0, -3.0] and len(result["reached_pose"]) == 3
    for args, message in ((("--pose", "5,0,-3"), "--pose needs --pose-maps"),
                          (("--pose", "5,0", "--pose-maps", maps), "three numbers"),
                          (("--driving", tmp_path / "nothing.png"), "not an image file"),
                          (("--pose", "1,2,3", "--pose-maps", fab), "not a pose-maps file")):
        proc = _cli("drive", "x2face", "--source", tmp_path / "src.png", *args, "--checkpoint", x2f,
                    "--out", tmp_path / "x.png")
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)


def test_evaluate_faces_refuses_bad_input_in_one_line(trained, tmp_path):
    samples, data, fab, x2f, kp, ce = trained
    proc = _cli("evaluate", "faces", "--data-root", data, "--samples", samples, "--checkpoint", x2f)
    assert proc.returncode == 2 and "not a FAb-Net checkpoint" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("evaluate", "faces", "--data-root", data, "--samples", samples, "--checkpoint", fab,
                "--keypoints-checkpoint", fab)
    assert proc.returncode == 2 and "not a keypoint-bottleneck" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("evaluate", "faces", "--data-root", data, "--samples", samples, "--checkpoint", fab,
                "--class-embedding-checkpoint", kp)
    assert proc.returncode == 2 and "not a class-embedding" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("evaluate", "faces", "--data-root", data, "--samples", tmp_path, "--checkpoint", fab)
    assert proc.returncode == 2 and "no truth.json" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _cli("evaluate", "faces", "--data-root", tmp_path, "--samples", samples, "--checkpoint", fab)
    assert proc.returncode == 2 and "no shards for split" in proc.stderr and proc.stderr.count("\n") == 1


def _labelled_sets(samples: Path, root: Path) -> tuple[Path, Path]:
    """The sample set's frames as a MAFL folder (CelebA's layout, 5 points) and a 300-W folder (68 points, .pts
    1-based): the third identity's frames are the test list, every other frame of each video is kept."""
    import cv2
    import numpy as np

    from tasks.datasets.face_annotations import CELEBA_LANDMARK_COLUMNS
    from tasks.datasets.voxceleb import read_metadata
    from tasks.samples.faces import frame_truth

    celeba, w300 = root / "mafl", root / "300w"  # (the names the paper profile looks for under its folder)
    for d in (celeba / "Img" / "img_align_celeba", celeba / "Anno", celeba / "MAFL"):
        d.mkdir(parents=True)
    rows, lists = [], {"train": [], "test": []}
    videos = sorted({u.video_id: u.identity for u in read_metadata(samples / "txt")}.items(), key=lambda v: v[1])
    for k, (video_id, _) in enumerate(videos):
        split = "test" if k == len(videos) - 1 else "train"
        truth = frame_truth(samples, video_id)["landmarks"]
        cap = cv2.VideoCapture(str(samples / "videos" / f"{video_id}.mp4"))
        i = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i % 2 == 0:
                p = truth[i]
                name = f"{len(rows) + 1:06d}.jpg"
                cv2.imwrite(str(celeba / "Img" / "img_align_celeba" / name), frame)
                five = [p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]
                rows.append(name + " " + " ".join(str(int(round(v))) for xy in five for v in xy))
                lists[split].append(name)
                folder = w300 / "lfpw" / ("testset" if split == "test" else "trainset")
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{name[:-4]}.png"), frame)
                (folder / f"{name[:-4]}.pts").write_text(
                    "version: 1\nn_points: 68\n{\n" + "".join(f"{x + 1:.3f} {y + 1:.3f}\n" for x, y in p) + "}\n")
            i += 1
    (celeba / "Anno" / "list_landmarks_align_celeba.txt").write_text(
        f"{len(rows)}\n{' '.join(CELEBA_LANDMARK_COLUMNS)}\n" + "".join(r + "\n" for r in rows))
    for split, names in lists.items():
        (celeba / "MAFL" / {"train": "training.txt", "test": "testing.txt"}[split]).write_text(
            "".join(n + "\n" for n in names))
    assert len(lists["train"]) >= 20 and len(lists["test"]) >= 10 and np.isfinite(truth).all()
    return celeba, w300


def test_evaluate_landmarks_on_mafl_and_300w_folders(trained, tmp_path):
    """A user's MAFL or 300-W folder: the face models' landmark probes on its lists, a table per set."""
    samples, data, fab, x2f, kp, ce = trained
    celeba, w300 = _labelled_sets(samples, tmp_path)
    proc = _cli("evaluate", "landmarks", "--set", "mafl", "--root", celeba, "--checkpoint", fab,
                "--keypoints-checkpoint", kp, "--class-embedding-checkpoint", ce, "--results", tmp_path / "R",
                "--figure", tmp_path / "figs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(tmp_path / "R" / "landmarks-mafl.parquet").to_pylist()
    features = {r["features"] for r in rows}
    assert {"keypoints-10", "untrained keypoints-10", "class-embedding", "untrained class-embedding",
            "fabnet-curriculum", "untrained encoder"} <= features, features
    assert {r["target"] for r in rows} == {"landmarks"} and not any("dlib" in f for f in features)  # stills: no dlib
    n_test = len((celeba / "MAFL" / "testing.txt").read_text().split())
    for r in rows:
        assert 0 < r["value"] < 100 and r["n_test"] == n_test, r  # % of the eye-centre distance, every test face
    md = (tmp_path / "R" / "landmarks-mafl.md").read_text()
    assert "Landmarks on MAFL" in md and '"labelled_set": "mafl"' in md and "MAFL 3.19" in md
    assert (tmp_path / "R" / "landmarks-mafl-following.md").is_file()
    assert (tmp_path / "figs" / "keypoints-mafl.png").stat().st_size > 1000
    proc = _cli("evaluate", "landmarks", "--set", "300w", "--root", w300, "--keypoints-checkpoint", kp,
                "--results", tmp_path / "R", "--limit", "40")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(tmp_path / "R" / "landmarks-300w.parquet").to_pylist()
    assert {r["features"] for r in rows} == {"keypoints-10", "untrained keypoints-10"}
    assert all(r["n_test"] == min(40, n_test) for r in rows)  # the test list (common: lfpw/testset), limited
    # refusals: one line, exit 2, before any work
    (tmp_path / "empty").mkdir()
    for args, said in ((["--set", "mafl", "--root", tmp_path / "empty", "--checkpoint", fab], "no list_landmarks"),
                       (["--set", "300w", "--root", w300], "give at least one --checkpoint"),
                       (["--set", "300w", "--root", w300, "--checkpoint", kp], str(kp))):
        proc = _cli("evaluate", "landmarks", *args, "--results", tmp_path / "R2")
        assert proc.returncode == 2 and said in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "R2").exists()
    # the paper profile's face evaluation reads the two folders under the published folder
    from flows.regenerate import _evaluate
    from tasks.benchmarks import BENCHMARKS

    faces = BENCHMARKS["faces"]
    written = _evaluate(faces, faces.evaluation_in("paper"), str(data), None,
                        {"keypoints-10": ("keypoints", str(kp)), "fabnet": ("fabnet", str(fab))}, tmp_path / "R3",
                        tmp_path)
    assert [Path(m).name for m in written["markdown"]] == ["landmarks-mafl.md", "landmarks-mafl-following.md",
                                                          "landmarks-300w.md", "landmarks-300w-following.md"]


def test_evaluate_landmarks_refuses_a_set_without_test_faces(tmp_path):
    """A 300-W folder with training faces only is refused in one line, before any work."""
    from tests.test_face_annotations import face68, write_pts

    write_pts(tmp_path / "300w" / "afw" / "a.pts", face68(0))
    (tmp_path / "kp.ckpt").write_bytes(b"not read: the set is refused first")
    proc = _cli("evaluate", "landmarks", "--set", "300w", "--root", tmp_path / "300w", "--keypoints-checkpoint",
                tmp_path / "kp.ckpt", "--results", tmp_path / "R")
    assert proc.returncode == 2 and "no test faces in this 300w set" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "R").exists()
