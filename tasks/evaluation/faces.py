"""The face tables: FAb-Net's linear probes and X2Face's reconstruction and pose, beside the papers' numbers.

:func:`evaluate_fabnet` scores FAb-Net checkpoints by linear probes on their
frozen embedding (:mod:`tasks.evaluation.face_probes`: fit on the build's
train split, early-stopped on val, scored on test, whose identities neither
the encoder nor the probe saw), with two baselines through the same probes:
the *untrained encoder* (the network the ``--seed`` draws before any
training: the initial weights of the trained 1-source run) and *dlib's 68
points* (the shards' ``landmarks`` column as features, and as landmark
predictions scored directly).  The truth of a face *sample set* comes from
its generator (:func:`tasks.evaluation.face_probes.crop_truth`): 68
landmarks, roll/pitch/yaw, the mouth opening; ``pitch`` is always 0 there,
so its MAE is not scored.

:func:`evaluate_x2face` scores X2Face checkpoints on the test split: the L1
between each generated frame and its driving frame, with 1 source and with
3 (their embedded faces averaged, thesis ch. 3 §5), beside the L1 of the
source frame itself against the driving frame (the identity warp: what
not moving a pixel gives); and the head pose read from the driving vector
by ``f(v->p)`` (thesis Table 2), fitted on the train split's vectors and
truth poses, MAE on test.

Intervals are 95 % bootstraps over the test utterances (face tracks): a
sample build has one or two test identities, too few to resample.

What these numbers are and are not: on a sample set the faces are 3
photographs (mirrored from the fourth identity on) moved by homographies,
so a held-out identity is a held-out *video* of a face the train split
may also show; the papers' numbers are on VoxCeleb/300-W/MAFL/AFLW, and
are beside ours for scale only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tasks.evaluation import face_probes as FP

SPLITS = ("train", "val", "test")

# The papers' numbers (FAb-Net, BMVC 2018, tables 1-3; X2Face, thesis ch. 3 tables 1-2).
PAPER_FABNET = {
    "fabnet": {"landmarks": "300-W 6.31 / MAFL 3.78", "pose": "AFLW 8.77 (roll 5.54, pitch 7.84, yaw 12.93)",
               "mouth open": "EmotioNet AU AUC 76.4"},
    "fabnet-curriculum": {"landmarks": "300-W 5.73 / MAFL 3.49", "pose": "AFLW 7.96 (roll 5.33, pitch 7.21, yaw 11.34)",
                          "mouth open": "EmotioNet AU AUC 77.6"},
    "fabnet-curriculum-3src": {"landmarks": "300-W 5.71 / MAFL 3.44",
                               "pose": "AFLW 7.65 (roll 5.14, pitch 7.13, yaw 10.70)",
                               "mouth open": "EmotioNet AU AUC 78.6"},
}
PAPER_X2FACE = {("I", 1): "0.0632", ("II", 1): "0.0630", ("I", 3): "0.0524", ("II", 3): "0.0521",
                "pose": "AFLW 9.36 (roll 5.85, pitch 7.59, yaw 14.62)"}


def _embeddings(net, images: np.ndarray) -> np.ndarray:
    return FP.embed_frames(net.embed, images)


def split_data(data_root: str, samples_dir: str, size: int, margin: float) -> dict:
    """Per split: the frames (images at ``size``) and the generator's truth in stored-crop pixels."""
    out = {}
    for split in SPLITS:
        frames = FP.split_frames(data_root, split, size)
        out[split] = {"frames": frames, "truth": FP.crop_truth(samples_dir, frames, margin=margin)}
    return out


def _targets(data: dict) -> dict:
    """Per split, the truth the probes fit: landmarks, and pose and mouth opening where the data has them."""
    return {s: {k: d["truth"][k] for k in ("landmarks", "pose", "opening") if k in d["truth"]} for s, d in data.items()}


def split_groups(data: dict) -> dict:
    """Per split of :func:`split_data`'s output, each frame's face track: the bootstrap's groups."""
    return {s: d["frames"]["track"] for s, d in data.items()}


def evaluate_fabnet(checkpoints: list[str], data_root: str | None, samples_dir: str | None, *, margin: float = 0.4,
                    seed: int = 0, n_boot: int = 1000, probe_kw: dict | None = None, log=print,
                    data_fn=None) -> dict:
    """Probe rows of every checkpoint and of the baselines; ``{"rows", "curves", "figure"}``.

    ``figure`` holds what :func:`fabnet_figure` draws: the first
    checkpoint's landmark probe predictions on test crops.  ``data_fn(size)``,
    when given, supplies the splits instead of the build and sample set (a
    labelled still-image set: :func:`tasks.evaluation.annotated.annotated_data`);
    without dlib's points there, the dlib rows are left out.
    """
    import lightning.pytorch as L

    from models.fabnet import FabNet, FabNetConfig
    from tasks.training.fabnet import load_net, variant_name

    if not checkpoints:
        raise ValueError("no FAb-Net checkpoint given (--checkpoint CKPT, one per variant)")
    probe_kw = dict(probe_kw or {})
    from tasks.training.trainer import read_checkpoint

    nets, config_names = {}, set()
    for ckpt in checkpoints:
        hp = read_checkpoint(ckpt)["hyper_parameters"]
        net = load_net(ckpt)
        config_names.add(hp["config"])
        name = variant_name(int(hp.get("sources", 1)), bool(hp.get("curriculum", False)))
        nets[name if name not in nets else f"{name} ({Path(ckpt).parent.parent.name})"] = net
    if len(config_names) != 1:
        raise ValueError(f"the checkpoints are of configs {sorted(config_names)}: evaluate one config at a time")
    config_name = config_names.pop()
    size = FabNetConfig.named(config_name).image_size
    data = data_fn(size) if data_fn else split_data(data_root, samples_dir, size, margin)
    targets, groups = _targets(data), split_groups(data)
    log("faces: " + ", ".join(f"{s} {len(d['frames']['track'])} frames" for s, d in data.items()))
    L.seed_everything(seed, verbose=False)  # the untrained encoder: what --seed draws before training
    untrained = FabNet(FabNetConfig.named(config_name, confidence=False)).eval()  # as FabNetTask builds it
    rows, curves, embedded = [], {}, {}
    for name, net in {**nets, "untrained encoder": untrained}.items():
        embedded[name] = feats = {s: _embeddings(net, data[s]["frames"]["images"]) for s in SPLITS}
        r, c = FP.run_probes(feats, targets, groups, name, seed=seed, n_boot=n_boot, **probe_kw)
        for row in r:
            row["paper"] = PAPER_FABNET.get(name, {}).get(row["target"], "")
        rows += r
        curves[name] = c
        log(f"faces: probes of {name} done")
    if "landmarks" in data["test"]["frames"]:  # dlib's points, stored by a build
        dlib = {s: data[s]["frames"]["landmarks"].reshape(len(data[s]["frames"]["landmarks"]), -1) / FP.CROP
                for s in SPLITS}
        r, c = FP.run_probes(dlib, targets, groups, "dlib points", seed=seed, n_boot=n_boot,
                             direct_landmarks=data["test"]["frames"]["landmarks"], **probe_kw)
        rows += [{**row, "paper": ""} for row in r]
        curves["dlib points"] = c
    first = next(iter(nets))
    figure = _landmark_predictions(embedded[first], targets, data["test"], seed, probe_kw)
    return {"rows": rows, "curves": curves, "figure": {"name": first, **figure}, "size": size}


def _landmark_predictions(feats: dict, targets: dict, test: dict, seed: int, probe_kw: dict) -> dict:
    """The landmark probe of ``feats`` refitted (train, val) for the figure: test predictions in crop pixels."""
    y = {s: np.asarray(targets[s]["landmarks"], np.float64).reshape(len(feats[s]), -1) / FP.CROP for s in SPLITS}
    keep = {s: np.isfinite(y[s]).all(axis=1) for s in SPLITS}
    fit = FP.fit_probe(feats["train"][keep["train"]], y["train"][keep["train"]], feats["val"][keep["val"]],
                       y["val"][keep["val"]], "regression", seed=seed, **probe_kw)
    true = np.asarray(targets["test"]["landmarks"])
    pred = fit.predict(feats["test"]).reshape(true.shape) * FP.CROP
    return {"images": test["frames"]["images"], "pred": pred, "true": true,
            "dlib": test["frames"].get("landmarks"), "track": test["frames"]["track"]}


def fabnet_figure(figure: dict, out_png, n: int = 6) -> str:
    """Predicted (probe, red), true (green) and dlib's (blue) landmarks over ``n`` test crops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, size = figure["images"], figure["images"].shape[-1]
    pick = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    fig, axes = plt.subplots(1, len(pick), figsize=(2.2 * len(pick), 2.5))
    scale = size / FP.CROP
    for ax, i in zip(np.atleast_1d(axes), pick):
        ax.imshow(np.transpose(images[i], (1, 2, 0)))
        dlib = () if figure["dlib"] is None else ((figure["dlib"][i], "deepskyblue"),)
        for points, colour in ((figure["true"][i], "lime"), *dlib, (figure["pred"][i], "red")):
            p = (np.asarray(points) + 0.5) * scale - 0.5
            ax.scatter(p[:, 0], p[:, 1], s=3, c=colour)
        ax.set_title(figure["track"][i].split("/")[0], fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{figure['name']}: landmark probe (red), truth (green), dlib (blue); test crops", fontsize=8)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return str(out_png)


def evaluate_x2face(checkpoints: list[str], data_root: str, samples_dir: str | None = None, *, margin: float = 0.4,
                    seed: int = 0, n_boot: int = 1000, pose_maps_dir=None, log=print) -> dict:
    """Test L1 (1 and 3 sources) and identity-warp rows, and the f(v->p) pose rows; ``{"rows", "nets", "pose_maps"}``.

    With ``pose_maps_dir``, each checkpoint's fitted ``f(v->p)``/``f(p->v)``
    are written there (``x2face-pose-maps-<i>.pt``) for ``drive x2face --pose``.
    """
    from tasks.training.trainer import read_checkpoint
    from tasks.training.x2face import evaluate_l1, fit_pose_maps, load_net, save_pose_maps

    if not checkpoints:
        raise ValueError("no X2Face checkpoint given (--x2face-checkpoint CKPT)")
    rows, nets, saved, extras = [], {}, [], []
    for i, ckpt in enumerate(checkpoints):
        hp = read_checkpoint(ckpt)["hyper_parameters"]
        net = load_net(ckpt)
        stage, trained_k = str(hp.get("stage", "I")), int(hp.get("sources", 1))
        name = f"x2face stage {stage} (trained with {trained_k} source{'s' if trained_k > 1 else ''})"
        nets[name] = net
        for k in (1, 3):
            ex = evaluate_l1(net, data_root, "test", sources=k, seed=seed)
            if not ex:
                continue
            groups = np.array([f"{e['identity']}/{e['video_id']}/{e['utterance']}" for e in ex])
            l1 = np.array([e["l1"] for e in ex])
            ident = np.array([e["identity_l1"] for e in ex])
            for label, values, paper in ((name, l1, PAPER_X2FACE.get((stage, k), "")),
                                         ("identity warp (source frame as the generated frame)", ident, "")):
                score = FP.bootstrap(values, groups, n_boot=n_boot, seed=seed)
                rows.append({"model": label, "sources": k, "metric": "test L1 (generated vs driving)",
                             "value": score.value, "low": score.low, "high": score.high, "n_test": len(values),
                             "n_groups": len(set(groups)), "paper": paper})
            ratio = float(l1.mean() / ident.mean())
            rows.append({"model": name, "sources": k, "metric": "L1 / identity-warp L1", "value": ratio,
                         "low": float("nan"), "high": float("nan"), "n_test": len(l1),
                         "n_groups": len(set(groups)), "paper": ""})
            log(f"faces: {name}, {k} source(s): L1 {l1.mean():.4f} vs identity warp {ident.mean():.4f}")
        if samples_dir:
            data = split_data(data_root, samples_dir, net.config.image_size, margin)
            vectors = {s: _driving_vectors(net, data[s]["frames"]["images"]) for s in SPLITS}
            poses = {s: data[s]["truth"]["pose"] for s in SPLITS}
            maps = fit_pose_maps(vectors["train"], poses["train"], seed=seed)
            if pose_maps_dir is not None:
                saved.append(save_pose_maps(maps, Path(pose_maps_dir) / f"x2face-pose-maps-{i}.pt", ckpt))
            with torch.no_grad():
                pred = maps.f_vp(torch.as_tensor(vectors["test"], dtype=torch.float32)).numpy()
            scores = FP.pose_scores(pred, poses["test"], data["test"]["frames"]["track"], n_boot=n_boot, seed=seed)
            extras.append({"name": name, "net": net, "maps": maps, "data": data, "vectors": vectors})
            for metric, s in scores.metrics.items():
                rows.append({"model": name, "sources": 1, "metric": f"pose from the driving vector, {metric} (deg)",
                             "value": s.value, "low": s.low, "high": s.high, "n_test": scores.n,
                             "n_groups": scores.n_groups,
                             "paper": PAPER_X2FACE["pose"] if metric == "mae_mean" else ""})
        if samples_dir and extras and extras[-1]["net"] is net:
            audio = _audio_rows(extras[-1], samples_dir, n_boot, seed)
            rows += audio.pop("rows")
            extras[-1].update(audio)
    return {"rows": rows, "nets": nets, "pose_maps": saved, "extras": extras}


def frame_audio_features(samples_dir: str, frames: dict, work_dir) -> np.ndarray:
    """Log-mel features (5 windows of 40 ms, 40 bands: 0.2 s centred on the frame) of each frame's audio,
    read from the sample set's videos (``<samples>/videos/<video_id>.mp4``)."""
    from tasks.media import decode as media
    from tasks.training.x2face import audio_features

    out = None
    for vid in dict.fromkeys(frames["video_id"].tolist()):
        video = Path(samples_dir) / "videos" / f"{vid}.mp4"
        x, sr = media.read_wav(media.extract_audio(video, Path(work_dir) / f"{vid}.wav", 16000))
        fps = media.probe(str(video)).fps
        rows = frames["video_id"] == vid
        f = audio_features(x, sr, frames["frame_index"][rows] / fps, windows=5)
        out = np.zeros((len(frames["video_id"]), f.shape[1]), np.float32) if out is None else out
        out[rows] = f
    return out


def _audio_rows(extra: dict, samples_dir: str, n_boot: int, seed: int) -> dict:
    """Audio -> driving vector (ridge least squares, fitted on train, ridge chosen on val): test R^2 rows."""
    import tempfile

    from tasks.training.x2face import fit_audio_map

    data, vectors = extra["data"], extra["vectors"]
    with tempfile.TemporaryDirectory(prefix="sightsound-audio-") as tmp:
        feats = {s: frame_audio_features(samples_dir, data[s]["frames"], tmp) for s in SPLITS}
    amap = fit_audio_map(feats["train"], vectors["train"], feats["val"], vectors["val"])
    pred, true = amap(feats["test"]), vectors["test"]
    tracks = data["test"]["frames"]["track"]
    mean_train = vectors["train"].mean(axis=0)
    err = ((pred - true) ** 2).sum(axis=1)  # per frame, squared error of the audio's vector
    base = ((mean_train - true) ** 2).sum(axis=1)  # ... of the train mean (R^2 = 1 - err / base)
    r2 = 1 - err.sum() / base.sum()
    rng = np.random.default_rng(seed)
    groups = np.unique(tracks)
    boots = []
    for _ in range(n_boot if len(groups) > 1 else 0):
        pick = np.concatenate([np.flatnonzero(tracks == g) for g in rng.choice(groups, len(groups))])
        boots.append(1 - err[pick].sum() / base[pick].sum())
    low, high = (np.percentile(boots, [2.5, 97.5]) if boots else (r2, r2))
    row = {"model": extra["name"], "sources": 1, "metric": "audio -> driving vector, test R^2 (vs the train mean)",
           "value": float(r2), "low": float(low), "high": float(high), "n_test": len(true), "n_groups": len(groups),
           "paper": "qualitative only (thesis Fig. 7)"}
    return {"rows": [row], "audio_map": amap, "audio_features": feats}


def pose_sweep(extra: dict, out_png, angles=(-10.0, -5.0, 0.0, 5.0, 10.0), form: str = "eq1") -> str:
    """One test source driven through roll (top) and yaw (bottom) by ``angles`` degrees around its own pose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.training.x2face import drive_to_pose

    net, maps, test = extra["net"], extra["maps"], extra["data"]["test"]["frames"]
    src = torch.as_tensor(test["images"][:1]).float() / 255.0
    with torch.no_grad():
        embedded, _ = net.embed(src)
        v = net.driving_vector(src)
        p0 = maps.f_vp(v)[0].numpy()
    fig, axes = plt.subplots(2, len(angles) + 1, figsize=(1.6 * (len(angles) + 1), 3.4))
    for r, (label, axis) in enumerate((("roll", 0), ("yaw", 2))):
        axes[r, 0].imshow(src[0].permute(1, 2, 0).numpy())
        axes[r, 0].set_title("source", fontsize=6)
        for c, a in enumerate(angles):
            p = p0.copy()
            p[axis] += a
            vd = drive_to_pose(v.numpy(), p[None], maps.f_vp, maps.f_pv, form=form)
            with torch.no_grad():
                g = net.generate(embedded, torch.as_tensor(vd))[0]
            axes[r, c + 1].imshow(g.permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r, c + 1].set_title(f"{label} {a:+.0f}", fontsize=6)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return str(out_png)


def audio_strip(extra: dict, out_png, n: int = 8) -> str:
    """Top: ``n`` frames of a test utterance; bottom: a test source driven by those frames' audio (thesis §4.2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.training.x2face import drive_with_audio

    net, maps, amap = extra["net"], extra["maps"], extra["audio_map"]
    test, feats = extra["data"]["test"]["frames"], extra["audio_features"]["test"]
    track = test["track"][0]
    rows = np.flatnonzero(test["track"] == track)[:n]
    src_i = int(np.flatnonzero(test["track"] != track)[0]) if (test["track"] != track).any() else int(rows[0])
    src = torch.as_tensor(test["images"][src_i:src_i + 1]).float() / 255.0
    with torch.no_grad():
        embedded, _ = net.embed(src)
        v = net.driving_vector(src).numpy()
    vd = drive_with_audio(np.repeat(v, len(rows), 0), feats[rows], np.repeat(feats[src_i:src_i + 1], len(rows), 0),
                          amap, maps.f_vp, maps.f_pv)
    with torch.no_grad():
        gen = net.generate(embedded.repeat(len(rows), 1, 1, 1), torch.as_tensor(vd))
    fig, axes = plt.subplots(2, len(rows), figsize=(1.5 * len(rows), 3.2))
    for c, i in enumerate(rows):
        axes[0, c].imshow(np.transpose(test["images"][i], (1, 2, 0)))
        axes[0, c].set_title(f"frame {test['frame_index'][i]}", fontsize=6)
        axes[1, c].imshow(gen[c].permute(1, 2, 0).clamp(0, 1).numpy())
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"audio of {track} (top: its frames) driving a test source (bottom; another track where there is one)",
                 fontsize=7)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return str(out_png)


def _driving_vectors(net, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(images[i:i + batch_size]).float() / 255.0
            out.append(net.driving_vector(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.config.driving_dim), np.float32)


def x2face_grid(net, data_root: str, out_png, *, n_sources: int = 3, n_driving: int = 4) -> str:
    """Rows: test source frames; columns: their embedded face, then the frames generated from driving frames
    (the first row: the driving frames themselves), drawn from every test track (same and other identities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = FP.split_frames(data_root, "test", net.config.image_size)
    tracks = list(dict.fromkeys(frames["track"]))
    first = [int(np.flatnonzero(frames["track"] == t)[0]) for t in tracks]
    sources = (first * n_sources)[:n_sources]
    every = np.arange(len(frames["track"]))
    driving = every[np.linspace(0, len(every) - 1, n_driving).round().astype(int)]
    imgs = torch.as_tensor(frames["images"]).float() / 255.0
    with torch.no_grad():
        embedded, _ = net.embed(imgs[sources])
        v = net.driving_vector(imgs[driving])
        generated = [[net.generate(embedded[i:i + 1], v[j:j + 1])[0] for j in range(len(driving))]
                     for i in range(len(sources))]
    fig, axes = plt.subplots(len(sources) + 1, n_driving + 2, figsize=(1.6 * (n_driving + 2), 1.6 * (len(sources) + 1)))

    def show(ax, t, title=""):
        ax.imshow(t.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=6)
        ax.axis("off")

    for ax in axes[0, :2]:
        ax.axis("off")
    for j, d in enumerate(driving):
        show(axes[0, j + 2], imgs[d], f"driving {frames['identity'][d]}")
    for i, s in enumerate(sources):
        show(axes[i + 1, 0], imgs[s], f"source {frames['identity'][s]}")
        show(axes[i + 1, 1], embedded[i], "embedded face")
        for j in range(len(driving)):
            show(axes[i + 1, j + 2], generated[i][j], "generated")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return str(out_png)
