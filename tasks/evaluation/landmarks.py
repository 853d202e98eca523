"""The landmark table: landmarks regressed from Jakab et al.'s discovered keypoints, beside FAb-Net's probe.

Jakab et al. (NeurIPS 2018, §4.2) evaluate their keypoints by freezing the
keypoint network and fitting "a linear regressor (without bias) from our
unsupervised keypoints to 5 manually-labelled ones", the error "normalised
by the inter-ocular distance expressed as a percentage".  Here the
regressor is the linear probe of :mod:`tasks.evaluation.face_probes` (the
FAb-Net paper's: BatchNorm then a linear layer without bias, Adam 1e-3,
early-stopped on the validation split), on the ``2K`` coordinates of the K
points, so the keypoints and FAb-Net's embedding are read by one regressor
and one metric.  (The BatchNorm's shift gives the map a bias; the paper
also reports its VoxCeleb model "with bias", 3.63 on MAFL against 3.94.)
The targets are the face sample set's 68 landmarks from its generator
(:func:`tasks.evaluation.face_probes.crop_truth`); MAFL (5 points) and
300-W (68) go through the same probe from their readers
(:mod:`tasks.datasets.face_annotations`).

The class-embedding network (Wiles, Koepke, Zisserman 2019, §5) is read the
same way from its 256-d embedding (:func:`evaluate_class_embeddings`; the
paper's "lin" rows), and :func:`warp_figure` draws its warp at each level.

Baselines, through the same regressor: each K's *untrained* keypoint
network and the untrained class-embedding network (the weights the seed
draws before training).

:func:`point_correlations` measures whether the points follow the face:
for each discovered point, the true landmark whose x and y its own x and y
follow best across the test frames (Pearson r, the smaller of the two
maximised), and those two r values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tasks.evaluation import face_probes as FP
from tasks.evaluation.faces import split_data, split_groups

SPLITS = ("train", "val", "test")

# The papers' landmark errors (% of the inter-ocular distance), printed beside the sample rows for scale.
PAPER_LANDMARKS = {
    "keypoints-10": "MAFL 3.19 (CelebA), Jakab et al. 2018 table 1",
    "keypoints-30": "MAFL 2.58 (CelebA); 3.94 (VoxCeleb; 3.63 with bias), Jakab et al. 2018 table 1",
    "fabnet": "300-W 6.31 / MAFL 3.78 (FAb-Net table 1)",
    "fabnet-curriculum": "300-W 5.73 / MAFL 3.49",
    "fabnet-curriculum-3src": "300-W 5.71 / MAFL 3.44",
    "class-embedding": "300-W 4.93 / MAFL 3.21 (r = 3, linear; class embeddings table 3)",
}


def keypoint_features(net, images, batch_size: int = 64) -> np.ndarray:
    """``[n, K, 2]`` keypoints ``(x, y)`` in ``[-1, 1]`` of uint8 ``[n, 3, S, S]`` images (the net in eval mode)."""
    flat = FP.embed_frames(net.keypoints, images, batch_size=batch_size)
    return flat.reshape(len(flat), -1, 2)


def point_correlations(points: np.ndarray, truth: np.ndarray) -> list[dict]:
    """For each of the K points, the true landmark it follows best, with Pearson r in x and in y.

    ``points`` [n, K, 2] and ``truth`` [n, L, 2] over the same frames (any
    units: correlation is scale-free).  For point ``k`` and landmark ``l``:
    ``r_x`` = corr(points[:, k, 0], truth[:, l, 0]) and ``r_y`` likewise in
    y; the landmark kept is the one with the largest ``min(r_x, r_y)``.
    Rows with a non-finite value are left out; a coordinate that does not
    vary gives r = 0.
    """
    p = np.asarray(points, np.float64)
    t = np.asarray(truth, np.float64)
    ok = np.isfinite(p.reshape(len(p), -1)).all(1) & np.isfinite(t.reshape(len(t), -1)).all(1)
    p, t = p[ok], t[ok]

    def standardised(a):  # [n, m] -> columns with mean 0 and norm 1 (zero where constant)
        a = a - a.mean(0)
        norm = np.sqrt((a ** 2).sum(0))
        return np.where(norm > 1e-12, a / np.where(norm > 1e-12, norm, 1.0), 0.0)

    rx = standardised(p[..., 0]).T @ standardised(t[..., 0])  # [K, L]
    ry = standardised(p[..., 1]).T @ standardised(t[..., 1])
    best = np.minimum(rx, ry).argmax(axis=1)
    return [{"point": k, "landmark": int(best[k]), "r_x": float(rx[k, best[k]]), "r_y": float(ry[k, best[k]])}
            for k in range(p.shape[1])]


def _landmark_targets(data: dict) -> dict:
    return {s: {"landmarks": d["truth"]["landmarks"]} for s, d in data.items()}


def evaluate_keypoints(checkpoints: list[str], data_root: str | None, samples_dir: str | None, *,
                       margin: float = 0.4, seed: int = 0, n_boot: int = 1000, probe_kw: dict | None = None,
                       log=print, data_fn=None) -> dict:
    """Landmark rows of every keypoint checkpoint and of each K's untrained network.

    Returns ``{"rows", "curves", "correlations", "figure"}``:
    ``correlations[name]`` is :func:`point_correlations` on the test split
    (the truth in crop pixels), ``figure`` what :func:`keypoint_figure`
    draws for the first checkpoint.  ``data_fn(size)``: the splits from
    elsewhere (:func:`tasks.evaluation.annotated.annotated_data`), as in
    :func:`tasks.evaluation.faces.evaluate_fabnet`.
    """
    import lightning.pytorch as L

    from models.keypoints import KeypointBottleneck, KeypointConfig
    from tasks.training.keypoints import load_net
    from tasks.training.trainer import read_checkpoint

    if not checkpoints:
        raise ValueError("no keypoint checkpoint given (--keypoints-checkpoint CKPT)")
    nets, config_names = {}, set()
    for ckpt in checkpoints:
        hp = read_checkpoint(ckpt)["hyper_parameters"]
        net = load_net(ckpt)
        config_names.add(hp["config"])
        name = (f"keypoints-{int(hp['keypoints'])}" + ("-perceptual" if hp.get("loss") == "perceptual" else "")
                + ("-warps" if hp.get("warps") else ""))
        nets[name if name not in nets else f"{name} ({Path(ckpt).parent.parent.name})"] = net
    if len(config_names) != 1:
        raise ValueError(f"the keypoint checkpoints are of configs {sorted(config_names)}: evaluate one config at a "
                         "time")
    config_name = config_names.pop()
    size = KeypointConfig.named(config_name).image_size
    data = data_fn(size) if data_fn else split_data(data_root, samples_dir, size, margin)
    targets = _landmark_targets(data)
    groups = split_groups(data)
    untrained = {}
    for net in nets.values():
        k = net.config.keypoints
        if f"untrained keypoints-{k}" not in untrained:
            L.seed_everything(seed, verbose=False)  # what --seed draws before training (train keypoints seeds so)
            untrained[f"untrained keypoints-{k}"] = KeypointBottleneck(KeypointConfig.named(config_name, k)).eval()
    rows, curves, correlations, points_of = [], {}, {}, {}
    for name, net in {**nets, **untrained}.items():
        points = {s: keypoint_features(net, data[s]["frames"]["images"]) for s in SPLITS}
        points_of[name] = points
        feats = {s: p.reshape(len(p), -1) for s, p in points.items()}
        r, c = FP.run_probes(feats, targets, groups, name, which=("landmarks",), seed=seed, n_boot=n_boot,
                             **(probe_kw or {}))
        base = name.replace("untrained ", "").split(" (")[0].replace("-perceptual", "").replace("-warps", "")
        for row in r:
            row["paper"] = "" if name.startswith("untrained") else PAPER_LANDMARKS.get(base, "")
        rows += r
        curves[name] = c
        correlations[name] = point_correlations(points["test"], data["test"]["truth"]["landmarks"])
        log(f"landmarks: {name} done")
    first = next(iter(nets))
    figure = {"name": first, "images": data["test"]["frames"]["images"], "points": points_of[first]["test"],
              "true": data["test"]["truth"]["landmarks"], "track": data["test"]["frames"]["track"]}
    return {"rows": rows, "curves": curves, "correlations": correlations, "figure": figure, "size": size}


def evaluate_class_embeddings(checkpoints: list[str], data_root: str | None, samples_dir: str | None, *,
                              margin: float = 0.4, seed: int = 0, n_boot: int = 1000, probe_kw: dict | None = None,
                              log=print, data_fn=None) -> dict:
    """Landmark rows of the probe on each class-embedding checkpoint's embedding and on the untrained network's;
    ``{"rows", "curves", "nets", "data_root"}`` (``nets``: the trained networks, for :func:`warp_figure`);
    ``data_fn(size)``: the splits from elsewhere, as in :func:`evaluate_keypoints`."""
    import lightning.pytorch as L

    from models.class_embedding import ClassEmbeddingConfig, ClassEmbeddingNet
    from tasks.training.class_embedding import load_net
    from tasks.training.trainer import read_checkpoint

    if not checkpoints:
        raise ValueError("no class-embedding checkpoint given (--class-embedding-checkpoint CKPT)")
    nets, config_names = {}, set()
    for ckpt in checkpoints:
        hp = read_checkpoint(ckpt)["hyper_parameters"]
        config_names.add(hp["config"])
        name = "class-embedding" + ("-ph" if hp.get("loss") == "photometric" else "")
        nets[name if name not in nets else f"{name} ({Path(ckpt).parent.parent.name})"] = load_net(ckpt)
    if len(config_names) != 1:
        raise ValueError(f"the class-embedding checkpoints are of configs {sorted(config_names)}: evaluate one "
                         "config at a time")
    config = ClassEmbeddingConfig.named(config_names.pop())
    data = data_fn(config.image_size) if data_fn else split_data(data_root, samples_dir, config.image_size, margin)
    targets = _landmark_targets(data)
    groups = split_groups(data)
    L.seed_everything(seed, verbose=False)  # what --seed draws before training
    untrained = ClassEmbeddingNet(config).eval()
    rows, curves = [], {}
    for name, net in {**nets, "untrained class-embedding": untrained}.items():
        feats = {s: FP.embed_frames(net.embed, data[s]["frames"]["images"]) for s in SPLITS}
        r, c = FP.run_probes(feats, targets, groups, name, which=("landmarks",), seed=seed, n_boot=n_boot,
                             **(probe_kw or {}))
        for row in r:
            row["paper"] = "" if name.startswith("untrained") else PAPER_LANDMARKS["class-embedding"]
        rows += r
        curves[name] = c
        log(f"landmarks: {name} done")
    return {"rows": rows, "curves": curves, "nets": nets, "size": config.image_size}


def warp_figure(net, data_root: str, out_png, n: int = 4) -> str:
    """For ``n`` test pairs: source, target, and the class-embedding warp at each level (upsampled), one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.training.windows import FacePairs

    pairs = []
    for item in FacePairs.from_root(data_root, "test", sources=1, size=net.config.image_size, shuffle=False):
        pairs.append(item)
        if len(pairs) == n:
            break
    if not pairs:
        raise ValueError(f"{data_root}: no test face pairs to draw")
    source = torch.stack([p["sources"][0] for p in pairs])
    target = torch.stack([p["target"] for p in pairs])
    with torch.no_grad():
        levels = net.eval()(source, target).levels
    columns = ["source", "target"] + [f"level {r + 1} ({lv.generated.shape[-1]} px)" for r, lv in enumerate(levels)]
    fig, axes = plt.subplots(len(pairs), len(columns), figsize=(1.8 * len(columns), 1.9 * len(pairs)),
                             squeeze=False)
    for i in range(len(pairs)):
        panels = [source[i], target[i]] + [lv.generated[i] for lv in levels]
        for j, (ax, img) in enumerate(zip(axes[i], panels)):
            ax.imshow(img.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_axis_off()
            if i == 0:
                ax.set_title(columns[j], fontsize=7)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(out_png)


def correlation_rows(correlations: dict, threshold: float = 0.8) -> list[dict]:
    """One row per network: how many of its K points follow a fixed true landmark with r >= ``threshold`` in x and y."""
    rows = []
    for name, points in correlations.items():
        good = [p for p in points if p["r_x"] >= threshold and p["r_y"] >= threshold]
        rows.append({"features": name, "points": len(points), f"following (r >= {threshold:g})": len(good),
                     "share": len(good) / len(points) if points else 0.0,
                     "median r_x": float(np.median([p["r_x"] for p in points])),
                     "median r_y": float(np.median([p["r_y"] for p in points]))})
    return rows


def keypoint_figure(figure: dict, out_png, n: int = 6) -> str:
    """Discovered keypoints (coloured by index) and the true landmarks (small white) on ``n`` test crops, one per
    track where there are enough tracks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, points, true, track = figure["images"], figure["points"], figure["true"], figure["track"]
    order = list(dict.fromkeys(track))
    picks = [int(np.flatnonzero(track == t)[0]) for t in order][:n]
    picks += [i for i in range(len(images)) if i not in picks][:n - len(picks)]
    side = images.shape[-1]
    scale = 256 / side  # the truth is in stored-crop pixels (256); the images at the model's size
    fig, axes = plt.subplots(1, len(picks), figsize=(2.2 * len(picks), 2.4), squeeze=False)
    colours = plt.cm.tab20(np.linspace(0, 1, points.shape[1]))
    for ax, i in zip(axes[0], picks):
        ax.imshow(np.transpose(images[i], (1, 2, 0)))
        xy = (points[i] + 1) / 2 * (side - 1)  # [-1, 1] -> pixel centres
        ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=18, edgecolors="black", linewidths=0.4)
        if np.isfinite(true[i]).all():
            ax.scatter(true[i][:, 0] / scale, true[i][:, 1] / scale, c="white", s=2)
        ax.set_axis_off()
    fig.suptitle(f"{figure['name']}: discovered keypoints (colours) and true landmarks (white), test crops",
                 fontsize=8)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(out_png)
