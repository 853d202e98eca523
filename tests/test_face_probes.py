"""tasks.evaluation.face_probes: FAb-Net's linear probes (paper §5.1), their scores, and the truth they are scored on.

The crop geometry is checked against real crops (a blob cut with crop_square;
dlib's points on the crops of a build of a generated sample set), the probe
on problems with a known answer (and on shuffled targets, where it must
fail), the metrics and the bootstrap on hand-checked examples.
"""

from __future__ import annotations

import math

import cv2  # noqa: F401  (before decord: decord bundles an old zlib; see tasks/__init__.py)
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tasks.evaluation import face_probes as FP
from tasks.labels.faces import crop_square, square_around

FAST = {"max_epochs": 30, "patience": 30, "lr": 1e-2}  # the fitting machinery, not the paper's lr: seconds, not minutes


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- crop geometry and the sample set's truth


@pytest.mark.parametrize("box", [(220, 100, 200, 190), (260, 130, 100, 90), (280, 150, 40, 40)])
def test_frame_to_crop_lands_on_the_same_spot_of_an_actual_crop(box):
    """A blob centred at a sub-pixel spot of a frame is centred where frame_to_crop says in crop_square's crop.

    Boxes whose squares are 360 (INTER_AREA, shrunk), 180 and 72 pixels
    (INTER_LINEAR, enlarged); the map without the half-pixel terms misses by
    0.14, 0.21 and 1.3 pixels.
    """
    H, W, p = 360, 640, np.array([301.3, 170.7])
    yy, xx = np.mgrid[0:H, 0:W]
    blob = np.round(250 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 4.0 ** 2))).astype(np.uint8)
    x0, y0, side = square_around(box, 0.4)
    crop = crop_square(np.repeat(blob[..., None], 3, -1), x0, y0, side)[..., 0].astype(np.float64)
    cy, cx = np.mgrid[0:256, 0:256]
    centre = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
    assert np.abs(centre - FP.frame_to_crop(p, box)).max() < 0.03
    naive = (p - [x0, y0]) * (256 / side)
    assert np.abs(centre - naive).max() > 0.1  # so the check can tell the conventions apart


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A face sample set (3 identities, one 2 s utterance each) and its build: train, val, test one identity each."""
    pytest.importorskip("dlib")
    from tasks.datasets.voxceleb import build_utterance, layout, read_metadata
    from tasks.samples.faces import make_face_samples

    root = tmp_path_factory.mktemp("face-probes")
    samples, data = root / "samples", root / "data"
    make_face_samples(samples, identities=3, utterances=1, seconds=2, seed=3)
    utts = read_metadata(samples / "txt")
    assert sorted(u.split for u in utts) == ["test", "train", "val"]
    for u in utts:
        utt = {"identity": u.identity, "video_id": u.video_id, "utterance": u.utterance,
               "boxes": [list(b) for b in u.boxes], "units": u.units, "key": u.key, "region": u.region}
        build_utterance(str(samples / "videos" / f"{u.video_id}.mp4"), utt, layout(data).shards, u.split,
                        per_second=5)  # 10 frames an utterance
    return samples, data


def _table(data, split):
    import pyarrow as pa

    from tasks.datasets.voxceleb import layout
    from tasks.training.windows import split_parts

    return pa.concat_tables([pq.read_table(p) for p in split_parts(layout(data).shards, split)])


def test_crop_truth_agrees_with_dlib_on_the_builds_crops(build):
    from tasks.datasets.face_annotations import landmark_error
    from tasks.samples.faces import frame_truth

    samples, data = build
    for split in ("train", "val", "test"):
        table = _table(data, split)
        truth = FP.crop_truth(samples, table)
        n = table.num_rows
        assert truth["landmarks"].shape == (n, 68, 2) and truth["pose"].shape == (n, 3)
        assert truth["opening"].shape == (n,)
        dlib_points = np.asarray(table.column("landmarks").to_pylist(), np.float64).reshape(n, 68, 2)
        # dlib on the stored crop against the rendered truth carried into it: the sample set's 1-3.5 % on frames
        err = landmark_error(dlib_points, truth["landmarks"])
        assert err.mean() < 6.0 and err.max() < 12.0, err
        # the same rows as a list of dicts give the same; pose is roll, pitch, yaw of the row's own frame
        again = FP.crop_truth(samples, table.to_pylist())
        assert all(np.array_equal(truth[k], again[k]) for k in truth)
        row = table.slice(0, 1).to_pylist()[0]
        ft = frame_truth(samples, row["video_id"])
        f = row["frame_index"]
        assert truth["pose"][0].tolist() == [ft["roll"][f], ft["pitch"][f], ft["yaw"][f]]
        assert truth["opening"][0] == ft["opening"][f]
        x0, y0, side = square_around(row["box"], 0.4)
        assert np.allclose(truth["landmarks"][0], (ft["landmarks"][f] - [x0, y0] + 0.5) * 256 / side - 0.5)


def test_crop_truth_refuses_a_frame_the_sample_set_does_not_have(build):
    samples, data = build
    row = _table(data, "train").slice(0, 1).to_pylist()[0]
    with pytest.raises(ValueError, match="not in the sample set's truth"):
        FP.crop_truth(samples, [{**row, "frame_index": 100000}])


def test_split_frames_reads_a_split_resized_with_its_columns(build):
    samples, data = build
    frames = FP.split_frames(data, "test", 64)
    table = _table(data, "test")
    n = table.num_rows
    assert frames["images"].shape == (n, 3, 64, 64) and frames["images"].dtype == np.uint8
    assert frames["images"].max() > 100  # a picture, not zeros
    assert frames["frame_index"].tolist() == table.column("frame_index").to_pylist()
    assert frames["identity"].tolist() == table.column("identity").to_pylist()
    assert len(set(frames["track"])) == 1 and frames["track"][0].count("/") == 2
    assert np.allclose(frames["landmarks"].reshape(n, -1), np.asarray(table.column("landmarks").to_pylist()))
    assert np.allclose(frames["box"], np.asarray(table.column("box").to_pylist()))
    # the dict of columns goes straight into crop_truth
    assert np.array_equal(FP.crop_truth(samples, frames)["landmarks"], FP.crop_truth(samples, table)["landmarks"])
    assert "images" not in FP.split_frames(data, "test", 64, images=False)
    with pytest.raises(ValueError, match="no shards for split"):
        FP.split_frames(data, "nosuchsplit", 64)


def test_the_probes_on_a_build_dlib_points_and_an_untrained_encoder(build):
    """The whole path on real crops: truth, dlib's points as features and as direct predictions, FabNet's embedding."""
    from models.fabnet import FabNet, FabNetConfig

    samples, data = build
    frames = {s: FP.split_frames(data, s, 64) for s in ("train", "val", "test")}
    targets = {s: FP.crop_truth(samples, f) for s, f in frames.items()}
    groups = {s: f["track"] for s, f in frames.items()}
    dlib = {s: f["landmarks"].reshape(len(f["landmarks"]), -1) for s, f in frames.items()}
    rows, curves = FP.run_probes(dlib, targets, groups, "dlib", direct_landmarks=frames["test"]["landmarks"],
                                 max_epochs=5, patience=5)
    direct = [r for r in rows if r["features"] == "dlib (direct)"]
    assert len(direct) == 1 and direct[0]["metric"] == "error_iod_pct" and direct[0]["value"] < 6.0
    assert direct[0]["n_test"] == len(frames["test"]["track"]) and direct[0]["n_groups"] == 1
    assert direct[0]["low"] == direct[0]["high"] == pytest.approx(direct[0]["value"])  # one group: no spread
    pitch = next(r for r in rows if r["metric"] == "mae_pitch")
    assert math.isnan(pitch["value"]) and "skipped" in pitch["note"]  # the sample set draws no pitch
    assert set(curves) == {"landmarks", "pose", "mouth open"} and all(len(c) == 5 for c in curves.values())

    torch.manual_seed(0)
    net = FabNet(FabNetConfig.named("small")).eval()
    emb = {s: FP.embed_frames(net.embed, f["images"], batch_size=8) for s, f in frames.items()}
    assert emb["train"].shape == (len(frames["train"]["track"]), 256) and np.isfinite(emb["train"]).all()
    rows, _ = FP.run_probes(emb, targets, groups, "untrained", max_epochs=3, patience=3)
    assert {r["target"] for r in rows} == {"landmarks", "pose", "mouth open"}
    assert all(set(r) == set(FP.ROW_FIELDS) for r in rows)
    assert all(math.isfinite(r["value"]) for r in rows if r["metric"] not in ("mae_pitch", "auc"))


def test_embed_frames_scales_uint8_and_batches_do_not_matter():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 3, 8, 8), dtype=np.uint8)
    mean = lambda b: b.mean(dim=(2, 3))  # noqa: E731
    a = FP.embed_frames(mean, images, batch_size=3)
    b = FP.embed_frames(mean, torch.from_numpy(images).float() / 255, batch_size=64)
    assert a.shape == (7, 3) and a.dtype == np.float32
    assert np.allclose(a, images.mean(axis=(2, 3)) / 255, atol=1e-6) and np.allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- the probe


def _problem(n=600, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=(d, k))
    return x, x @ w + np.array([5.0, -3.0, 100.0])[:k], w


def _r2(pred, y):
    return 1 - ((pred - y) ** 2).mean(axis=0) / y.var(axis=0)


def test_a_regression_probe_fits_a_linear_map_and_not_shuffled_targets():
    x, y, _ = _problem()
    fit = FP.fit_probe(x[:384], y[:384], x[384:480], y[384:480], "regression", **FAST)
    assert _r2(fit.predict(x[480:]), y[480:]).min() > 0.99  # held out
    shuffled = np.random.default_rng(1).permutation(y[:384])
    fit = FP.fit_probe(x[:384], shuffled, x[384:480], y[384:480], "regression", **FAST)
    assert _r2(fit.predict(x[480:]), y[480:]).max() < 0.3
    # 1-D targets predict 1-D
    fit = FP.fit_probe(x[:384], y[:384, 0], x[384:480], y[384:480, 0], "regression", max_epochs=2, patience=2)
    assert fit.predict(x[480:]).shape == (120,)


def test_a_binary_probe_learns_a_boundary_and_not_shuffled_labels():
    x, y, w = _problem(n=900)
    score = x @ w[:, 0]
    x = x[np.abs(score) > 0.5]  # a margin: the boundary is learnable from a few hundred rows
    labels = (x @ w[:, 0] > 0).astype(float)
    two = np.stack([labels, (x @ w[:, 1] > 0)], axis=1).astype(float)  # two outputs at once (two action units)
    tr, va, te = slice(0, 384), slice(384, 480), slice(480, None)
    fit = FP.fit_probe(x[tr], labels[tr], x[va], labels[va], "binary", **FAST)
    assert ((fit.predict(x[te]) > 0.5) == labels[te]).mean() > 0.97
    fit2 = FP.fit_probe(x[tr], two[tr], x[va], two[va], "binary", **FAST)
    assert fit2.predict(x[te]).shape == (len(x[te]), 2)
    assert ((fit2.predict(x[te]) > 0.5) == two[te]).mean() > 0.9
    shuffled = np.random.default_rng(1).permutation(labels[tr])
    fit = FP.fit_probe(x[tr], shuffled, x[va], labels[va], "binary", **FAST)
    assert ((fit.predict(x[te]) > 0.5) == labels[te]).mean() < 0.75


def test_a_class_probe_learns_classes():
    x, y, _ = _problem(n=900)
    classes = np.argmax(y - y.mean(axis=0), axis=1)
    fit = FP.fit_probe(x[:384], classes[:384], x[384:480], classes[384:480], "classes", **FAST)
    p = fit.predict(x[480:])
    assert p.shape == (420, 3) and np.allclose(p.sum(axis=1), 1)
    assert (p.argmax(axis=1) == classes[480:]).mean() > 0.85


def test_the_probe_is_deterministic_for_a_seed_and_keeps_the_best_epoch():
    x, y, _ = _problem(n=300)
    y = y + np.random.default_rng(5).normal(scale=3.0, size=y.shape)  # noisy: the val loss turns up at some point
    args = (x[:64], y[:64], x[64:128], y[64:128], "regression")
    kw = {"max_epochs": 40, "patience": 5, "lr": 3e-2, "batch_size": 16}
    a, b, c = FP.fit_probe(*args, seed=3, **kw), FP.fit_probe(*args, seed=3, **kw), FP.fit_probe(*args, seed=4, **kw)
    assert np.array_equal(a.predict(x[128:]), b.predict(x[128:]))
    drop = lambda curve: [{k: v for k, v in r.items() if k != "wall_s"} for r in curve]  # noqa: E731
    assert drop(a.curve) == drop(b.curve)
    assert not np.array_equal(a.predict(x[128:]), c.predict(x[128:]))
    # the curve: one row per epoch, steps counted (64 rows in batches of 16: 4 a epoch)
    assert [r["epoch"] for r in a.curve] == list(range(len(a.curve)))
    assert [r["step"] for r in a.curve] == [4 * (i + 1) for i in range(len(a.curve))]
    assert {"epoch", "step", "wall_s", "train_loss", "val_loss"} == set(a.curve[0])
    # the weights returned are the best validation epoch's: their val loss is the curve's minimum
    val = min(a.curve, key=lambda r: r["val_loss"])
    assert a.best_epoch == val["epoch"] and a.stopped_early and len(a.curve) < 40
    z = (y[64:128] - a.mean) / a.std
    assert float(((a.logits(x[64:128]) - z) ** 2).mean()) == pytest.approx(val["val_loss"], rel=1e-5)


def test_standardisation_uses_the_training_targets_only():
    x, y, _ = _problem(n=200)
    fit = FP.fit_probe(x[:100], y[:100], x[100:], y[100:] + 1000.0, "regression", max_epochs=2, patience=2)
    assert np.allclose(fit.mean, y[:100].mean(axis=0)) and np.allclose(fit.std, y[:100].std(axis=0))
    const = y[:100].copy()
    const[:, 1] = 7.0  # constant in train: centred only
    fit = FP.fit_probe(x[:100], const, x[100:], y[100:], "regression", max_epochs=2, patience=2)
    assert fit.std[1] == 1.0 and fit.mean[1] == 7.0 and np.isfinite(fit.predict(x[100:])).all()


def test_a_log_folder_gets_lightnings_csv_log(tmp_path):
    x, y, _ = _problem(n=120)
    fit = FP.fit_probe(x[:80], y[:80], x[80:], y[80:], "regression", max_epochs=3, patience=3, log_dir=tmp_path,
                       log_name="pose")
    logs = list((tmp_path / "pose").glob("version_*/metrics.csv"))
    assert len(logs) == 1
    header = logs[0].read_text().splitlines()[0].split(",")
    assert {"epoch", "step", "train_loss", "val_loss"} <= set(header) and len(fit.curve) == 3


def test_the_probe_is_batchnorm_then_a_linear_layer_without_bias():
    probe = FP.LinearProbe(10, 4)
    assert isinstance(probe.norm, torch.nn.BatchNorm1d) and probe.linear.bias is None
    assert probe(torch.randn(5, 10)).shape == (5, 4)


def test_class_weights_are_inverse_frequencies():
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], float)
    assert FP.class_weights(y, "binary").tolist() == [3.0, 3.0]
    assert FP.class_weights(np.array([[1], [1]]), "binary").tolist() == [1.0]  # no negatives: unweighted
    assert FP.class_weights(np.array([0, 0, 0, 2]), "classes", 3).tolist() == [4 / 9, 0.0, 4 / 3]


def test_bad_probe_inputs_are_refused():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="kind"):
        FP.fit_probe(x, x[:, 0], x, x[:, 0], "lasso")
    with pytest.raises(ValueError, match="0 or 1"):
        FP.fit_probe(x, x[:, 0] + 2, x, x[:, 0], "binary")
    with pytest.raises(ValueError, match="non-finite"):
        FP.fit_probe(np.full((4, 3), np.nan), x[:, 0], x, x[:, 0], "regression")
    with pytest.raises(ValueError, match="at least 2 training rows"):
        FP.fit_probe(x[:1], x[:1, 0], x, x[:, 0], "regression")


# ---------------------------------------------------------------- metrics and bootstrap, by hand


def _face68(scale=1.0):
    p = np.zeros((68, 2))
    p[:, 0] = np.arange(68) * 0.1 * scale
    p[36], p[45] = (0.0, 0.0), (10.0 * scale, 0.0)  # outer eye corners 10 apart
    return p


def test_landmark_error_in_percent_of_the_inter_ocular_distance():
    true = np.stack([_face68(), _face68(2.0)])  # inter-ocular 10 and 20
    pred = true + np.array([0.5, 0.0])  # every point 0.5 off: 5 % and 2.5 %
    s = FP.landmark_scores(pred, true, ["a", "b"], n_boot=200)
    assert s.metrics["error_iod_pct"].value == pytest.approx(3.75) and (s.n, s.n_groups) == (2, 2)
    low, high = s.metrics["error_iod_pct"][1:]
    assert low == pytest.approx(2.5) and high == pytest.approx(5.0)  # resamples: aa, ab, bb
    flat = FP.landmark_scores(pred.reshape(2, -1), true.reshape(2, -1), ["a", "b"], n_boot=200)
    assert flat.metrics == s.metrics
    five = np.array([[[0, 0], [20, 0], [10, 10], [5, 20], [15, 20]]], float)  # eye centres 20 apart
    assert FP.landmark_scores(five + [0, 1], five, ["x"]).metrics["error_iod_pct"] == pytest.approx((5.0, 5.0, 5.0))
    with pytest.raises(ValueError, match="inter-ocular"):
        FP.landmark_scores(np.zeros((1, 7, 2)), np.ones((1, 7, 2)), ["x"])


def test_pose_mae_per_angle_skips_a_constant_angle():
    true = np.array([[1.0, 0.0, 10.0], [-1.0, 0.0, 20.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])  # pitch always 0
    pred = true + np.array([[2.0, 0.5, -4.0], [-2.0, 0.5, 0.0], [0.0, 0.5, 2.0], [1.0, 0.5, 2.0]])
    s = FP.pose_scores(pred, true, [1, 1, 2, 2], n_boot=100)
    assert s.metrics["mae_roll"].value == pytest.approx(5 / 4)  # |2| + |-2| + 0 + 1
    assert s.metrics["mae_yaw"].value == pytest.approx(8 / 4)
    assert s.metrics["mae_mean"].value == pytest.approx((5 / 4 + 8 / 4) / 2)
    assert "mae_pitch" not in s.metrics and "pitch" in s.skipped and "every test row" in s.skipped["pitch"]
    # groups 1 and 2: roll MAE 2 and 0.5, so the interval spans exactly those
    assert s.metrics["mae_roll"][1:] == pytest.approx((0.5, 2.0))
    rows = FP._rows_of("f", "pose", s)
    assert [r["metric"] for r in rows] == ["mae_roll", "mae_yaw", "mae_mean", "mae_pitch"]
    assert "roll, yaw only" in rows[2]["note"] and math.isnan(rows[3]["value"])


def test_binary_accuracy_and_auc_by_hand():
    prob = np.array([0.1, 0.4, 0.35, 0.8])
    true = np.array([0, 0, 1, 1])
    s = FP.binary_scores(prob, true, ["a", "a", "b", "b"], n_boot=200)
    assert s.metrics["accuracy"].value == pytest.approx(0.75)  # 0.35 of a positive is below 0.5
    assert s.metrics["auc"].value == pytest.approx(0.75)  # pairs (pos > neg): 0.35>0.1, 0.8>0.1, 0.8>0.4 of 4
    assert FP._auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5  # a tie counts a half
    assert math.isnan(FP._auc(np.array([0.2, 0.3]), np.array([1, 1])))
    # resamples of one group hold one class: no AUC; the interval is over the others (a+b: 0.75)
    assert s.metrics["auc"][1:] == pytest.approx((0.75, 0.75))
    two = FP.binary_scores(np.stack([prob, prob], 1), np.stack([true, 1 - true], 1), [0, 0, 1, 1],
                           names=["au1", "au2"], n_boot=50)
    assert two.metrics["accuracy_au1"].value == 0.75 and two.metrics["accuracy_au2"].value == 0.25
    assert two.metrics["accuracy_mean"].value == 0.5 and two.metrics["auc_mean"].value == pytest.approx(0.5)


def test_bootstrap_over_groups_by_hand():
    # one group: no spread
    assert FP.bootstrap([1.0, 2.0, 6.0], ["g"] * 3) == (3.0, 3.0, 3.0)
    # two groups of one row each, values 0 and 1: resamples give 0 (1/4), 0.5 (1/2), 1 (1/4)
    s = FP.bootstrap([0.0, 1.0], ["a", "b"], n_boot=400)
    assert s == (0.5, 0.0, 1.0)
    # group sizes weigh: a has 1 row of 0, b 3 rows of 1: the mean is over rows (0.75); resample ab is 0.75 too
    s = FP.bootstrap([0.0, 1.0, 1.0, 1.0], ["a", "b", "b", "b"], n_boot=400)
    assert s.value == 0.75 and (s.low, s.high) == (0.0, 1.0)
    # the draws are numpy's default_rng(seed): the same seed, the same interval
    rng = np.random.default_rng(7)
    v, g = rng.normal(size=60), np.repeat(np.arange(12), 5)
    a, b = FP.bootstrap(v, g, seed=1), FP.bootstrap(v, g, seed=1)
    assert a == b and a.low < a.value < a.high
    idx = np.random.default_rng(1).integers(0, 12, size=(1000, 12))
    means = np.array([v.reshape(12, 5)[i].mean() for i in idx])
    assert (a.low, a.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    with pytest.raises(ValueError, match="one label per row"):
        FP.bootstrap([1.0, 2.0], ["a"])


# ---------------------------------------------------------------- run_probes on synthetic features


def _synthetic(seed=0):
    """Features that hold landmarks, pose and mouth opening linearly (plus noise), for three splits."""
    rng = np.random.default_rng(seed)
    base = _face68(12.0) + 60.0
    mix = rng.normal(size=(8, 32))
    features, targets, groups = {}, {}, {}
    for s, n in (("train", 256), ("val", 64), ("test", 96)):
        z = rng.normal(size=(n, 8))  # latent: 2 landmark shifts, scale, roll, yaw, opening, 2 nuisance
        lm = base * (1 + 0.05 * z[:, 2, None, None]) + 4 * z[:, None, :2]
        pose = np.stack([5 * z[:, 3], np.zeros(n), 8 * z[:, 4]], axis=1)
        opening = np.clip(0.3 + 0.3 * z[:, 5], 0, 1)
        features[s] = z @ mix + 0.01 * rng.normal(size=(n, 32))
        targets[s] = {"landmarks": lm, "pose": pose, "opening": opening}
        groups[s] = np.repeat(np.arange(n // 8), 8)
    return features, targets, groups


def test_run_probes_scores_each_target_and_never_fits_on_test():
    features, targets, groups = _synthetic()
    rows, curves = FP.run_probes(features, targets, groups, "synthetic", **FAST)
    by = {(r["target"], r["metric"]): r for r in rows}
    assert by[("landmarks", "error_iod_pct")]["value"] < 2.0
    assert by[("pose", "mae_roll")]["value"] < 0.5 and by[("pose", "mae_yaw")]["value"] < 0.8
    assert math.isnan(by[("pose", "mae_pitch")]["value"])
    assert by[("mouth open", "accuracy")]["value"] > 0.9 and "opening > 0.2" in by[("mouth open", "accuracy")]["note"]
    for r in rows:
        assert set(r) == set(FP.ROW_FIELDS) and r["features"] == "synthetic"
        assert r["n_test"] == 96 and r["n_groups"] == 12
        if math.isfinite(r["value"]):
            assert r["low"] <= r["value"] <= r["high"]
    assert set(curves) == {"landmarks", "pose", "mouth open"}
    # other test targets change the scores, never the fits
    moved = {**targets, "test": {k: v + 1.0 for k, v in targets["test"].items()}}
    rows2, curves2 = FP.run_probes(features, moved, groups, "synthetic", **FAST)
    drop = lambda c: [{k: v for k, v in r.items() if k != "wall_s"} for r in c]  # noqa: E731
    assert all(drop(curves[t]) == drop(curves2[t]) for t in curves)
    values = lambda rs: {(r["target"], r["metric"]): r["value"] for r in rs}  # noqa: E731
    assert values(rows2) != values(rows)


def test_run_probes_leaves_out_rows_without_features_and_scores_direct_points():
    features, targets, groups = _synthetic(1)
    features = {k: v.copy() for k, v in features.items()}
    features["train"][:3] = np.nan  # three frames stored without dlib points
    n = len(targets["test"]["landmarks"])
    targets["test"]["landmarks"] = np.repeat((_face68(12.0) + 60.0)[None], n, axis=0)  # inter-ocular 120 everywhere
    direct = targets["test"]["landmarks"] + 0.6  # 0.6 px off in x and y: 0.6 * sqrt(2) / 120 * 100 %
    rows, _ = FP.run_probes(features, targets, groups, "dlib", which=("landmarks",), direct_landmarks=direct,
                            max_epochs=2, patience=2)
    assert [r["features"] for r in rows] == ["dlib", "dlib (direct)"]
    assert "3 train rows" in rows[0]["note"]
    assert rows[1]["value"] == pytest.approx(0.6 * math.sqrt(2) / 120 * 100)
    with pytest.raises(ValueError, match="unknown probe target"):
        FP.run_probes(features, targets, groups, "x", which=("age",))
