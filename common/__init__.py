"""Shared infrastructure: model backends, sampling/scoring, I/O. No algorithm logic lives here."""
