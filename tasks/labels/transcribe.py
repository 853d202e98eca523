"""Piano transcribers: audio in, notes out.  The pseudo-labels of PianoYT.

A transcriber is anything with a ``name``, a ``sample_rate`` and a
``transcribe(audio) -> list[Note]`` method taking mono float32 audio at that
rate.  Backends register in :data:`LABELERS` under the name that
``--labeler`` takes; :func:`get_transcriber` builds one.

Backends:

``transkun`` (default)
    transkun 2.0's pretrained transformer + semi-CRF model (Yan & Duan), loaded
    from the weights that ship inside the ``transkun`` package.  It works on
    44.1 kHz audio in 16 s segments with an 8 s hop.  Keep those: the model
    was trained on them, and on 120 s of the piano sample 12 s / 6 s segments
    gave onset F1 0.60 and 8 s / 4 s 0.66 against 0.98 for 16 s / 8 s
    (measured 2026-11-25; the smaller segments would have saved 350-600 MB).
    Its scorer is replaced by :func:`lean_interval_scorer` (same numbers, about
    300 MB less at the peak).  CPU or CUDA.

Builds and ``sightsound label`` call :func:`transcribe_wav`, which reads the
WAV file and runs the transcriber ``WINDOW_S`` seconds at a time, so neither
the samples nor anything else grows with the recording's length.

``onsets-frames``
    Onsets and Frames trained by ``sightsound train onsets-frames``, from a
    checkpoint given as ``checkpoint=`` (``--checkpoint``); 16 kHz audio.  CPU or CUDA.
    :func:`check_labeler` checks the checkpoint before a build starts.
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


def check_labeler(name: str, options: dict) -> None:
    """Refuse (ValueError, one line) options the labeler would fail on, before a build does any work.

    A backend may define ``check_options(**options)``: onsets-frames checks its
    checkpoint (header, config, tensor shapes) without building the model.
    """
    import inspect

    if name not in LABELERS:
        raise ValueError(f"unknown labeler {name!r}; known: {', '.join(sorted(LABELERS))}")
    try:
        inspect.signature(LABELERS[name]).bind(**options)
    except TypeError as exc:
        raise ValueError(f"labeler {name}: {exc}") from None
    check = getattr(LABELERS[name], "check_options", None)
    if check is not None:
        check(**options)


def labeler_options(labeler: str, device: str = "auto", checkpoint: str | None = None) -> dict:
    """The options :func:`get_transcriber` takes for ``labeler`` (ValueError, one line, if they do not fit).

    ``checkpoint`` belongs to onsets-frames only; its fingerprint goes into the
    options so that a label task's cache key changes with the checkpoint's bytes.
    """
    options = {"device": device}
    if labeler == "onsets-frames":
        if not checkpoint:
            raise ValueError("--labeler onsets-frames needs --checkpoint PATH (a checkpoint of train onsets-frames)")
        from tasks.store.cache import file_fingerprint

        check_labeler(labeler, {"checkpoint": checkpoint})  # a bad checkpoint: one line, before any work
        options["checkpoint"] = str(Path(checkpoint).resolve())
        options["fingerprint"] = file_fingerprint(checkpoint)
    elif checkpoint:
        raise ValueError(f"--checkpoint is for --labeler onsets-frames, not {labeler}")
    else:
        check_labeler(labeler, options)  # an unknown labeler: one line
    return options


def labeler_sample_rate(name: str) -> int:
    """The audio rate a labeler takes, without loading its model."""
    if name not in LABELERS:
        raise ValueError(f"unknown labeler {name!r}; known: {', '.join(sorted(LABELERS))}")
    return int(LABELERS[name].sample_rate)


def pick_device(device: str = "auto") -> str:
    """``"auto"`` becomes ``"cuda"`` when a GPU is visible, else ``"cpu"``; any other name is kept."""
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
        lean_interval_scorer(self.model)
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


def release_free_memory() -> None:
    """Give the pages of freed heap memory back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    glibc keeps memory that torch frees inside its heap, so after transkun's
    backbone the process still holds 300-350 MB it no longer uses, and the
    scorer's large tensors (mapped anew, not taken from the heap) come on
    top of it.  Trimming in between lowered the peak of transcription by
    about that much on the CPU (measured 2026-11-25).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc (musl, macOS)
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def lean_interval_scorer(model, pitches_at_once: int = 8) -> bool:
    """Make transkun's interval scorer build its score tensor a few pitches at a time.  Same numbers.

    For every 16 s segment transkun 2.0 scores every (onset frame, offset
    frame) pair of every pitch: a [689, 689, 1, 88] float32 tensor, 167 MB.
    Its ``ScaledInnerProductIntervalScorer.forward`` builds that tensor in
    four whole-size steps (inner products, times the interval length, plus a
    diagonal matrix, then a permuted copy), so three or four such tensors
    are alive at once: 500-670 MB over the model for each segment (measured
    on the CPU, 2026-11-25).  This replacement computes the same operations
    for ``pitches_at_once`` pitches at a time into the one output tensor,
    adding the diagonal in place instead of through a dense diagonal
    matrix.  ``tests/test_transcribe_windows.py`` checks that its output
    equals the original's, element for element.

    Only the configuration transkun 2.0 ships (inner-product scorer, linear
    length scaling) is replaced; for any other the model is left alone and
    this returns False.
    """
    import math
    import types

    import torch

    scorer = getattr(model, "scorer", None)
    if not (getattr(model, "useInnerProductScorer", False) and getattr(scorer, "lengthScaling", None) == "linear"
            and hasattr(scorer, "map") and hasattr(scorer, "expansionFactor")):
        return False

    def forward(self, ctx):
        release_free_memory()  # what the backbone freed, before the scores take their room
        width = self.size * self.expansionFactor
        proj = self.map(ctx)  # [batch, pitch, frame, 2 * width + 1]
        q = proj[..., :width] / math.sqrt(width)
        k = proj[..., width : 2 * width]
        diag = proj[..., 2 * width]  # [batch, pitch, frame]
        n_batch, n_pitch, n_frame = q.shape[:3]
        frames = torch.arange(n_frame, device=ctx.device)
        length = (frames.unsqueeze(-1) - frames.unsqueeze(0)).abs()
        scores = torch.empty((n_frame, n_frame, n_batch, n_pitch), dtype=q.dtype, device=q.device)
        for p0 in range(0, n_pitch, pitches_at_once):
            p1 = min(n_pitch, p0 + pitches_at_once)
            part = torch.einsum("iped,ipbd->ipeb", q[:, p0:p1], k[:, p0:p1])
            part.mul_(length)
            part.diagonal(dim1=-2, dim2=-1).add_(diag[:, p0:p1])
            scores[..., p0:p1] = part.permute(2, 3, 0, 1)
            del part
        skip = (diag[..., 1:] * 0.0).permute(2, 0, 1).contiguous()  # transkun's eps scores: zeros, as there
        return scores, skip

    scorer.forward = types.MethodType(forward, scorer)
    if hasattr(model, "backbone"):  # and before each segment: what the last one's decoding freed
        model.backbone.register_forward_pre_hook(lambda module, args: release_free_memory())
    return True


def write_midi(notes: list[Note], path: str | Path) -> str:
    """Write notes as a one-track piano MIDI file (atomically; ``path`` may be an fsspec URL)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=960, initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0, name="piano")
    for n in notes:
        piano.notes.append(pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.onset, end=n.offset))
    pm.instruments.append(piano)
    from tasks.store import storage

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


# ---------------------------------------------------------------- windows

WINDOW_S = 120.0  # seconds of audio a transcriber sees at once (see transcribe_wav)
OVERLAP_S = 8.0  # seconds two neighbouring windows share
_SAME_NOTE_S = 0.1  # two notes of one pitch whose onsets are this close are one note


def window_starts(total: int, window: int, overlap: int) -> list[int]:
    """First samples of the windows that cover ``total`` samples: ``window`` long, ``overlap`` shared."""
    if window <= overlap or overlap < 0:
        raise ValueError(f"a window ({window}) must be longer than its overlap ({overlap}), which is >= 0")
    starts = [0]
    while starts[-1] + window < total:
        starts.append(starts[-1] + window - overlap)
    return starts


def stitch(windows: list[tuple[float, float, list[Note]]]) -> list[Note]:
    """Join the notes of overlapping windows ``(start s, end s, notes in file time)`` into one list.

    Each overlap is cut at its middle: a window gives the notes whose onsets
    fall between the cut before it and the cut after it, so every onset is
    taken from the window that heard the most around it.  A note that one
    window heard just before a cut and the next just after it (same pitch,
    onsets within 0.1 s) is kept once.  A note still sounding when its
    window ends gets the offset the next window heard for it, when that
    window heard its onset too (it began in the overlap); one that began
    earlier and outlasts its window keeps the window's end as its offset,
    so windows should be much longer than the notes (120 s by default).
    """
    out: list[Note] = []
    near_cut: list[Note] = []  # the previous window's notes with onsets close to the cut after it
    for k, (start, end, notes) in enumerate(windows):
        lo = -np.inf if k == 0 else (start + windows[k - 1][1]) / 2
        hi = np.inf if k + 1 == len(windows) else (windows[k + 1][0] + end) / 2
        nxt = windows[k + 1][2] if k + 1 < len(windows) else []
        kept = []
        for n in notes:
            if not (lo - _SAME_NOTE_S <= n.onset < hi):
                continue
            if n.onset < lo + _SAME_NOTE_S and any(
                o.pitch == n.pitch and abs(o.onset - n.onset) <= _SAME_NOTE_S for o in near_cut
            ):
                continue  # the previous window already gave this note
            if n.offset >= end - _SAME_NOTE_S:  # cut by this window's end: the next one heard more of it
                later = [o.offset for o in nxt if o.pitch == n.pitch and abs(o.onset - n.onset) <= _SAME_NOTE_S]
                if later:
                    n = Note(n.onset, max(n.offset, *later), n.pitch, n.velocity)
            kept.append(n)
        out += kept
        near_cut = [n for n in kept if n.onset >= hi - 2 * _SAME_NOTE_S]
    return sorted(out, key=lambda n: (n.onset, n.pitch))


def transcribe_wav(
    transcriber: Transcriber, path: str | Path, window_s: float = WINDOW_S, overlap_s: float = OVERLAP_S
) -> list[Note]:
    """Transcribe a WAV file ``window_s`` seconds at a time, reading only that much audio at once.

    Memory does not grow with the recording: one window of samples
    (``window_s`` x rate x 4 bytes: 21 MB for 120 s at 44.1 kHz) plus what
    the model needs for a window.  Windows overlap by ``overlap_s`` and are
    joined by :func:`stitch`.  Each window starts like a file does (the model
    sees no audio before it), which is why they overlap; on the 10-minute
    piano sample the windowed notes match the whole-file notes (see
    docs/scale.md, "Bounded memory").  ``window_s=0`` transcribes the whole file
    at once.
    """
    import soundfile

    with soundfile.SoundFile(str(path)) as f:
        if f.samplerate != transcriber.sample_rate:
            raise ValueError(f"{path} is at {f.samplerate} Hz; {transcriber.name} takes {transcriber.sample_rate} Hz")
        sr, total = f.samplerate, f.frames
        window = total if window_s <= 0 else int(round(window_s * sr))
        overlap = 0 if window_s <= 0 else int(round(overlap_s * sr))
        windows = []
        for start in window_starts(total, window, overlap):
            f.seek(start)
            block = f.read(window, dtype="float32", always_2d=True)
            audio = block[:, 0] if block.shape[1] == 1 else block.mean(axis=1)
            del block
            t0 = start / sr
            notes = [Note(n.onset + t0, n.offset + t0, n.pitch, n.velocity) for n in transcriber.transcribe(audio)]
            windows.append((t0, (start + len(audio)) / sr, notes))
            log.debug("transcribed %.1f-%.1f s of %s: %d notes", windows[-1][0], windows[-1][1], path, len(notes))
    return stitch(windows)


def transcribe_file(path: str | Path, transcriber: Transcriber, window_s: float = WINDOW_S) -> list[Note]:
    """Transcribe an audio or video file (decoded with ffmpeg at the transcriber's rate), window by window."""
    import tempfile

    from tasks.media.decode import extract_audio

    with tempfile.TemporaryDirectory() as tmp:
        wav = extract_audio(path, Path(tmp) / "audio.wav", transcriber.sample_rate)
        return transcribe_wav(transcriber, wav, window_s)


# ---------------------------------------------------------------- onsets-frames


def _same_fingerprint(checkpoint: str, fingerprint: str | None) -> None:
    # The build CLI passes the checkpoint's content fingerprint, so the label task's cache key
    # changes when the file at that path does; a file changed since then is refused.
    if fingerprint is not None:
        from tasks.store.cache import file_fingerprint

        if file_fingerprint(checkpoint) != fingerprint:
            raise ValueError(f"checkpoint {checkpoint} changed since its fingerprint {fingerprint} was taken")


@register("onsets-frames")
class OnsetsFramesTranscriber:
    """Onsets and Frames (Hawthorne et al. 2018) from a checkpoint that ``sightsound train onsets-frames``
    wrote: the trainer's ``RUN/checkpoints/best.ckpt`` (or ``last.ckpt``), or a ``best.pt``/``last.pt`` of
    the hand-written trainer it replaced (:func:`models.onsets_frames.read_checkpoint` reads both;
    loaded with ``weights_only=True``, refused when its tensors do not match its config).  16 kHz
    audio; the mel front end runs on ``device`` with the model; Magenta's decoding (onset threshold
    0.5, frame threshold 0.5)."""

    name = "onsets-frames"
    sample_rate = 16000  # models.onsets_frames.SAMPLE_RATE (not imported here: that would load torch)

    @staticmethod
    def check_options(checkpoint: str | None = None, fingerprint: str | None = None, **_) -> None:
        """Refuse a missing, damaged or mismatched checkpoint (ValueError, one line) without building the model."""
        if not checkpoint:
            raise ValueError("the onsets-frames labeler needs checkpoint=PATH (--checkpoint on the command line)")
        from models import onsets_frames as of

        of.verify_checkpoint(checkpoint)  # CheckpointError is a ValueError
        _same_fingerprint(checkpoint, fingerprint)

    def __init__(self, checkpoint: str | None = None, device: str = "auto", onset_threshold: float = 0.5,
                 frame_threshold: float = 0.5, chunk_frames: int = 4096, fingerprint: str | None = None):
        if not checkpoint:
            raise ValueError("the onsets-frames labeler needs checkpoint=PATH (--checkpoint on the command line)")
        _same_fingerprint(checkpoint, fingerprint)
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
