"""The library's one output channel: warnings, notes and status lines go to the ``longlm_cli`` logger, never to a
stream. The CLI shows them on stderr (cli/app.py): a warning as `Warning: ...`, a note as `Note: ...`, a status
line as it is. A program using the library sees them through logging; without a handler of its own, Python's
last-resort handler prints the warnings to stderr.
"""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("longlm_cli")
BARE = "longlm_bare"  # a record attribute: shown as it is, without `Note: `


def warn(message: str) -> None:
    """Something went wrong but the result is still correct (one line)."""
    LOGGER.warning(message)


def note(message: str) -> None:
    """Something the user should know about what longlm chose or did."""
    LOGGER.info(message)


def status(message: str) -> None:
    """A line about work in progress (a conversion starting, a lock being waited for)."""
    LOGGER.info(message, extra={BARE: True})
