"""Evaluation of long-context answering: tasks (prompt generators and metrics), the passkey/fact grid
(needle.py), the RULER grid, tables."""
