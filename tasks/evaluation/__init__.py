"""Scoring: transcription, pitch and face-crop metrics; the violin label audit."""
