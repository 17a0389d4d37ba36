"""Fault injection against a clustered stack, and the history checker that judges it (issue 15)."""
