"""The sync network's offset curve (thesis ch. 7, fig. 7.3) and the audio-visual offset of a video.

For every 5-frame window of a video (middle frame ``i``, time ``t_i``) the
visual feature ``v_i`` is compared with the audio features of 0.2 s
segments centred on ``t_i + k / fps`` for every shift ``k`` of ``-K .. K``
frames (``K = max_shift * fps``, 2 s in the thesis): ``d_i(k) = ||v_i -
a(t_i + k / fps)||``.  The audio features are computed once per video on its
frame grid, extended by ``K`` frames on either side (segments beyond the
track's ends are zero-padded).

* The **offset curve** of a set of videos is the mean of ``d_i(k)`` over all
  their windows (fig. 7.3: "the averaged L2 distance over all clips in the
  test set").  On aligned videos its minimum should be at ``k = 0``.
* The **offset of one video** is the shift of the minimum of its own mean
  curve, ``k*``: the audio that matches the picture of time ``t`` lies at
  ``t + k* / fps`` in the track, so a positive offset means the sound comes
  after the picture (the audio is delayed) and labels made from the audio
  must move ``k* / fps`` earlier.  Its **confidence** is the median of the
  curve minus its minimum (SyncNet's), in the features' distance units.

Sign convention check: a track whose audio was delayed by 120 ms (the
sample generator's ``--av-offset-ms 120``) gives ``+0.12 s`` (3 frames at
25 fps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class VideoCurve:
    """One video's windows and their distance curves."""

    video_id: str
    fps: float
    shifts: np.ndarray  # int [2K + 1], -K .. K frames
    distances: np.ndarray  # float [windows, 2K + 1]

    @property
    def curve(self) -> np.ndarray:
        return self.distances.mean(axis=0)

    def estimate(self) -> dict:
        """The video's offset (s and frames) and confidence; see the module docstring for the sign."""
        return offset_of(self.curve, self.shifts, self.fps)


def offset_of(curve: np.ndarray, shifts: np.ndarray, fps: float) -> dict:
    """``offset_frames`` (the shift of the curve's minimum), ``offset_s`` and ``confidence`` (median - min)."""
    curve = np.asarray(curve, np.float64)
    k = int(np.argmin(curve))
    return {"offset_frames": int(shifts[k]), "offset_s": float(shifts[k] / fps),
            "confidence": float(np.median(curve) - curve[k]), "min_distance": float(curve[k])}


def frame_rate(frame_index: np.ndarray, time: np.ndarray) -> float:
    """Frames per second from the windows' frame indices and times (a least-squares slope)."""
    fi = np.asarray(frame_index, np.float64)
    t = np.asarray(time, np.float64)
    if len(fi) < 2 or np.ptp(fi) == 0:
        raise ValueError("a frame rate needs at least two distinct frames")
    slope = np.polyfit(fi, t, 1)[0]
    return float(1.0 / slope)


def distance_curves(v: torch.Tensor, a: torch.Tensor, frame_offset: np.ndarray, max_shift_frames: int) -> np.ndarray:
    """``d[i, k] = ||v[i] - a[frame_offset[i] + K + k]||`` for ``k = -K .. K``.

    ``a`` holds the audio features of the grid of frames ``first - K ..
    last + K``; ``frame_offset[i]`` is window i's frame index minus
    ``first``.
    """
    K = int(max_shift_frames)
    d = torch.cdist(v.double()[None], a.double()[None])[0].numpy()  # [windows, grid]
    index = np.asarray(frame_offset, np.int64)[:, None] + K + np.arange(-K, K + 1)[None, :]
    return np.take_along_axis(d, index, axis=1)


def audio_features(net, track: np.ndarray, sample_rate: int, times: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """The audio stream's features of the segments of ``track`` centred on ``times`` (s), zero beyond its ends."""
    from tasks.training.windows import cut_segment

    n = net.config.audio_samples
    track = np.asarray(track, np.float32)
    centres = np.rint(np.asarray(times) * sample_rate).astype(np.int64)
    out = []
    with torch.no_grad():
        for b in range(0, len(centres), batch_size):
            chunk = np.stack([cut_segment(track, int(c), n) for c in centres[b:b + batch_size]])
            out.append(net.audio(torch.from_numpy(chunk)))
    return torch.cat(out) if out else torch.zeros(0, net.config.embedding)


def video_curve(net, windows, track: np.ndarray, sample_rate: int, video_id: str, *, max_shift: float = 2.0,
                batch_size: int = 32, fps: float | None = None) -> VideoCurve:
    """The distance curves of one video: ``windows`` (dicts with ``frames``, ``frame_index``, ``time``, in
    frame order, as :func:`tasks.training.windows.video_windows` gives) against ``track`` (mono, ``sample_rate``)."""
    feats, index, times = [], [], []
    batch: list[dict] = []

    def flush():
        if batch:
            with torch.no_grad():
                feats.append(net.visual(torch.stack([w["frames"] for w in batch])))
            batch.clear()

    for w in windows:
        batch.append(w)
        index.append(int(w["frame_index"]))
        times.append(float(w["time"]))
        if len(batch) == batch_size:
            flush()
    flush()
    if not feats:
        raise ValueError(f"video {video_id}: no 5-frame window to compare with its audio")
    v = torch.cat(feats)
    index_arr, times_arr = np.asarray(index), np.asarray(times)
    fps = fps or frame_rate(index_arr, times_arr)
    K = int(round(max_shift * fps))
    first = int(index_arr.min())
    grid = np.arange(first - K, int(index_arr.max()) + K + 1)
    t0 = float(times_arr[np.argmin(index_arr)])
    a = audio_features(net, track, sample_rate, t0 + (grid - first) / fps)
    return VideoCurve(video_id, fps, np.arange(-K, K + 1), distance_curves(v, a, index_arr - first, K))


def pooled_curve(curves: list[VideoCurve]) -> np.ndarray:
    """Fig. 7.3's curve: the mean distance at each shift over every window of every video."""
    return np.concatenate([c.distances for c in curves]).mean(axis=0)


def curve_figure(curves: list[VideoCurve], out_png, title: str = "offset curve") -> str:
    """Fig. 7.3: the pooled mean distance against the shift (s), each video's curve faint behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c in curves:
        ax.plot(c.shifts / c.fps, c.curve, color="0.8", lw=0.8)
    pooled = pooled_curve(curves)
    x = curves[0].shifts / curves[0].fps
    ax.plot(x, pooled, color="C0", lw=2, label=f"mean over {sum(len(c.distances) for c in curves)} windows")
    k = int(np.argmin(pooled))
    ax.axvline(x[k], color="C3", ls="--", lw=1, label=f"minimum at {x[k]:+.2f} s")
    ax.set_xlabel("audio shift relative to the picture (s)")
    ax.set_ylabel("mean L2 distance")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(out_png), dpi=120)
    plt.close(fig)
    return str(out_png)


def build_curve(net, data_root: str, split: str, video_id: str, *, max_shift: float = 2.0,
                audio_offset: float = 0.0) -> VideoCurve:
    """:func:`video_curve` of one video of a pianoyt build (its shards and ``audio/<video_id>.wav``);
    ``audio_offset`` (s) delays the track first (a known offset, to check the estimate)."""
    from tasks.datasets.pianoyt import layout
    from tasks.training.windows import AudioTracks, SyncLabels, video_windows

    lay = layout(data_root)
    c = net.config
    track = AudioTracks(lay.root, 1, c.sample_rate).track(f"audio/{video_id}.wav")
    if audio_offset:
        from tasks.media.decode import delay_audio

        track = delay_audio(track, audio_offset, c.sample_rate)
    windows = video_windows(lay.shards, split, video_id, size=(c.height, c.crop_width),
                            labels=SyncLabels(lay.root, c.sample_rate, context_samples=0))
    return video_curve(net, windows, track, c.sample_rate, video_id, max_shift=max_shift)


def evaluate_checkpoint(checkpoint, data_root: str, split: str = "test", *, max_shift: float = 2.0,
                        truth_offsets: dict | None = None, log=print) -> dict:
    """Every video of ``split``: its curve and offset estimate; the pooled curve (fig. 7.3) and its minimum.

    ``truth_offsets`` maps video ids to their true audio delay (s), for the error column.
    """
    from tasks.training.av_sync import load_net
    from tasks.training.piano_onsets import shard_videos

    net, hp = load_net(checkpoint)
    curves, rows = [], []
    for video in shard_videos(data_root, split):
        try:
            curve = build_curve(net, data_root, split, video, max_shift=max_shift)
        except ValueError as exc:  # a video without a window: recorded, the others go on
            rows.append({"video_id": video, "windows": 0, "error": str(exc)})
            continue
        curves.append(curve)
        est = curve.estimate()
        row = {"video_id": video, "windows": len(curve.distances), **est}
        if truth_offsets and video in truth_offsets:
            truth = float(truth_offsets[video])
            row["true_offset_s"] = truth
            row["error_frames"] = est["offset_frames"] - int(round(truth * curve.fps))
        rows.append(row)
        log(f"av-sync {video}: offset {est['offset_s']:+.3f} s ({est['offset_frames']:+d} frames), "
            f"confidence {est['confidence']:.3f}")
    if not curves:
        raise ValueError(f"{data_root}: no video of the {split} split has a 5-frame window to score")
    pooled = pooled_curve(curves)
    return {"checkpoint": str(checkpoint), "config": hp.get("config"), "videos": rows, "curves": curves,
            "pooled_curve": pooled, "pooled": offset_of(pooled, curves[0].shifts, curves[0].fps)}


def video_offset(video, crop, checkpoint, *, crop_reference=(1280, 720), max_shift: float = 2.0,
                 figure=None, wav=None) -> dict:
    """The audio-visual offset of any piano video: its frames through the build's own path (decode by
    timestamp, crop, grayscale; :func:`tasks.datasets.pianoyt.build_frames` into a temporary shard), its audio
    decoded by ffmpeg at the network's rate (or read from ``wav``, the build's track, resampled), then
    :func:`video_curve`.  ValueError (one line) for a video with fewer than 5 frames or no audio track."""
    import tempfile
    from pathlib import Path

    from tasks.datasets.pianoyt import build_frames
    from tasks.labels.transcribe import write_midi
    from tasks.media import decode as media
    from tasks.training.av_sync import load_net
    from tasks.training.windows import SyncLabels, video_windows

    net, hp = load_net(checkpoint)
    c = net.config
    with tempfile.TemporaryDirectory() as tmp:
        if wav is None:
            try:
                wav = media.extract_audio(str(video), Path(tmp) / "audio.wav", c.sample_rate)
            except Exception as exc:  # ffmpeg's error: no audio stream, not a media file
                raise ValueError(f"{video}: its audio could not be decoded "
                                 f"({str(exc).splitlines()[0][:120]})") from None
        track, sr = media.read_wav(wav)
        if sr != c.sample_rate:
            import soxr

            track = soxr.resample(track, sr, c.sample_rate, quality="HQ").astype(np.float32)
        shards = Path(tmp) / "shards"
        built = build_frames(str(video), write_midi([], Path(tmp) / "none.mid"), "video", "test", tuple(crop),
                             str(shards), crop_reference=tuple(crop_reference))
        if built["frames"] < 5:
            raise ValueError(f"{video}: {built['frames']} frame(s) decoded; the sync network needs 5 consecutive")
        windows = video_windows(str(shards), "test", "video", size=(c.height, c.crop_width),
                                labels=SyncLabels(tmp, c.sample_rate, context_samples=0))
        curve = video_curve(net, windows, track, c.sample_rate, str(video), max_shift=max_shift)
    out = {"video": str(video), "frames": int(built["frames"]), "fps": round(curve.fps, 3), **curve.estimate()}
    if figure:
        out["figure"] = curve_figure([curve], figure, f"{Path(str(video)).name}: mean distance by audio shift")
    return out
