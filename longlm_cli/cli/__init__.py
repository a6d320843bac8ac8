"""The `longlm` command line. Each command parses its options, calls one library function and prints.

Importing this package is cheap: commands that need torch import their engine modules inside the command.
app.py holds the group and the error handling, options.py the options several commands share; each other
module holds one command (or command group).
"""

from . import cache, evaluate, models, passkey, plan, run, serve, tune  # noqa: F401  (each registers its commands on the group)
from .app import cli, main

__all__ = ["cli", "main"]
