"""Piano transcribers: audio in, notes out.  The pseudo-labels of PianoYT.

A transcriber is anything with a ``name``, a ``sample_rate`` and a
``transcribe(audio) -> list[Note]`` method taking mono float32 audio at that
rate.  Backends register in :data:`LABELERS` under the name that
``--labeler`` takes; :func:`get_transcriber` builds one.

Backends:

``transkun`` (default)
    transkun 2.0's pretrained transformer + semi-CRF model (Yan & Duan), loaded
    from the weights that ship inside the ``transkun`` package.  It works on
    44.1 kHz audio in 16 s segments with an 8 s hop, so memory stays bounded
    on long recordings (the whole waveform, 10.6 MB per minute, is the only
    thing that grows).  CPU or CUDA.

``onsets-frames``
    Onsets and Frames trained by ``sightsound train onsets-frames``, from a
    checkpoint given as ``checkpoint=`` (``--checkpoint``); 16 kHz audio.  CPU or CUDA.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Note:
    onset: float  # seconds
    offset: float  # seconds
    pitch: int  # MIDI number
    velocity: int  # 1-127


class Transcriber(Protocol):
    name: str
    sample_rate: int

    def transcribe(self, audio: np.ndarray) -> list[Note]: ...


LABELERS: dict[str, Callable[..., Transcriber]] = {}


def register(name: str):
    def deco(factory):
        LABELERS[name] = factory
        return factory

    return deco


def get_transcriber(name: str = "transkun", **options) -> Transcriber:
    """Build the transcriber registered as ``name`` (``device`` and backend options pass through)."""
    if name not in LABELERS:
        raise ValueError(f"unknown labeler {name!r}; known: {', '.join(sorted(LABELERS))}")
    return LABELERS[name](**options)


def labeler_sample_rate(name: str) -> int:
    """The audio rate a labeler takes, without loading its model."""
    if name not in LABELERS:
        raise ValueError(f"unknown labeler {name!r}; known: {', '.join(sorted(LABELERS))}")
    return int(LABELERS[name].sample_rate)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@register("transkun")
class TranskunTranscriber:
    """transkun 2.0 with its packaged pretrained weights (``transkun/pretrained/2.0.pt``)."""

    name = "transkun"
    sample_rate = 44100  # transkun 2.0's packaged configuration ("fs")

    def __init__(self, device: str = "auto", weights: str | None = None, conf: str | None = None):
        import importlib.resources as resources

        import torch
        import transkun.ModelTransformer as model_module

        pkg = resources.files("transkun") / "pretrained"
        conf_path = Path(conf) if conf else Path(str(pkg / "2.0.conf"))
        weights_path = Path(weights) if weights else Path(str(pkg / "2.0.pt"))
        # The .conf file is JSON: {"Model": {"module": ..., "config": {...}}}.
        settings = json.loads(conf_path.read_text())["Model"]["config"]
        config = model_module.Config()
        config.__dict__.update(settings)
        self.device = pick_device(device)
        model = model_module.TransKun(conf=config)
        checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = checkpoint.get("best_state_dict") or checkpoint["state_dict"]
        # transkun's own CLI loads with strict=False; the packaged checkpoint
        # has exactly the model's tensors, so we insist on a full match.
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(f"transkun weights {weights_path} lack {len(missing)} tensors, e.g. {missing[:3]}")
        self.model = model.to(self.device).eval()
        if int(model.fs) != self.sample_rate:
            raise RuntimeError(f"transkun configuration {conf_path} expects {model.fs} Hz, not {self.sample_rate}")
        self.version = f"transkun-2.0:{weights_path.stat().st_size}"

    def transcribe(self, audio: np.ndarray) -> list[Note]:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).reshape(-1, 1).to(self.device)
        with torch.inference_mode(), warnings.catch_warnings():
            # transkun wraps inference in torch.utils.checkpoint, which warns
            # about use_reentrant and absent gradients; both are harmless here.
            warnings.simplefilter("ignore", UserWarning)
            events = self.model.transcribe(x, discardSecondHalf=False)
        notes = [
            Note(float(e.start), float(e.end), int(e.pitch), int(max(1, min(127, e.velocity))))
            for e in events
            if 21 <= int(e.pitch) <= 108 and e.end > e.start
        ]
        return sorted(notes, key=lambda n: (n.onset, n.pitch))


def write_midi(notes: list[Note], path: str | Path) -> str:
    """Write notes as a one-track piano MIDI file (atomically; ``path`` may be an fsspec URL)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="piano")
    for n in notes:
        piano.notes.append(pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.onset, end=n.offset))
    pm.instruments.append(piano)
    from tasks import storage

    tmp = storage.local_output(path)
    pm.write(tmp)
    return storage.publish(tmp, str(path))


def read_midi(path: str | Path) -> list[Note]:
    """All non-drum notes of a MIDI file, sorted by onset."""
    import pretty_midi

    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as exc:  # pretty_midi/mido raise many types for a bad file
        raise ValueError(f"cannot read MIDI {path}: {exc}") from None
    notes = [
        Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity))
        for inst in pm.instruments
        if not inst.is_drum
        for n in inst.notes
    ]
    return sorted(notes, key=lambda n: (n.onset, n.pitch))


def transcribe_file(path: str | Path, transcriber: Transcriber) -> list[Note]:
    """Transcribe an audio or video file (decoded with ffmpeg at the transcriber's rate)."""
    import tempfile

    from tasks.media import extract_audio, read_wav

    with tempfile.TemporaryDirectory() as tmp:
        wav = extract_audio(path, Path(tmp) / "audio.wav", transcriber.sample_rate)
        audio, _ = read_wav(wav)
    return transcriber.transcribe(audio)


# ---------------------------------------------------------------- onsets-frames


@register("onsets-frames")
class OnsetsFramesTranscriber:
    """Onsets and Frames (Hawthorne et al. 2018) from a checkpoint that ``sightsound train onsets-frames``
    wrote (:mod:`models.onsets_frames`; loaded with ``weights_only=True``, refused when its tensors do
    not match its config).  16 kHz audio; the mel front end runs on ``device`` with the model;
    Magenta's decoding (onset threshold 0.5, frame threshold 0.5)."""

    name = "onsets-frames"
    sample_rate = 16000  # models.onsets_frames.SAMPLE_RATE (not imported here: that would load torch)

    def __init__(self, checkpoint: str | None = None, device: str = "auto", onset_threshold: float = 0.5,
                 frame_threshold: float = 0.5, chunk_frames: int = 4096, fingerprint: str | None = None):
        if not checkpoint:
            raise ValueError("the onsets-frames labeler needs checkpoint=PATH (--checkpoint on the command line)")
        if fingerprint is not None:
            # The build CLI passes the checkpoint's content fingerprint, so the label task's cache key
            # changes when the file at that path does; a file changed since then is refused.
            from tasks.cache import file_fingerprint

            if file_fingerprint(checkpoint) != fingerprint:
                raise ValueError(f"checkpoint {checkpoint} changed since its fingerprint {fingerprint} was taken")
        from models import onsets_frames as of

        assert of.SAMPLE_RATE == self.sample_rate
        self.device = pick_device(device)
        self.model, blob = of.load_checkpoint(checkpoint, device=self.device)
        self.frontend = of.MelFrontEnd().to(self.device)
        self.onset_threshold, self.frame_threshold, self.chunk_frames = onset_threshold, frame_threshold, chunk_frames
        self.version = f"onsets-frames:{Path(checkpoint).name}:step{blob.get('step', 0)}"

    def transcribe(self, audio: np.ndarray) -> list[Note]:
        import torch

        from models import onsets_frames as of

        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            mel = self.frontend(x)
        probs = of.predict(self.model, mel, chunk_frames=self.chunk_frames)
        notes = of.decode_notes(probs["onset"], probs["frame"], probs["velocity"],
                                onset_threshold=self.onset_threshold, frame_threshold=self.frame_threshold)
        return [Note(*n) for n in notes]
