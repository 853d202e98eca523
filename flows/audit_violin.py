"""Flow ``audit-violin``: how good are the violin pitch labels, and what would the alternatives give?"""

from __future__ import annotations

from functools import partial

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.store.atomic import write_text_atomic
from tasks.evaluation.audit import METHODS, audit, track_crepe
from tasks.datasets.records import format_table


@flow(name="audit-violin")
def audit_violin(pairs: list[tuple[str, str]], crepe_model: str = "full", out: str | None = None) -> str:
    """Score yinfft, pYIN and torchcrepe on ``(media file, true MIDI)`` pairs; return the markdown table."""
    methods = dict(METHODS)
    if crepe_model != "full":
        del methods["torchcrepe (full)"]
        methods[f"torchcrepe ({crepe_model})"] = partial(track_crepe, model=crepe_model)
    rows = audit(pairs, methods)
    table = format_table(rows)
    create_table_artifact(key="audit-violin", table=rows,
                          description=f"violin pitch trackers on {len(pairs)} sample files vs their true MIDI")
    get_run_logger().info("audit-violin\n%s", table)
    if out:
        write_text_atomic(out, "# Violin pitch label audit\n\n" + table + "\n")
    return table
