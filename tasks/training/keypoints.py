"""Training Jakab et al.'s keypoint bottleneck (NeurIPS 2018) on VoxCeleb face tracks, on the shared trainer.

:class:`KeypointTask` trains :class:`models.keypoints.KeypointBottleneck`:
for a source and a target frame of one face track (FacePairs with one
source), the network renders the target from the source's appearance and
the target's ``K`` keypoints, and the loss compares the rendering with the
target.  The keypoints are what the landmark table reads
(:mod:`tasks.evaluation.landmarks`).

The loss (paper §3.2), and what the sample set uses instead
    The paper's loss is perceptual: squared differences of VGG-19 features
    (:class:`models.keypoints.PerceptualLoss`), the VGG "pre-trained on
    ImageNet" or by colourisation.  No such weights ship with any package
    here, so ``loss="perceptual"`` needs ``perceptual_weights``: a
    torchvision VGG-19 state dict the user has (read with
    ``torch.load(weights_only=True)``; a bad file is one line).  Without
    them, ``loss="l2"``: the mean squared pixel difference.  The paper's own
    ablation (Table 2, MAFL error at K = 30) ranks the pixel losses: l2 2.84
    against l1 3.64 (the content loss 2.58), so l2 is the pixel loss that
    loses least.  The sample-set rows of the landmark table say which loss
    trained them.

Optimiser and schedule (paper §4.1)
    Adam with weight decay 5e-4, learning rate 1e-2 "lowered by a factor of
    10 once the training error stops decreasing" (the shared trainer's
    plateau rule, on the validation reconstruction error here, then an
    early stop), gradient norm clipped to 1.0, conv weights drawn from
    N(0, 0.01^2).  The paper gives no batch size; its 2020 follow-up uses
    16, which is the default here (``paper_batches``).

Chosen here (the paper is silent or it does not apply)
    * Pairs are two frames of one face track (utterance): the paper's
      VoxCeleb pairs may also cross utterances of one video.
    * ``warps`` (``--warps``) adds the paper's still-image pairs on top of
      the video's: the source and the target frame each go through their
      own random thin-plate-spline warp (:mod:`tasks.training.tps`), and
      the loss does not count the target's pixels warped in from outside
      the frame (paper §4.1: "we discount the reconstruction loss in the
      regions of the warped image which lie outside the original image"):
      there the rendering is replaced by the target itself, so those pixels
      add nothing to either loss and no gradient.  Between two frames of a
      sample track the face moves a few pixels; the warps make the pairs
      differ in geometry the way the paper's CelebA pairs do.  Validation
      pairs are never warped (the logged errors stay comparable across
      runs).
    * The plateau and best-checkpoint metric is the validation loss of the
      run's own kind (``val_loss``: l2 or perceptual) on fixed pairs;
      ``val_l1`` and ``val_identity_l1`` (not moving a pixel) are logged
      beside it as for FAb-Net and X2Face.
    * The perceptual network stays out of the module's state dict (its
      weights are the user's file), so a checkpoint holds the keypoint
      network only; the layer weights' running averages are saved with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass

from models.keypoints import KeypointBottleneck, KeypointConfig, PerceptualLoss, vgg19_features
from tasks.training.faces import FaceReconstructionTask, fit_face_model, load_net_state
from tasks.training.tps import random_warp
from tasks.training.trainer import CheckpointError, TrainerSettings, read_checkpoint

PAPER_BATCH = 16  # Jakab et al. 2020's batch (the 2018 paper gives none)
KEYPOINTS = (10, 30)  # the paper's K for faces (it also tries 50)


@dataclass
class KeypointSettings:
    """One keypoint-bottleneck training run: the data, K, the loss, and how the shared trainer runs."""

    data_root: str = Field(description="the data root of a build-voxceleb build (D, holding D/voxceleb/shards)")
    trainer: TrainerSettings = Field(description="the shared trainer's settings")
    config: Literal["paper", "small"] = Field(
        "small", description="paper: 128x128 frames, first block 32 channels; small: 64x64, 16 channels")
    keypoints: int = Field(10, ge=1, description="K, the number of keypoints (the paper: 10, 30)")
    loss: Literal["l2", "perceptual"] = Field(
        "l2", description="perceptual: the paper's VGG-19 loss (needs --perceptual-weights); l2: squared pixels")
    perceptual_weights: str | None = Field(
        None, description="a torchvision VGG-19 state dict (features.* keys) for the perceptual loss")
    learning_rate: float = Field(1e-2, gt=0, description="Adam's learning rate (the paper's 1e-2)")
    weight_decay: float = Field(5e-4, ge=0, description="Adam's weight decay (the paper's 5e-4)")
    buffer_size: int = Field(256, ge=1, description="shuffle buffer, examples per loader worker")
    paper_batches: bool = Field(True, description="batch 16 (Jakab et al. 2020); off: --batch-size")
    warps: bool = Field(False, description="warp source and target by random TPS each (the paper's still-image "
                        "pairs) on top of the video's two frames")

    @field_validator("perceptual_weights")
    @classmethod
    def _absolute(cls, value):
        return None if value is None else str(Path(value).resolve())

    @model_validator(mode="after")
    def _perceptual_needs_weights(self):
        if self.loss == "perceptual" and not self.perceptual_weights:
            raise ValueError("the perceptual loss needs VGG-19 weights (perceptual_weights / --perceptual-weights); "
                             "without them use --loss l2")
        return self


def run_name(settings: KeypointSettings) -> str:
    """``keypoints-10``, ``keypoints-30-perceptual`` ...: a run's folder and its table row."""
    return (f"keypoints-{settings.keypoints}" + ("-perceptual" if settings.loss == "perceptual" else "")
            + ("-warps" if settings.warps else ""))


def load_perceptual(path: str | Path) -> PerceptualLoss:
    """The user's VGG-19 state dict as a :class:`PerceptualLoss`; CheckpointError (one line, the file named)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such VGG-19 weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a state dict torch.load(weights_only=True) reads "
                              f"({type(exc).__name__})") from None
    if isinstance(state, dict) and "hyper_parameters" in state:
        raise CheckpointError(f"{path}: a Lightning checkpoint of a sightsound model, not VGG-19 weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (torchvision's vgg19().state_dict())")
    try:
        return PerceptualLoss(vgg19_features(state))
    except (RuntimeError, KeyError) as exc:
        msg = " ".join(str(exc).split())
        raise CheckpointError(f"{path}: its tensors do not fit torchvision's VGG-19 features ({msg[:160]})") from None


class KeypointTask(FaceReconstructionTask):
    """The keypoint bottleneck on the shared trainer (see the module docstring)."""

    monitor = ("val_loss", "min")
    plateau = ("val_loss", "min")
    clip_norm = 1.0  # paper §4.1: "the l2-norm of the gradients is bounded to 1.0"
    resume_keys = ("model", "config", "keypoints", "loss", "warps")
    resume_defaults = {"warps": False}  # a last.ckpt from before --warps trained on unwarped pairs

    def __init__(self, config: str = "small", keypoints: int = 10, loss: str = "l2",
                 perceptual_weights: str | None = None, learning_rate: float = 1e-2, weight_decay: float = 5e-4,
                 sources: int = 1, model: str = "keypoints", warps: bool = False):
        super().__init__()
        if loss not in ("l2", "perceptual"):
            raise ValueError(f"loss must be 'l2' or 'perceptual', not {loss!r}")
        self.save_hyperparameters()  # plain values only: checkpoints load with weights_only=True
        self.net = KeypointBottleneck(KeypointConfig.named(config, keypoints))
        self._perceptual: list = []  # [PerceptualLoss]; a list keeps the user's VGG out of the state dict
        self._saved_scale = None
        self._validation_metrics()
        from torchmetrics import MeanMetric

        self.val_loss_metric = MeanMetric()

    def load_perceptual(self) -> None:
        """Read the VGG-19 (perceptual loss only); CheckpointError (one line) if it is missing or not VGG-19."""
        if self.hparams.loss != "perceptual" or self._perceptual:
            return
        if not self.hparams.perceptual_weights:
            raise CheckpointError("the perceptual loss needs VGG-19 weights (--perceptual-weights)")
        self._perceptual = [load_perceptual(self.hparams.perceptual_weights)]
        if self._saved_scale is not None:
            self._perceptual[0].scale.copy_(self._saved_scale)

    def on_fit_start(self) -> None:
        self.load_perceptual()
        if self._perceptual:
            self._perceptual[0].to(self.device)

    def reconstruction_loss(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "perceptual":
            return self._perceptual[0](generated, target)
        return F.mse_loss(generated, target)

    def forward(self, sources: torch.Tensor, target: torch.Tensor):
        return self.net(sources[:, 0], target)

    def training_step(self, batch, batch_idx):
        sources, target = batch["sources"], batch["target"]
        inside = None
        if self.hparams.warps:
            sources = random_warp(sources[:, 0])[0][:, None]
            target, inside = random_warp(target)
        if self._perceptual:
            self._perceptual[0].train()
        generated = self(sources, target).generated
        if inside is not None:  # the paper's discount: no loss on pixels from outside the frame
            generated = torch.where(inside, generated, target)
        loss = self.reconstruction_loss(generated, target)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def validation_step(self, batch, batch_idx):
        sources, target = batch["sources"], batch["target"]
        generated = self(sources, target).generated
        if self._perceptual:
            self._perceptual[0].eval()  # the layer weights are not updated on validation batches
        self.val_loss_metric.update(self.reconstruction_loss(generated, target))
        from models.fabnet import l1_loss

        self.val_l1_metric.update(l1_loss(generated, target))
        self.val_identity_metric.update(l1_loss(sources[:, 0], target))

    def on_validation_epoch_end(self) -> None:
        self.log("val_loss", self.val_loss_metric.compute(), prog_bar=True)
        self.val_loss_metric.reset()
        super().on_validation_epoch_end()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.learning_rate,
                                weight_decay=self.hparams.weight_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._perceptual:
            checkpoint["perceptual_scale"] = self._perceptual[0].scale.detach().cpu().tolist()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        scale = checkpoint.get("perceptual_scale")
        if scale is not None:
            self._saved_scale = torch.tensor(scale)
            if self._perceptual:
                self._perceptual[0].scale.copy_(self._saved_scale)


def load_net(checkpoint: str | Path) -> KeypointBottleneck:
    """The network of a :class:`KeypointTask` checkpoint, in eval mode; CheckpointError (one line) otherwise."""
    ckpt = read_checkpoint(checkpoint)
    hp = ckpt["hyper_parameters"]
    if hp.get("model") != "keypoints" or hp.get("config") not in ("paper", "small"):
        raise CheckpointError(f"{checkpoint}: not a keypoint-bottleneck checkpoint of train keypoints "
                              f"(hyperparameters {sorted(hp)[:6]})")
    net = KeypointBottleneck(KeypointConfig.named(hp["config"], int(hp["keypoints"])))
    return load_net_state(net, ckpt, checkpoint)


def paper_batch(settings: KeypointSettings) -> KeypointSettings:
    """``settings`` with batch 16 unless ``paper_batches`` is off."""
    import dataclasses

    if not settings.paper_batches:
        return settings
    return dataclasses.replace(settings, trainer=dataclasses.replace(settings.trainer, batch_size=PAPER_BATCH))


def make_module(settings: KeypointSettings) -> KeypointTask:
    """The module of ``settings``; the perceptual loss's weights are read now, so a bad file is refused first."""
    module = KeypointTask(settings.config, settings.keypoints, settings.loss, settings.perceptual_weights,
                          settings.learning_rate, settings.weight_decay, warps=settings.warps)
    module.load_perceptual()
    return module


def train(settings: KeypointSettings, log=print, callbacks=()) -> dict:
    """Train one keypoint bottleneck under ``settings.trainer.run_dir``; return the trainer's summary."""
    settings = paper_batch(settings)
    summary = fit_face_model(settings, lambda: make_module(settings), run_name(settings), log, callbacks,
                             "keypoints", note=f", loss {settings.loss}")
    summary.pop("module")
    return {**summary, "run": run_name(settings), "config": settings.config, "keypoints": settings.keypoints,
            "loss": settings.loss, "warps": settings.warps}
