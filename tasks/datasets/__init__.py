"""Dataset recipes, one module per corpus (PianoYT, VnYT, VoxCeleb, URMP, MAESTRO), their manifests and records.

The recipes never import each other (an import contract checks it)."""
