"""Flow ``evaluate-transcription``: publish a transcription scores table as a Prefect artifact.

The scores are computed by :func:`tasks.evaluation.scores.score_transcriptions`
before the flow starts (``sightsound evaluate transcription``), so a refused
input never starts a flow run.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact


@flow(name="evaluate-transcription")
def evaluate_transcription(key: str, rows: list[dict], description: str = "") -> None:
    """Publish ``rows`` as the table artifact ``key``."""
    create_table_artifact(key=key, table=rows, description=description)
