"""GRPO course assignments: student trees from the real scripts, graders, mutants (assignments/README.md)."""
