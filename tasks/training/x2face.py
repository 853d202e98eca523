"""Training X2Face (Wiles, Koepke, Zisserman, ECCV 2018; thesis ch. 3) on VoxCeleb faces; driving it by pose, audio.

:class:`X2FaceTask` trains :class:`models.x2face.X2Face` on the shared
trainer.  Every example is a face track's *driving* frame (FacePairs'
``target``) and ``k`` *source* frames of the same track (``sources``): the
embedding network maps the sources to the (averaged) embedded face, the
driving network maps the driving frame to the 128-d driving vector and a
flow that samples the embedded face into the *generated* frame.

Training stage I (thesis §3.2 "I")
    Fully self-supervised: the per-sample L1 between the generated and the
    driving frame (:func:`models.fabnet.l1_loss`), averaged over the batch.
    Source and driving frames are of one utterance, so the generated frame
    should be the driving frame.  SGD, lr 1e-3, momentum 0.9, batch 16; the
    LR divided by 10 when the validation L1 plateaus, then an early stop
    (the shared trainer's rule, ``plateau = ("val_l1", "min")``).

Training stage II (thesis §3.2 "II", §5 "Training")
    Stage I's model fine-tuned with the *identity losses*, from a frozen
    face-identity VGG-11 (:mod:`models.face_identity`, the user's weights:
    :func:`load_identity_weights`) and lr 1e-4.  For a source ``s_A`` and
    its driving frame ``d_A`` (identity A), and a driving frame ``d_R`` of
    another identity, the network generates ``g_A`` (driven by ``d_A``) and
    ``g_R`` (driven by ``d_R``), both from ``s_A``'s embedded face.  The loss is

    * the photometric L1 of ``g_A`` and ``d_A`` (stage I's loss);
    * an L1 content loss between ``g_A`` and ``d_A`` at each of conv2, conv3,
      conv4, conv5 and conv7, each weighted "to be as strong as the
      photometric L1 loss" (:data:`SAME_LAYERS`);
    * an L1 content loss between ``g_R`` and ``s_A`` at conv6 and conv7, each
      weighted to "1/10 the size of the photometric loss" (:data:`OTHER_LAYERS`).
      (The thesis writes "between g_dA and s_A" here; its own list item and
      Fig. 3 make it ``g_dR``, which is what is built.)

Chosen here (the thesis is silent or loose)
    * Content-loss weights are recomputed every step: layer ``l``'s term is
      ``(L1.detach() / c_l.detach()) * c_l`` (or a tenth of it), so its value
      equals the photometric L1 (or a tenth) and its gradient is ``c_l``'s
      scaled; the violin students' distillation weights follow the same rule.
      The raw content values are logged (``train_same_conv2`` ..,
      ``train_other_conv6`` ..).
    * ``d_R`` is another example's driving frame in the same batch: for
      example ``i`` the first example after it (cyclically) whose identity
      differs (:func:`other_identity`); the loader's shuffle buffer makes that
      a random identity.  A batch of one identity falls back to the next
      example (another utterance or frame of the same person) and the share
      of such examples is logged (``train_same_identity_share``).
    * With 3 sources ``s_A`` in the ``g_R`` content loss is the first source
      frame; the embedded face is the average over the 3 (as in stage I).
    * Stage II starts from ``init`` (a stage-I checkpoint, the thesis's
      fine-tuning) when given, from fresh weights otherwise; ``learning_rate``
      None is the thesis's: 1e-3 in stage I, 1e-4 in stage II.
    * The identity network is read when the module is built and kept in a
      list, out of the module's parameters and state dict: a stage-II
      checkpoint holds X2Face only and loads without the identity file.
    * Validation (fixed pairs, FacePairs with ``shuffle=False``) logs
      ``val_l1`` (generated vs driving: the plateau and best-checkpoint
      metric in both stages, as Table 1 reports it) and ``val_identity_l1``
      (the first source frame vs the driving frame: the L1 of not moving a
      pixel, the floor to beat).
    * No augmentation (the thesis names none); no gradient clipping.

Driving by pose (thesis §4.1; :func:`fit_pose_maps`, :func:`pose_driving_mae`)
    ``f_{v->p}`` (:class:`models.x2face.PoseFromVector`) regresses the pose
    from driving vectors with an L1 loss (the thesis's) on pairs with pose
    labels (AFLW); ``f_{p->v}`` (:class:`models.x2face.VectorFromPose`, FC +
    batch-norm) regresses the driving vector from the pose ``f_{v->p}(v)`` of
    (VoxCeleb) driving vectors, with an MSE loss (the thesis names none; the
    conditional mean is what eq. (1)'s vector arithmetic adds).  Both are
    fitted full-batch with Adam from the least-squares solution, inputs
    standardised and the scaling folded back into the layers.  Not on
    Lightning: a linear layer fitted on arrays in memory in a second has no
    loader, validation, checkpoint or device to manage.
    :func:`pose_driving_mae` drives source vectors to asked poses by eq. (1)
    (:func:`models.x2face.drive_with_pose`) and reads the achieved pose back
    through ``f_{v->p}``.

Driving by audio (thesis §4.2; :func:`audio_features`, :func:`fit_audio_map`)
    The thesis's audio features are the 256-d FC7 activations of the audio
    stream of Chung and Zisserman's SyncNet on 0.2 s around the frame; that
    network is not available here.  :func:`audio_features` gives per-frame
    log-mel energies instead (40 mel bands of one 40 ms Hann window centred
    on the frame time, i.e. one video frame's period at 25 fps;
    ``windows=5`` stacks five consecutive windows to cover the thesis's
    0.2 s).  :func:`fit_audio_map` is the thesis's ordinary least squares
    from features normalised to N(0, 1) to the driving vector, with a ridge
    term chosen on validation rows (0 among the candidates: plain OLS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass as plain_dataclass
from dataclasses import field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from models.face_identity import CAFFE_NAMES, CONV_INDEX, CONV_LAYERS, FaceIdentityConfig, FaceIdentityNet, content_l1
from models.fabnet import l1_loss
from models.x2face import PoseFromVector, VectorFromPose, X2Face, X2FaceConfig, drive_with_pose
from tasks.training.trainer import CheckpointError, TrainerSettings, read_checkpoint
from tasks.training.faces import FaceReconstructionTask, fit_face_model, load_net_state

STAGE_LR = {"I": 1e-3, "II": 1e-4}  # the thesis's starting learning rate of each stage
PAPER_BATCH = 16
SAME_LAYERS = ("conv2", "conv3", "conv4", "conv5", "conv7")  # L_identity(d_A, g_dA): each as strong as the L1
OTHER_LAYERS = ("conv6", "conv7")  # L_identity(s_A, g_dR): each 1/10 of the L1
OTHER_WEIGHT = 0.1
ANGLES = ("roll", "pitch", "yaw")  # the order of tasks.datasets.face_annotations.HeadPose


@dataclass
class X2FaceSettings:
    """One X2Face training run: the data, the stage, the model, and how the shared trainer runs."""

    data_root: str = Field(description="the data root of a build-voxceleb build (D, holding D/voxceleb/shards)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: 256x256 frames, pix2pix widths; small: 64x64, a quarter of the widths")
    sources: int = Field(1, description="source frames per driving frame: 1, or 3 (embedded faces averaged)")
    stage: Literal["I", "II"] = Field(
        "I", description="I: photometric L1 only; II: plus the identity losses (needs --identity-weights)")
    identity_weights: str | None = Field(
        None, description="stage II: the face-identity VGG-11 state dict (models/face_identity.py names its keys)")
    init: str | None = Field(None, description="stage II: the stage-I checkpoint to fine-tune")
    learning_rate: float | None = Field(None, gt=0, description="SGD's learning rate (default 1e-3 stage I, "
                                                                "1e-4 stage II: the thesis)")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, examples per loader worker")
    paper_batches: bool = Field(True, description="batch 16 (the thesis); off: --batch-size")

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError(f"sources must be 1 or 3, not {value}")
        return value

    @model_validator(mode="after")
    def _stage_two_needs_identity(self):
        if self.stage == "II" and not self.identity_weights:
            raise ValueError("stage II needs the face-identity network's weights (identity_weights / "
                             "--identity-weights)")
        return self

    @property
    def lr(self) -> float:
        """The learning rate the run uses (``learning_rate``, or the thesis's for the stage)."""
        return self.learning_rate if self.learning_rate is not None else STAGE_LR[self.stage]


def run_name(settings: X2FaceSettings) -> str:
    """``x2face-stage1``, ``x2face-stage2-3src`` ...: a run's folder and its table row."""
    name = f"x2face-stage{1 if settings.stage == 'I' else 2}"
    return name + (f"-{settings.sources}src" if settings.sources > 1 else "")


# ---------------------------------------------------------------- the identity network's weights


def _expected_keys() -> str:
    convs = ",".join(str(i) for i in CONV_INDEX.values())
    return f"features.{{{convs}}}.{{weight,bias}} (3x3 convs), optionally classifier.{{0,3,6}}.{{weight,bias}}"


def _normalised_keys(state: dict) -> dict:
    """``state`` with DataParallel's ``module.`` prefix dropped and Caffe-style names renamed (CAFFE_NAMES)."""
    out = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        head, _, tail = key.partition(".")
        if head in CAFFE_NAMES and tail in ("weight", "bias"):
            key = f"{CAFFE_NAMES[head]}.{tail}"
        out[key] = value
    return out


def load_identity_weights(path: str | Path, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                          scale: float | None = None) -> FaceIdentityNet:
    """The user's face-identity VGG-11 state dict as a frozen :class:`FaceIdentityNet` in eval mode.

    Read with ``torch.load(weights_only=True)``; a dict under ``state_dict``
    is unwrapped, ``module.`` prefixes dropped and Caffe names renamed.  The
    widths are read from the file (conv ``i``'s input must be conv ``i-1``'s
    output); a classifier is built when ``classifier.6.weight`` is there.
    ``mean``/``std``/``scale``: the input normalisation (default VGG-Face's,
    see :mod:`models.face_identity`).  CheckpointError (one line naming the
    file) for a missing file, a file torch cannot read, a checkpoint of a
    sightsound model, keys of another network or shapes that do not chain.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such face-identity weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a state dict torch.load(weights_only=True) reads "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if isinstance(state, dict) and "hyper_parameters" in state:
        raise CheckpointError(f"{path}: a Lightning checkpoint of a sightsound model "
                              f"({sorted(state['hyper_parameters'])[:4]}), not face-identity VGG-11 weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                           for k, v in state.items()):
        raise CheckpointError(f"{path}: not a state dict of tensors (a {type(state).__name__}); expected "
                              f"{_expected_keys()}")
    state = _normalised_keys(state)
    widths, channels = [], 3
    for name in CONV_LAYERS:
        key = f"features.{CONV_INDEX[name]}"
        weight, bias = state.get(f"{key}.weight"), state.get(f"{key}.bias")
        if weight is None or bias is None:
            raise CheckpointError(f"{path}: not a VGG-11 face-identity state dict (no {key}.weight/.bias for "
                                  f"{name}); expected {_expected_keys()}")
        if weight.dim() != 4 or tuple(weight.shape[1:]) != (channels, 3, 3) or tuple(bias.shape) != (weight.shape[0],):
            raise CheckpointError(f"{path}: {key}.weight is {list(weight.shape)} (bias {list(bias.shape)}), "
                                  f"not [out, {channels}, 3, 3]: not VGG-11 configuration A")
        widths.append(int(weight.shape[0]))
        channels = int(weight.shape[0])
    classes = fc_dim = None
    pool = 7
    if "classifier.6.weight" in state:
        fc6 = state.get("classifier.0.weight")
        classes, fc_dim = int(state["classifier.6.weight"].shape[0]), int(state["classifier.6.weight"].shape[1])
        cells = int(fc6.shape[1]) // channels if fc6 is not None and fc6.dim() == 2 else 0
        pool = math.isqrt(cells) if cells else 0
        if fc6 is None or pool < 1 or pool * pool * channels != fc6.shape[1]:
            raise CheckpointError(f"{path}: classifier.0.weight is {None if fc6 is None else list(fc6.shape)}, "
                                  f"not [fc, {channels} * p * p]: not VGG-11's fc6")
    else:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    kw = {k: v for k, v in (("mean", tuple(mean) if mean else None), ("std", tuple(std) if std else None),
                            ("scale", scale)) if v is not None}
    config = FaceIdentityConfig(widths=tuple(widths), classes=classes, fc_dim=fc_dim or 4096, pool_size=pool, **kw)
    net = FaceIdentityNet(config)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        msg = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: its tensors do not fit VGG-11 configuration A ({msg[:200]})") from None
    return net.eval().requires_grad_(False)


# ---------------------------------------------------------------- the module


def other_identity(identities: Sequence[str]) -> tuple[list[int], int]:
    """For each example, the index of the first later example (cyclically) of another identity; and how many had none.

    An example with no other identity in the batch gets the next example
    (``(i + 1) % n``; itself in a batch of one).
    """
    n = len(identities)
    out, alone = [], 0
    for i in range(n):
        j = next((j % n for j in range(i + 1, i + n) if identities[j % n] != identities[i]), None)
        if j is None:
            alone += 1
            j = (i + 1) % n
        out.append(j)
    return out, alone


def weighted_identity_loss(photometric: torch.Tensor, same: dict, other: dict) -> tuple[torch.Tensor, dict]:
    """Stage II's loss: ``photometric`` + each ``same`` term scaled to equal it + each ``other`` term to a tenth.

    Returns the loss and the weights used (``same_<layer>``, ``other_<layer>``).
    """
    ref = photometric.detach()
    loss, weights = photometric, {}
    for prefix, terms, factor in (("same", same, 1.0), ("other", other, OTHER_WEIGHT)):
        for name, value in terms.items():
            w = factor * ref / value.detach().clamp_min(1e-12)
            weights[f"{prefix}_{name}"] = w
            loss = loss + w * value
    return loss, weights


class X2FaceTask(FaceReconstructionTask):
    """X2Face on the shared trainer: stage I (photometric L1) or stage II (plus the identity losses).

    LR / 10 and early stop on the validation L1's plateau (the thesis: "when the loss plateaus").
    """

    resume_keys = ("model", "config", "sources", "stage")

    def __init__(self, config: str = "small", sources: int = 1, stage: str = "I", learning_rate: float = 1e-3,
                 momentum: float = 0.9, identity_weights: str | None = None, init: str | None = None,
                 model: str = "x2face"):
        super().__init__()
        if stage not in ("I", "II"):
            raise ValueError(f"stage must be 'I' or 'II', not {stage!r}")
        self.save_hyperparameters()  # plain values only: checkpoints load with weights_only=True
        self.net = X2Face(X2FaceConfig.named(config))
        self._identity: list = []  # [FaceIdentityNet] in stage II; a list keeps it out of the state dict
        self._validation_metrics()

    def load_identity(self) -> None:
        """Read the identity network (stage II); CheckpointError (one line) if it is missing or not VGG-11."""
        if self.hparams.stage != "II" or self._identity:
            return
        if not self.hparams.identity_weights:
            raise CheckpointError("stage II needs the face-identity network's weights (--identity-weights)")
        self._identity = [load_identity_weights(self.hparams.identity_weights)]

    def on_fit_start(self) -> None:
        self.load_identity()
        if self._identity:
            self._identity[0].to(self.device).eval()

    def forward(self, sources: torch.Tensor, driving: torch.Tensor):
        return self.net(sources, driving)

    def training_step(self, batch, batch_idx):
        sources, driving = batch["sources"], batch["target"]
        n = len(driving)
        out = self(sources, driving)
        photometric = l1_loss(out.generated, driving).mean()
        loss = photometric
        if self.hparams.stage == "II":
            identity = self._identity[0]
            identity.eval()
            partner, alone = other_identity(list(batch["identity"]))
            d_r = driving[torch.as_tensor(partner, device=driving.device)]
            g_r = self.net.generate(out.embedded, self.net.driving_vector(d_r))
            same = content_l1(identity, out.generated, driving, SAME_LAYERS)
            other = content_l1(identity, g_r, sources[:, 0], OTHER_LAYERS)
            loss, _ = weighted_identity_loss(photometric, same, other)
            self.log_dict({f"train_same_{k}": v.detach() for k, v in same.items()}, batch_size=n)
            self.log_dict({f"train_other_{k}": v.detach() for k, v in other.items()}, batch_size=n)
            self.log("train_same_identity_share", alone / n, batch_size=n)
        self.log("train_l1", photometric, batch_size=n)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        return loss

def _other_model(hp: dict) -> str:
    if hp.get("model") == "fabnet":
        return "FAb-Net"
    if hp.get("stage") in ("teacher", "student"):
        return "the violin pitch model"
    if "variant" in hp:
        return "the piano onset model"
    if "lr_decay_steps" in hp:
        return "Onsets and Frames"
    return "another model"


def load_net(checkpoint: str | Path, config: str | None = None, stage: str | None = None) -> X2Face:
    """The X2Face of an :class:`X2FaceTask` checkpoint, in eval mode; CheckpointError (one line) otherwise."""
    return net_of(read_checkpoint(checkpoint), checkpoint, config, stage)


def net_of(ckpt: dict, checkpoint: str | Path, config: str | None = None, stage: str | None = None) -> X2Face:
    """:func:`load_net` of a checkpoint already read (``read_checkpoint``); ``checkpoint`` names it in errors."""
    hp = ckpt["hyper_parameters"]
    if hp.get("model") != "x2face" or hp.get("config") not in ("paper", "small"):
        raise CheckpointError(f"{checkpoint}: not an X2Face checkpoint (a checkpoint of {_other_model(hp)})")
    for key, want in (("config", config), ("stage", stage)):
        if want is not None and hp.get(key) != want:
            raise CheckpointError(f"{checkpoint}: an X2Face {key} {hp.get(key)!r} checkpoint, not {want!r}")
    return load_net_state(X2Face(X2FaceConfig.named(hp["config"])), ckpt, checkpoint)


# ---------------------------------------------------------------- training


def paper_batch(settings: X2FaceSettings) -> X2FaceSettings:
    """``settings`` with the thesis's batch of 16 unless ``paper_batches`` is off."""
    import dataclasses

    if not settings.paper_batches:
        return settings
    return dataclasses.replace(settings, trainer=dataclasses.replace(settings.trainer, batch_size=PAPER_BATCH))


def make_module(settings: X2FaceSettings, log=print) -> X2FaceTask:
    """The module of ``settings``; stage II reads the identity weights (and ``init``) now, refusing bad files."""
    weights = str(Path(settings.identity_weights).resolve()) if settings.identity_weights else None
    init = str(Path(settings.init).resolve()) if settings.init else None
    module = X2FaceTask(settings.config, settings.sources, settings.stage, settings.lr,
                        identity_weights=weights, init=init)
    module.load_identity()
    if init:
        module.net.load_state_dict(load_net(init, config=settings.config).state_dict())
    elif settings.stage == "II":
        log("x2face stage II without --init: fine-tuning fresh weights, not a stage-I model")
    return module


def train(settings: X2FaceSettings, log=print, callbacks=()) -> dict:
    """Train one X2Face stage under ``settings.trainer.run_dir``; return the trainer's summary."""
    settings = paper_batch(settings)
    summary = fit_face_model(settings, lambda: make_module(settings, log), f"x2face {run_name(settings)}", log,
                             callbacks, "x2face", {"lr": settings.lr}, f", lr {settings.lr:g}")
    summary.pop("module")
    return {**summary, "run": run_name(settings), "stage": settings.stage, "sources": settings.sources,
            "config": settings.config}


# ---------------------------------------------------------------- Table 1: L1 of generated vs driving


def evaluate_l1(net: X2Face, data_root: str, split: str = "test", sources: int = 1, size: int | None = None,
                seed: int = 0, batch_size: int = 16, device: str | torch.device | None = None,
                limit: int | None = None) -> list[dict]:
    """Per example of ``split`` (fixed pairs: FacePairs, ``shuffle=False``), the L1 of the generated frame and of
    the first source frame against the driving frame.

    Each row: ``identity``, ``video_id``, ``utterance``, ``target_index``,
    ``source_indices`` (list), ``l1`` (generated vs driving), ``identity_l1``
    (first source vs driving).  ``size`` defaults to the network's input;
    ``limit`` stops after that many examples.
    """
    from torch.utils.data import DataLoader

    from tasks.training.windows import FacePairs

    size = net.config.image_size if size is None else int(size)
    device = torch.device(device) if device is not None else next(net.parameters()).device
    net = net.to(device).eval()
    data = FacePairs.from_root(data_root, split, sources=sources, size=size, shuffle=False, seed=seed)
    rows: list[dict] = []
    with torch.no_grad():
        for batch in DataLoader(data, batch_size=batch_size, num_workers=0):
            src, driving = batch["sources"].to(device), batch["target"].to(device)
            generated = l1_loss(net(src, driving).generated, driving).cpu().tolist()
            still = l1_loss(src[:, 0], driving).cpu().tolist()
            for i in range(len(generated)):
                rows.append({"identity": batch["identity"][i], "video_id": batch["video_id"][i],
                             "utterance": batch["utterance"][i], "target_index": int(batch["target_index"][i]),
                             "source_indices": batch["source_indices"][i].tolist(), "l1": float(generated[i]),
                             "identity_l1": float(still[i])})
                if limit is not None and len(rows) >= limit:
                    return rows
    return rows


# ---------------------------------------------------------------- driving by pose


@plain_dataclass
class PoseMaps:
    """``f_vp`` (driving vector -> pose) and ``f_pv`` (pose -> driving vector), in eval mode, and their fit losses."""

    f_vp: PoseFromVector
    f_pv: VectorFromPose
    losses: dict = field(default_factory=dict)


def _as_tensor(x, name: str, dim: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.dim() != 2 or (dim is not None and t.shape[1] != dim) or len(t) < 2 or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be a finite [N, {dim or 'D'}] array with N >= 2, got {list(t.shape)}")
    return t


def _standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mu, sd = x.mean(0), x.std(0)
    sd = torch.where(sd > 1e-8, sd, torch.ones_like(sd))
    return (x - mu) / sd, mu, sd


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W [out, in], b [out])`` minimising ``|x W^T + b - y|^2`` (float64)."""
    a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(a, y.double(), driver="gelsd").solution
    return sol[:-1].T.float(), sol[-1].float()


def fit_pose_maps(driving_vectors, poses, voxceleb_vectors=None, steps: int = 500, lr: float = 1e-2,
                  seed: int = 0) -> PoseMaps:
    """Fit ``f_{v->p}`` on ``(driving_vectors, poses)`` (L1) and ``f_{p->v}`` on ``voxceleb_vectors`` (MSE).

    ``driving_vectors [N, 128]`` and ``poses [N, 3]`` (degrees, in
    :data:`ANGLES` order) are the labelled pairs (AFLW images through the
    driving network's encoder).  ``f_{p->v}`` learns the driving vector from
    the pose ``f_{v->p}`` gives it (thesis §4.1: "learnt directly on
    VoxCeleb"), on ``voxceleb_vectors`` (default: ``driving_vectors``).
    Both start from the least-squares solution and take ``steps`` full-batch
    Adam steps (cosine-decayed ``lr``) on standardised inputs.
    """
    torch.manual_seed(seed)
    v = _as_tensor(driving_vectors, "driving_vectors")
    p = _as_tensor(poses, "poses")
    if len(v) != len(p):
        raise ValueError(f"{len(v)} driving vectors but {len(p)} poses")
    dim, pose_dim = v.shape[1], p.shape[1]
    # f_{v->p}: a Linear on standardised vectors, L1, then the standardisation folded into the layer.
    z, mu, sd = _standardise(v)
    lin = torch.nn.Linear(dim, pose_dim)
    with torch.no_grad():
        w, b = _least_squares(z, p)
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    vp_loss = _adam(lin, lambda: (lin(z) - p).abs().mean(), steps, lr)
    f_vp = PoseFromVector(dim, pose_dim)
    with torch.no_grad():
        f_vp.fc.weight.copy_(lin.weight / sd)
        f_vp.fc.bias.copy_(lin.bias - (lin.weight / sd) @ mu)
    f_vp.eval()
    # f_{p->v}: FC + batch-norm from f_{v->p}'s pose to the vector, MSE.
    vv = v if voxceleb_vectors is None else _as_tensor(voxceleb_vectors, "voxceleb_vectors", dim)
    with torch.no_grad():
        pp = f_vp(vv)
    zp, pmu, psd = _standardise(pp)
    f_pv = VectorFromPose(pose_dim, dim)
    lin2 = torch.nn.Linear(pose_dim, dim)
    with torch.no_grad():
        w, b = _least_squares(zp, vv)
        lin2.weight.copy_(w)
        lin2.bias.copy_(b)
        y = lin2(zp)
        # Batch-norm (training mode: full-batch statistics) starts as the identity on the LS fit.
        f_pv.bn.weight.copy_(y.std(0, unbiased=False).clamp_min(1e-6))
        f_pv.bn.bias.copy_(y.mean(0))
    stack = torch.nn.ModuleDict({"lin": lin2, "bn": f_pv.bn})
    f_pv.train()
    pv_loss = _adam(stack, lambda: ((f_pv.bn(lin2(zp)) - vv) ** 2).mean(), steps, lr)
    with torch.no_grad():
        f_pv.fc.weight.copy_(lin2.weight / psd)
        f_pv.fc.bias.copy_(lin2.bias - (lin2.weight / psd) @ pmu)
        # Running statistics = the full batch's (biased variance, as training normalised by), so eval mode
        # gives what training fitted.
        y = f_pv.fc(pp)
        f_pv.bn.running_mean.copy_(y.mean(0))
        f_pv.bn.running_var.copy_(y.var(0, unbiased=False))
    f_pv.eval()
    with torch.no_grad():
        losses = {"f_vp_l1": float((f_vp(v) - p).abs().mean()), "f_pv_mse": float(((f_pv(pp) - vv) ** 2).mean()),
                  "f_vp_l1_fit": vp_loss, "f_pv_mse_fit": pv_loss}
    return PoseMaps(f_vp, f_pv, losses)


def _adam(module: torch.nn.Module, loss_fn, steps: int, lr: float) -> float:
    """``steps`` full-batch Adam steps on ``loss_fn`` with a cosine-decayed LR; the last loss."""
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    loss = loss_fn()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return float(loss_fn())


def drive_to_pose(source_vectors, target_poses, f_vp: PoseFromVector, f_pv: VectorFromPose,
                  form: Literal["eq1", "difference"] = "eq1") -> torch.Tensor:
    """Driving vectors ``[N, 128]`` that move ``source_vectors`` to ``target_poses``.

    ``eq1``: the thesis's eq. (1), ``v + f_{p->v}(p_target - f_{v->p}(v))``
    (:func:`models.x2face.drive_with_pose`).  ``difference``:
    ``v + f_{p->v}(p_target) - f_{p->v}(f_{v->p}(v))``, which cancels the
    constant ``f_{p->v}(0)`` that an affine ``f_{p->v}`` adds in eq. (1).
    """
    v = torch.as_tensor(np.asarray(source_vectors, dtype=np.float32))
    p = torch.as_tensor(np.asarray(target_poses, dtype=np.float32))
    if v.dim() != 2 or p.dim() != 2 or len(v) != len(p):
        raise ValueError(f"source_vectors [N, D] and target_poses [N, 3] must match, got {list(v.shape)} "
                         f"and {list(p.shape)}")
    f_vp.eval()
    f_pv.eval()
    with torch.no_grad():
        if form == "eq1":
            return drive_with_pose(v, p, f_vp, f_pv)
        if form == "difference":
            return v + f_pv(p) - f_pv(f_vp(v))
    raise ValueError(f"form must be 'eq1' or 'difference', not {form!r}")


def pose_driving_mae(source_vectors, target_poses, f_vp: PoseFromVector, f_pv: VectorFromPose,
                     form: Literal["eq1", "difference"] = "eq1", angles: Sequence[str] = ANGLES) -> dict:
    """MAE (degrees) of the pose ``f_{v->p}`` reads from the driven vectors against the asked ``target_poses``.

    Returns ``{angle: MAE, ..., "mae": mean over the angles}``.
    """
    p = torch.as_tensor(np.asarray(target_poses, dtype=np.float32))
    with torch.no_grad():
        achieved = f_vp.eval()(drive_to_pose(source_vectors, p, f_vp, f_pv, form))
    err = (achieved - p).abs().mean(0).tolist()
    if len(angles) != len(err):
        raise ValueError(f"{len(err)} pose dimensions but angles {list(angles)}")
    return {**{a: float(e) for a, e in zip(angles, err)}, "mae": float(np.mean(err))}


# ---------------------------------------------------------------- driving by audio


def audio_features(audio, sr: int | None, frame_times, n_mels: int = 40, window_s: float = 0.04,
                   windows: int = 1) -> np.ndarray:
    """Per frame, log-mel energies ``[T, windows * n_mels]`` (float32) of the audio around each frame time.

    ``audio``: a sound file's path (read with soundfile; ``sr`` None: the
    file's rate) or samples ``[n]`` / ``[n, channels]`` at ``sr`` Hz (mono:
    the channels' mean).  Each window is a Hann window of ``window_s``
    seconds (40 ms: one 25 fps frame period) through
    :class:`torchaudio.transforms.MelSpectrogram` (power, ``n_mels`` bands,
    one FFT of the window's length), ``log(energy + 1e-10)``.  ``windows``
    consecutive windows are centred on the frame time as a block (5: 0.2 s,
    the thesis's span); audio outside the signal is zeros.
    """
    import torchaudio

    if isinstance(audio, (str, Path)):
        import soundfile

        samples, file_sr = soundfile.read(str(audio), dtype="float32", always_2d=True)
        if sr is not None and int(sr) != int(file_sr):
            raise ValueError(f"{audio}: sampled at {file_sr} Hz, not the {sr} Hz asked")
        sr, x = int(file_sr), samples.mean(axis=1)
    else:
        if sr is None:
            raise ValueError("samples need their rate: pass sr")
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        if x.ndim != 1:
            raise ValueError(f"samples must be [n] or [n, channels], got shape {np.asarray(audio).shape}")
    if windows < 1 or n_mels < 1 or window_s <= 0:
        raise ValueError(f"need windows >= 1, n_mels >= 1 and window_s > 0, not {windows}, {n_mels}, {window_s}")
    times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    win = max(2, int(round(window_s * sr)))
    # window w of a frame at t starts at t + (w - windows / 2) * window length (the block centred on t).
    starts = np.rint(times * sr).astype(np.int64)[:, None] + (np.arange(windows)[None, :] * win - (windows * win) // 2)
    padded = np.concatenate([np.zeros(windows * win, np.float32), x.astype(np.float32),
                             np.zeros(windows * win, np.float32)])
    offset = windows * win
    idx = np.clip(starts[..., None] + offset + np.arange(win), 0, len(padded) - 1)  # [T, windows, win]
    segments = torch.from_numpy(padded[idx].reshape(-1, win))
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=win, win_length=win, hop_length=win,
                                               center=False, n_mels=n_mels, power=2.0)
    energy = mel(segments)[..., 0] if len(segments) else torch.zeros(0, n_mels)  # [T * windows, n_mels]
    return torch.log(energy + 1e-10).reshape(len(times), windows * n_mels).numpy().astype(np.float32)


@plain_dataclass
class AudioMap:
    """``f_{a->v}``: audio features -> driving vector by least squares on features normalised to N(0, 1)."""

    mean: np.ndarray  # [D] the normalisation: the fitted rows' mean and std
    std: np.ndarray
    weight: np.ndarray  # [D, 128]
    bias: np.ndarray  # [128]
    ridge: float
    val_mse: dict  # ridge -> validation MSE

    def __call__(self, features, normalise: bool = True) -> np.ndarray:
        """The driving vectors ``[N, 128]``; ``normalise=False`` skips the N(0, 1) normalisation (the thesis's
        choice when driving: "this amplifies the signal")."""
        a = np.asarray(features, dtype=np.float64)
        if normalise:
            a = (a - self.mean) / self.std
        return (a @ self.weight + self.bias).astype(np.float32)


def _ridge(z: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``z W + b ~ y`` with ``ridge * |W|^2`` (the bias unpenalised), via lstsq of the stacked system."""
    zm, ym = z.mean(0), y.mean(0)
    zc, yc = z - zm, y - ym
    if ridge > 0:
        zc = np.vstack([zc, math.sqrt(ridge) * np.eye(z.shape[1])])
        yc = np.vstack([yc, np.zeros((z.shape[1], y.shape[1]))])
    w = np.linalg.lstsq(zc, yc, rcond=None)[0]
    return w, ym - zm @ w


def fit_audio_map(features, driving_vectors, val_features=None, val_vectors=None,
                  ridges: Sequence[float] = (0.0, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0),
                  val_fraction: float = 0.2) -> AudioMap:
    """Least squares from audio features ``[N, D]`` to driving vectors ``[N, 128]``, the ridge chosen on validation.

    The features are normalised to N(0, 1) (the thesis) with the mean and
    std of the rows a fit sees.  Validation rows: ``val_features`` and
    ``val_vectors``, or else the last ``val_fraction`` of the rows (a
    contiguous block: frames of a video are alike, so a random draw would
    score on near-copies).  Each ridge is fitted on the training rows and
    scored by MSE on the validation rows; the best (ties: the smaller) is
    refitted on every row given, training and validation, its normalisation
    with it.
    """
    a = np.asarray(features, dtype=np.float64)
    y = np.asarray(driving_vectors, dtype=np.float64)
    if a.ndim != 2 or y.ndim != 2 or len(a) != len(y) or len(a) < 2:
        raise ValueError(f"features [N, D] and driving_vectors [N, 128] must match, got {a.shape} and {y.shape}")
    if not (np.isfinite(a).all() and np.isfinite(y).all()):
        raise ValueError("features and driving vectors must be finite")
    if val_features is None:
        cut = len(a) - max(1, int(round(val_fraction * len(a))))
        if cut < 2:
            raise ValueError(f"{len(a)} rows are too few to hold out validation rows; pass val_features")
        ta, ty, va, vy = a[:cut], y[:cut], a[cut:], y[cut:]
    else:
        ta, ty = a, y
        va, vy = np.asarray(val_features, dtype=np.float64), np.asarray(val_vectors, dtype=np.float64)
        if va.shape[1:] != a.shape[1:] or vy.shape[1:] != y.shape[1:] or len(va) != len(vy):
            raise ValueError(f"validation features {va.shape} and vectors {vy.shape} do not match the training rows")
    mean, std = ta.mean(0), ta.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    scores = {}
    for r in ridges:
        w, b = _ridge((ta - mean) / std, ty, float(r))
        scores[float(r)] = float((((va - mean) / std @ w + b - vy) ** 2).mean())
    best = min(scores, key=lambda r: (scores[r], r))
    every_a, every_y = np.vstack([ta, va]), np.vstack([ty, vy])
    mean, std = every_a.mean(0), every_a.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    w, b = _ridge((every_a - mean) / std, every_y, best)
    return AudioMap(mean=mean, std=std, weight=w, bias=b, ridge=best, val_mse=scores)


def drive_with_audio(v_source, a_driving, a_source, audio_map: AudioMap, f_vp: PoseFromVector,
                     f_pv: VectorFromPose, normalise: bool = False) -> np.ndarray:
    """Thesis §4.2: ``v + f_av(a_d) - f_av(a_s) - f_pv(p_audio - p_source)``, ``p_audio = f_vp(f_av(a_d))``,
    ``p_source = f_vp(v)``; ``normalise`` False as the thesis drives (un-normalised features)."""
    v = np.asarray(v_source, dtype=np.float32)
    va, vs = audio_map(a_driving, normalise), audio_map(a_source, normalise)
    f_vp.eval()
    f_pv.eval()
    with torch.no_grad():
        vt = torch.from_numpy(v)
        p_audio = f_vp(torch.from_numpy(va))
        correction = f_pv(p_audio - f_vp(vt)).numpy()
    return (v + va - vs - correction).astype(np.float32)


# ---------------------------------------------------------------- driving one image (sightsound drive x2face)


def save_pose_maps(maps: PoseMaps, path: str | Path, checkpoint: str | Path, angles=("roll", "pitch", "yaw")) -> str:
    """Write ``f_vp`` and ``f_pv`` (state dicts, plain values: loads with ``weights_only=True``) for ``drive x2face --pose``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": "x2face-pose-maps", "checkpoint": str(checkpoint), "angles": list(angles),
                "f_vp": maps.f_vp.state_dict(), "f_pv": maps.f_pv.state_dict()}, path)
    return str(path)


def load_pose_maps(path: str | Path) -> PoseMaps:
    """The maps :func:`save_pose_maps` wrote; CheckpointError (one line, the file named) for anything else."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a pose-maps file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(data, dict) or data.get("model") != "x2face-pose-maps":
        raise CheckpointError(f"{path}: not a pose-maps file of evaluate faces (x2face-pose-maps.pt)")
    f_vp, f_pv = PoseFromVector(), VectorFromPose()
    try:
        f_vp.load_state_dict(data["f_vp"])
        f_pv.load_state_dict(data["f_pv"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path}: its maps do not fit f(v->p) / f(p->v) ({str(exc).splitlines()[0][:120]})") \
            from None
    return PoseMaps(f_vp.eval(), f_pv.eval())


def read_face_image(path: str | Path, size: int) -> torch.Tensor:
    """An RGB face crop (any size; square crops like the build's) as ``[1, 3, size, size]`` in [0, 1]; ValueError otherwise."""
    import cv2
    import torchvision.transforms.v2.functional as TF

    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if image is None:
        raise ValueError(f"{path}: not an image file OpenCV can read")
    rgb = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
    rgb = TF.resize(rgb, [size, size], antialias=True)
    return TF.to_dtype(rgb, torch.float32, scale=True).unsqueeze(0)


def drive_image(checkpoint: str | Path, source: str | Path, out_png: str | Path, *, driving: str | Path | None = None,
                pose: Sequence[float] | None = None, pose_maps: str | Path | None = None,
                form: str = "eq1") -> dict:
    """Generate the source face driven by a driving image, or by a pose (roll, pitch, yaw degrees, through
    ``pose_maps``); write ``[source | embedded face | driving | generated]`` as one PNG; return what was done."""
    from torchvision.utils import save_image

    if (driving is None) == (pose is None):
        raise ValueError("give exactly one of a driving image or a pose")
    net = load_net(checkpoint)
    s = net.config.image_size
    src = read_face_image(source, s)
    with torch.no_grad():
        embedded, _ = net.embed(src)
        panels = [src[0], embedded[0]]
        out = {"checkpoint": str(checkpoint), "source": str(source), "out": str(out_png)}
        if driving is not None:
            drv = read_face_image(driving, s)
            v = net.driving_vector(drv)
            panels.append(drv[0])
            out["driving"] = str(driving)
        else:
            if pose_maps is None:
                raise ValueError("driving by pose needs --pose-maps (x2face-pose-maps.pt, written by evaluate faces)")
            maps = load_pose_maps(pose_maps)
            v_src = net.driving_vector(src)
            v = drive_to_pose(v_src.numpy(), np.asarray([list(pose)], np.float32), maps.f_vp, maps.f_pv, form=form)
            panels.append(torch.full_like(src[0], 0.5))  # no driving frame: a grey panel
            out.update(pose=list(map(float, pose)), source_pose=maps.f_vp(v_src)[0].tolist(),
                       reached_pose=maps.f_vp(v)[0].tolist())
        generated = net.generate(embedded, v)
        panels.append(generated[0])
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.stack(panels).clamp(0, 1), str(out_png), nrow=len(panels), padding=2)
    return out
