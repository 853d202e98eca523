"""What every dataset build shares: the status table, frame losses, the summary and the card sections.

"""

from __future__ import annotations

import math
import pyarrow as pa

STATUS_FIELDS = [
    ("video_id", pa.string()),
    ("split", pa.string()),
    ("state", pa.string()),  # done | failed
    ("stage", pa.string()),  # the task that failed; empty when done
    ("error", pa.string()),  # its message; empty when done
    ("frames", pa.int64()),
    ("seconds", pa.float64()),
    ("expected_frames", pa.int64()),  # frames the probe promised
    ("lost_frames", pa.int64()),  # of those, frames with no stored row (not decoded, or after the audio's end)
    ("lost", pa.string()),  # what was lost, in words; empty when nothing was
]

# A video that loses more than this share of its frames (damaged, cut short,
# audio shorter than the picture) fails at its frames stage; below it, the
# frames that decoded at their own timestamps are kept and the loss recorded.
MAX_LOST_FRACTION = 0.25


def status_table(records: list[dict], extra: list[tuple[str, pa.DataType]] = ()) -> pa.Table:
    """One row per manifest row; ``extra`` adds dataset-specific count columns."""
    fields = STATUS_FIELDS + list(extra)
    defaults = {pa.string(): "", pa.int64(): 0, pa.float64(): 0.0}
    cols = {name: [r.get(name) or defaults[typ] for r in records] for name, typ in fields}
    return pa.table(cols, schema=pa.schema(fields))


def audio_seconds(wav: str) -> float:
    """Length of a WAV file in seconds (the span of video that has labels)."""
    import soundfile

    info = soundfile.info(str(wav))
    return info.frames / info.samplerate


def labelled_frames(n_frames: int, fps: float, audio_s: float | None) -> int:
    """How many of a video's first frames lie before the end of its audio (all, when ``audio_s`` is None)."""
    if audio_s is None:
        return n_frames
    return max(0, min(n_frames, int(math.ceil(audio_s * fps - 1e-6))))


def loss_fields(loss, fps: float, video: str, max_lost: float = MAX_LOST_FRACTION) -> dict:
    """Status fields of a video's frame loss (:class:`tasks.media.decode.FrameLoss`); raise when it lost too much."""
    from tasks.media.decode import MediaError

    expected = loss.expected + loss.unlabelled
    lost = loss.lost_frames
    text = loss.describe(fps)
    if expected and lost > max_lost * expected:
        raise MediaError(f"{video}: {lost} of {expected} frames lost, over the {max_lost:.0%} a build keeps: {text}")
    return {"expected_frames": expected, "lost_frames": lost, "lost": text}


def summary_rows(records: list[dict], extra: tuple[str, ...] = ()) -> list[dict]:
    """Per-split counts of done videos (frames, hours and any ``extra`` count), plus ``all``."""
    rows = []
    for split in sorted({r["split"] for r in records}) + ["all"]:
        sel = [r for r in records if split == "all" or r["split"] == split]
        done = [r for r in sel if r["state"] == "done"]
        row = {
            "split": split,
            "videos": len(sel),
            "done": len(done),
            "failed": len(sel) - len(done),
            "frames": sum(int(r.get("frames") or 0) for r in done),
            "hours": round(sum(float(r.get("seconds") or 0) for r in done) / 3600, 4),
        }
        for key in extra:
            row[key] = sum(int(r.get(key) or 0) for r in done)
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """A markdown table of a list of dicts (same keys)."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "| " + " | ".join("---" for _ in keys) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(str(r[k]).replace("|", "/") for k in keys) + " |")
    return "\n".join(lines)


def losses_section(records: list[dict]) -> list[str]:
    """The card's list of built videos that lost frames (damaged or short media), with what was lost."""
    hit = [r for r in records if r["state"] == "done" and r.get("lost")]
    lines = [f"## Videos built with frames lost ({len(hit)})", ""]
    if hit:
        lines.append(format_table([
            {**({"utterance": r["key"]} if r.get("key") else {"video_id": r["video_id"]}),
             "lost frames": f"{r.get('lost_frames', 0)} of {r.get('expected_frames', 0)}", "what": r["lost"]}
            for r in hit
        ]))
    else:
        lines.append("none")
    return lines + [""]


def failures_section(records: list[dict]) -> list[str]:
    failures = [r for r in records if r["state"] != "done"]
    lines = [f"## Failures ({len(failures)})", ""]
    if failures:
        lines.append(format_table([
            {**({"utterance": r["key"]} if r.get("key") else {"video_id": r["video_id"]}),
             "stage": r["stage"], "error": r["error"]}
            for r in failures
        ]))
    else:
        lines.append("none")
    return lines
