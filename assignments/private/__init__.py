"""The kit's private parts: mutants, self-check, outcome calibration (not copied into a student tree)."""
