"""Flow ``audit-violin``: how good are the violin pitch labels, step by step, and what would the alternatives give?"""

from __future__ import annotations

from functools import partial

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.store.atomic import write_text_atomic
from tasks.evaluation.audit import METHODS, audit, excerpt_figure, track_crepe
from tasks.datasets.records import format_table


@flow(name="audit-violin")
def audit_violin(pairs: list[tuple[str, str]], crepe_model: str = "full", out: str | None = None,
                 recordings: dict[str, list[tuple[str, str]]] | None = None, figure: str | None = None) -> str:
    """Score every labeler on the sample set's ``(media file, true MIDI)`` pairs and on each set of ``recordings``.

    Returns the markdown: one table per set; ``figure`` draws one excerpt of
    the last set of recordings (or of the sample set without any).
    """
    methods = dict(METHODS)
    if crepe_model != "full":
        del methods["torchcrepe (full)"]
        methods[f"torchcrepe ({crepe_model})"] = partial(track_crepe, model=crepe_model)
    sets = {"sample set": pairs, **(recordings or {})}
    parts = ["# Violin pitch label audit", ""]
    for name, set_pairs in sets.items():
        rows = audit(set_pairs, methods)
        table = format_table(rows)
        key = "audit-violin" if name == "sample set" else "audit-violin-" + "".join(
            c if c.isalnum() else "-" for c in name.lower()).strip("-")
        create_table_artifact(key=key, table=rows,
                              description=f"violin pitch labelers on the {name}: {len(set_pairs)} files vs true MIDI")
        get_run_logger().info("audit-violin, %s\n%s", name, table)
        parts += [f"## {name} ({len(set_pairs)} files)", "", table, ""]
    if figure:
        excerpt_figure(list(sets.values())[-1][0], figure)
        parts += [f"Figure: `{figure}` (truth, yinfft-raw and the default labels on one excerpt).", ""]
    text = "\n".join(parts)
    if out:
        write_text_atomic(out, text)
    return text
