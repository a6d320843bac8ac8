"""Evaluation of long-context answering: tasks (prompt generators and metrics), the resumable runner, tables."""
