"""The audio-visual MLP of thesis ch. 6, table 2: note onsets from noisy audio and the keyboard's picture together.

"A 3-layer perceptron that combines the visual and audio information. It
takes the concatenation of [Onsets and Frames'] 512-dimensional final feature
vector from the noisy PianoYT audio with our final feature vector
(ResNet+aggregation+slope) as input" and gives the 88 keys' onsets of the
middle frame, as the visual model does.

The thesis gives no widths, activations or normalisation; ours:

* the input is batch-normalised first (the two halves come from different
  layers, a BiLSTM's tanh-bounded output and a ReLU network's pooled
  activations, whose scales differ by an order of magnitude);
* three linear layers, ``hidden`` = (512, 256) wide, ReLU and dropout 0.5
  between them, 88 logits out.

The audio features are Onsets and Frames' onset BiLSTM output
(:meth:`models.onsets_frames.OnsetsAndFrames.onset_features`: 512-d at the
paper's size, ``2 * onset_lstm_units`` at ours) and the visual ones the onset
model's pooled layer4 (:meth:`models.piano_onsets.PianoOnsets.forward_stages`'s
``avgpool``: 512-d at paper size); how they are put on the video's frames is
:mod:`tasks.training.av_mlp`'s business.
"""

from __future__ import annotations

import torch
from torch import nn

N_KEYS = 88


class FusionMLP(nn.Module):
    """``forward(audio [B, A], visual [B, V])`` -> onset logits ``[B, 88]``."""

    def __init__(self, audio_dim: int, visual_dim: int, hidden: tuple[int, int] = (512, 256), dropout: float = 0.5,
                 keys: int = N_KEYS):
        super().__init__()
        self.audio_dim, self.visual_dim = int(audio_dim), int(visual_dim)
        width = self.audio_dim + self.visual_dim
        self.norm = nn.BatchNorm1d(width)
        self.layers = nn.Sequential(
            nn.Linear(width, hidden[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden[1], keys))

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] != self.audio_dim or visual.shape[-1] != self.visual_dim:
            raise ValueError(f"expected audio [B, {self.audio_dim}] and visual [B, {self.visual_dim}] features, "
                             f"got {list(audio.shape)} and {list(visual.shape)}")
        return self.layers(self.norm(torch.cat([audio, visual], dim=-1)))
