"""Training loops and data loaders (Onsets and Frames today)."""
