"""The one exception type for bad user input (files, ids, configs), and how commands report it."""

from __future__ import annotations

import sys
from collections.abc import Callable


class InputError(ValueError):
    """Bad input: the message names what is wrong and what to change, on one line."""


def first_ids(ids: list, shown: int = 5) -> str:
    """The first ``shown`` ids, quoted and comma-separated, for messages about many bad ids."""
    return ", ".join(repr(i) for i in ids[:shown])


def exit_status(command: Callable[[], int | None]) -> int:
    """Run ``command``; an InputError becomes ``error: <message>`` on stderr and exit status 2."""
    try:
        return command() or 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
