"""Grading: comparing observations with expectations, verdicts, scores and feedback (outside the sandbox)."""
