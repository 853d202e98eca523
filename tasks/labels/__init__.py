"""Labelers: piano transcription, violin pitch, dlib faces, and the alignment of labels to frames."""
