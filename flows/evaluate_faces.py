"""Flow ``evaluate-faces``: FAb-Net's linear probes, X2Face's reconstruction and pose, and the landmark table.

Writes ``<results>/fabnet.md|.parquet`` (landmark error in % of the
inter-ocular distance, pose MAE, mouth-open accuracy and AUC; rows per
FAb-Net variant, the untrained encoder and dlib's points) and, with X2Face
checkpoints, ``<results>/x2face.md|.parquet`` (test L1 with 1 and 3 sources
beside the identity warp's, pose from the driving vector); see
:mod:`tasks.evaluation.faces`.  With keypoint checkpoints,
``<results>/landmarks.md|.parquet`` (landmarks regressed from Jakab et al.'s
keypoints and the class embedding's probe beside FAb-Net's) and
``keypoints-following.md`` (whether each point follows a landmark); see
:mod:`tasks.evaluation.landmarks`.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact

from flows.settings import FacesEvaluation, LandmarkSetEvaluation
from tasks.evaluation.faces import (audio_strip, evaluate_fabnet, evaluate_x2face, fabnet_figure, pose_sweep,
                                    x2face_grid)
from tasks.evaluation.landmarks import (correlation_rows, evaluate_class_embeddings, evaluate_keypoints,
                                        keypoint_figure, warp_figure)
from tasks.evaluation.results import provenance, write_results

FABNET_NOTES = """Linear probes (BatchNorm + Linear without bias, Adam 1e-3, early stop on the validation loss) on
the frozen embedding, fitted on the build's train split and scored on its test split (identities neither the
encoder nor the probe saw). Landmarks: mean error over the 68 points in % of the outer-eye-corner distance;
pose: mean absolute error in degrees (pitch is constant in the sample set and is not scored); mouth open:
opening > 0.2, accuracy and ROC AUC. "untrained encoder": the same network as drawn by the seed before
training; "dlib points": dlib's 68 points of each crop as the probe's input, and "(direct)" as the
landmark prediction itself. Intervals: 95% bootstrap over test utterances. The truth is the face sample
generator's own. The sample set's faces are 3 photographs (mirrored from the 4th identity on) moved by
homographies: a held-out identity is a held-out video, not an unseen face. The paper's numbers (300-W, MAFL,
AFLW, EmotioNet at 256 x 256 after VoxCeleb training) are beside ours for scale only."""

X2FACE_NOTES = """Stage I only (the identity losses of stage II need a face-identity network's weights, which no
package here ships: train x2face --stage II --identity-weights PATH). Test L1: mean absolute difference of
the generated and the driving frame (RGB in [0, 1]); with 3 sources the embedded faces are averaged (thesis
ch. 3 section 5). "identity warp": the source frame itself scored as the generated frame. Pose: f(v->p) (a
linear layer with bias, L1) fitted on the train split's driving vectors and the generator's poses, MAE on
test (pitch constant, not scored). Audio: log-mel energies (5 windows of 40 ms, 40 bands: 0.2 s centred on the
frame; the thesis's 256-d lip-reading features are not available) to the driving vector by ridge least squares
(fitted on train, the ridge chosen on val); R^2 of the test driving vectors against the train mean. Intervals: 95% bootstrap over test utterances. The thesis's numbers are
on VoxCeleb at 256 x 256 and AFLW, for scale only."""


LANDMARK_NOTES = """Landmarks regressed from each network's output by the same linear probe (BatchNorm + Linear
without bias, Adam 1e-3, early stop on the validation loss), fitted on the build's train split and scored on its
test split: from the 2K coordinates of Jakab et al.'s K discovered keypoints (the paper's "linear regressor from
our unsupervised keypoints"; the BatchNorm's shift acts as a bias), from the class-embedding network's 256-d
embedding (that paper's "lin" rows), and from FAb-Net's embedding (its rows of fabnet.md). "untrained
class-embedding" is that network as the seed draws it. Error: mean over the 68 points in % of the outer-eye-corner distance. "untrained keypoints-K": the
keypoint network as the seed draws it before training. The loss each keypoint run trained with is in its name
(no suffix: l2 pixels, the sample runs' loss; "-perceptual": VGG-19 features from the user's weights). Intervals:
95% bootstrap over test utterances. The truth is the face sample generator's; the papers' numbers (MAFL and 300-W
after CelebA or VoxCeleb training) are beside ours for scale only."""

FOLLOWING_NOTES = """Do the discovered points follow the face? For each keypoint, the true landmark whose x and y
its own x and y follow best over the test frames (the landmark maximising the smaller of the two Pearson r), and
those r; a point "follows" when both are at least 0.8."""


def _rounded(rows: list[dict], digits: int = 4) -> list[dict]:
    return [{k: (round(v, digits) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


@task(name="evaluate-fabnet")
def fabnet_task(settings: FacesEvaluation) -> dict:
    return evaluate_fabnet(settings.checkpoint, settings.data_root, settings.samples, margin=settings.margin,
                           seed=settings.seed, log=get_run_logger().info)


@task(name="evaluate-x2face")
def x2face_task(settings: FacesEvaluation) -> dict:
    out = evaluate_x2face(settings.x2face_checkpoint, settings.data_root, settings.samples, margin=settings.margin,
                          seed=settings.seed, pose_maps_dir=settings.results, log=get_run_logger().info)
    figures = []
    if settings.figure:
        from pathlib import Path

        for i, net in enumerate(out["nets"].values()):
            figures.append(x2face_grid(net, settings.data_root, Path(settings.figure) / f"x2face-grid-{i}.png"))
        for i, extra in enumerate(out["extras"]):
            figures.append(pose_sweep(extra, Path(settings.figure) / f"x2face-pose-sweep-{i}.png"))
            if "audio_map" in extra:
                figures.append(audio_strip(extra, Path(settings.figure) / f"x2face-audio-{i}.png"))
    out.pop("nets")
    out.pop("extras")
    return {**out, "figures": figures}


@task(name="evaluate-keypoints")
def keypoints_task(settings: FacesEvaluation) -> dict:
    return evaluate_keypoints(settings.keypoints_checkpoint, settings.data_root, settings.samples,
                              margin=settings.margin, seed=settings.seed, log=get_run_logger().info)


@task(name="evaluate-class-embedding")
def class_embedding_task(settings: FacesEvaluation) -> dict:
    return evaluate_class_embeddings(settings.class_embedding_checkpoint, settings.data_root, settings.samples,
                                     margin=settings.margin, seed=settings.seed, log=get_run_logger().info)


@flow(name="evaluate-faces")
def evaluate_faces(settings: FacesEvaluation) -> dict:
    """Write the FAb-Net (and X2Face) tables; return their rows and paths."""
    from pathlib import Path

    from tasks.datasets.voxceleb import layout
    from tasks.training.windows import split_parts

    start = time.monotonic()
    shards = layout(settings.data_root).shards
    files = [p for s in ("train", "val", "test") for p in split_parts(shards, s)]
    out: dict = {"figures": []}
    fab = fabnet_task(settings)
    prov = provenance(settings.data_root, files, checkpoints=settings.checkpoint, samples=settings.samples,
                      seed=settings.seed, input_size=fab["size"], wall_s=round(time.monotonic() - start, 1),
                      device="cpu")
    out["fabnet"], _ = write_results(settings.results, "fabnet", "FAb-Net: linear probes on the embedding "
                                     "(FAb-Net paper tables 1-3)", _rounded(fab["rows"]), prov, FABNET_NOTES)
    out["fabnet_rows"] = fab["rows"]
    out["curves"] = {name: {t: len(c) for t, c in curves.items()} for name, curves in fab["curves"].items()}
    create_table_artifact(key="fabnet", table=fab["rows"], description=f"FAb-Net probes: {out['fabnet']}")
    if settings.figure:
        out["figures"].append(fabnet_figure(fab["figure"], Path(settings.figure) / "fabnet-landmarks.png"))
    if settings.x2face_checkpoint:
        x2 = x2face_task(settings)
        prov = {**prov, "checkpoints": settings.x2face_checkpoint, "wall_s": round(time.monotonic() - start, 1)}
        out["x2face"], _ = write_results(settings.results, "x2face", "X2Face: reconstruction and pose (thesis ch. 3 "
                                         "tables 1-2)", _rounded(x2["rows"]), prov, X2FACE_NOTES)
        out["x2face_rows"] = x2["rows"]
        out["figures"] += x2["figures"]
        out["pose_maps"] = x2["pose_maps"]
        create_table_artifact(key="x2face", table=x2["rows"], description=f"X2Face: {out['x2face']}")
    if settings.keypoints_checkpoint or settings.class_embedding_checkpoint:
        kp = keypoints_task(settings) if settings.keypoints_checkpoint else None
        ce = class_embedding_task(settings) if settings.class_embedding_checkpoint else None
        prov = {**prov, "checkpoints": settings.keypoints_checkpoint + settings.class_embedding_checkpoint
                + settings.checkpoint, "wall_s": round(time.monotonic() - start, 1)}
        fab_landmarks = [{**r, "paper": r.get("paper", "")} for r in fab["rows"] if r["target"] == "landmarks"
                         and not r["features"].startswith("dlib")]
        rows = _rounded((kp["rows"] if kp else []) + (ce["rows"] if ce else []) + fab_landmarks)
        out["landmarks"], _ = write_results(settings.results, "landmarks", "Landmarks: Jakab et al.'s keypoints and "
                                            "FAb-Net's embedding through one linear regressor", rows, prov,
                                            LANDMARK_NOTES)
        out["landmark_rows"] = rows
        create_table_artifact(key="landmarks", table=rows, description=f"landmarks: {out['landmarks']}")
        if kp:
            following = _rounded(correlation_rows(kp["correlations"]))
            out["following"], _ = write_results(settings.results, "keypoints-following", "Do the discovered "
                                                "keypoints follow a fixed landmark? (test frames)", following, prov,
                                                FOLLOWING_NOTES)
            out["following_rows"] = following
        if settings.figure and kp:
            out["figures"].append(keypoint_figure(kp["figure"], Path(settings.figure) / "keypoints.png"))
        if settings.figure and ce:
            for i, net in enumerate(ce["nets"].values()):
                out["figures"].append(warp_figure(net, settings.data_root,
                                                  Path(settings.figure) / f"class-embedding-warps-{i}.png"))
    get_run_logger().info("evaluate-faces: %s", out.get("fabnet"))
    return out


LANDMARK_SET_NOTES = """Landmarks regressed by the same linear probe as landmarks.md (BatchNorm + Linear without bias,
Adam 1e-3, early stop on the validation loss) from each network's output, on a labelled still-image set: fitted on
its training list less every 10th face (held out for the early stop), scored on its test list (MAFL: testing.txt;
300-W: the full set, common + challenging). Each face is cut as the builds cut VoxCeleb's (a square around its
face box, margin 0.4, 256 pixels), the face box being the points' bounding box (5 points: scaled by 2 about its
centre). Error: mean over the points in % of the inter-ocular distance (MAFL: eye centres; 300-W: outer eye
corners). Intervals: 95% bootstrap over test faces. The networks were trained on whatever build made the
checkpoints; the papers' numbers beside them come from training on CelebA or VoxCeleb at the papers' sizes."""


@flow(name="evaluate-landmarks")
def evaluate_landmarks(settings: LandmarkSetEvaluation) -> dict:
    """The landmark table of FAb-Net, keypoint and class-embedding checkpoints on MAFL or 300-W
    (``RESULTS/landmarks-<set>.md`` and ``.parquet``); return its rows and paths."""
    from pathlib import Path

    from tasks.evaluation.annotated import annotated_data, describe, table_name

    log = get_run_logger().info
    start = time.monotonic()
    cache: dict[int, dict] = {}

    def data_fn(size: int) -> dict:  # each input size cut once, whichever model asks first
        if size not in cache:
            cache[size] = annotated_data(settings.labelled_set, settings.root, size, limit=settings.limit)
            log(f"{settings.labelled_set} at {size} px: {describe(cache[size])}")
        return cache[size]

    common = {"seed": settings.seed, "log": log, "data_fn": data_fn}
    rows, figures, following = [], [], []
    figure_dir = Path(settings.figure) if settings.figure else None
    if settings.checkpoint:
        fab = evaluate_fabnet(settings.checkpoint, None, None, **common)
        rows += fab["rows"]
        if figure_dir:
            figures.append(fabnet_figure(fab["figure"], figure_dir / f"fabnet-{settings.labelled_set}.png"))
    if settings.keypoints_checkpoint:
        kp = evaluate_keypoints(settings.keypoints_checkpoint, None, None, **common)
        rows = kp["rows"] + rows
        following = _rounded(correlation_rows(kp["correlations"]))
        if figure_dir:
            figures.append(keypoint_figure(kp["figure"], figure_dir / f"keypoints-{settings.labelled_set}.png"))
    if settings.class_embedding_checkpoint:
        rows += evaluate_class_embeddings(settings.class_embedding_checkpoint, None, None, **common)["rows"]
    faces = {s: len(d["frames"]["track"]) for s, d in next(iter(cache.values())).items()}
    prov = provenance(settings.root, [], labelled_set=settings.labelled_set, faces=faces, limit=settings.limit,
                      checkpoints=settings.keypoints_checkpoint + settings.class_embedding_checkpoint
                      + settings.checkpoint, seed=settings.seed, wall_s=round(time.monotonic() - start, 1),
                      device="cpu")
    name = table_name(settings.labelled_set)
    label = {"mafl": "MAFL", "300w": "300-W"}[settings.labelled_set]
    rows = _rounded(rows)
    md, parquet = write_results(settings.results, name, f"Landmarks on {label}: the face models through one linear "
                                "regressor", rows, prov, LANDMARK_SET_NOTES)
    create_table_artifact(key=name, table=rows, description=f"landmarks on {label}: {md}")
    out = {"markdown": md, "parquet": parquet, "rows": rows, "figures": figures}
    if following:
        out["following"], _ = write_results(settings.results, f"{name}-following", f"Do the discovered keypoints "
                                            f"follow a fixed landmark? ({label} test faces)", following, prov,
                                            FOLLOWING_NOTES)
        out["following_rows"] = following
    log(f"evaluate-landmarks: {md}")
    return out
