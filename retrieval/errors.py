"""The one exception type for bad user input (files, ids, configs), and how commands report it.

An InputError raised inside a DataLoader worker reaches the main process re-raised by torch with the worker's whole
traceback as its message; :func:`error_message` recovers the original one line, so the user sees the same
``error: ...`` as for a load-time error. ``UNIVL_DEBUG=1`` prints the full traceback (the worker's included) first.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Environment variable: set (to anything but empty or 0) to print the full traceback before the one-line error.
DEBUG_ENV = "UNIVL_DEBUG"
#: How torch's ExceptionWrapper.reraise starts the message of an exception caught in a DataLoader worker.
_WORKER_ERROR = re.compile(r"\ACaught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class InputError(ValueError):
    """Bad input: the message names what is wrong and what to change, on one line."""


def first_ids(ids: list, shown: int = 5) -> str:
    """The first ``shown`` ids, quoted and comma-separated, for messages about many bad ids."""
    return ", ".join(repr(i) for i in ids[:shown])


def error_message(err: BaseException) -> str:
    """The one-line message of ``err``; for an exception re-raised from a DataLoader worker, the worker's original
    message (the last line of the traceback torch put into the message, without the exception's type)."""
    text = str(err)
    if not _WORKER_ERROR.match(text):
        return text
    cls = type(err)
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    for line in reversed(text.splitlines()):
        for prefix in prefixes:
            if line.startswith(prefix):
                return line[len(prefix) :]
    return text.splitlines()[-1]


def debugging() -> bool:
    """Whether ``UNIVL_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def exit_status(command: Callable[[], int | None]) -> int:
    """Run ``command``; an InputError becomes ``error: <message>`` on stderr and exit status 2 (its traceback is
    logged at debug level, and printed first under ``UNIVL_DEBUG=1``)."""
    try:
        return command() or 0
    except InputError as err:
        if debugging():
            traceback.print_exc()
        else:
            log.debug("traceback of the error below", exc_info=True)
        print(f"error: {error_message(err)}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------ problems found by checks
class DataWarning(UserWarning):
    """A data problem that does not stop a run (e.g. dev positives that differ from the qrels); shown as one
    ``warning: <message>`` line, as ``check-data`` lists it."""


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    if issubclass(category, DataWarning):
        return f"warning: {message}\n"
    return _previous_format_warning(message, category, filename, lineno, line)


_previous_format_warning = warnings.formatwarning
warnings.formatwarning = _format_warning  # as Lightning does for its own warnings: each formatter wraps the previous


@dataclass(frozen=True)
class Problem:
    """One finding of a check: its kind, whether a run would stop (``error``) or go on (``warning``), the one-line
    message the loader gives, and the ids (and, for an image, the byte offset) it is about, in full."""

    kind: str
    message: str
    severity: str = "error"
    ids: tuple[str, ...] = ()
    offset: int | None = None


class Problems:
    """Where the readers' checks report what they find.

    Strict (``collect=False``, what the loaders use): an error raises :class:`InputError` at once, a warning is
    passed to ``warn`` (default: ``warnings.warn`` with :class:`DataWarning`). Collecting (``check-data``): every
    problem is kept in ``found`` and reading goes on past it; :meth:`guard` turns an InputError raised by a step
    that cannot go on (a missing file) into a problem.
    """

    def __init__(self, collect: bool = False, warn: Callable[[str], None] | None = None) -> None:
        self.collect = collect
        self.warn = warn or (lambda message: warnings.warn(message, DataWarning, stacklevel=4))
        self.found: list[Problem] = []

    def error(self, kind: str, message: str, ids: Iterable[object] = (), offset: int | None = None) -> None:
        """A problem that stops a run: raised at once when strict, else kept."""
        if not self.collect:
            raise InputError(message)
        self.found.append(Problem(kind, message, "error", tuple(map(str, ids)), offset))

    def warning(self, kind: str, message: str, ids: Iterable[object] = ()) -> None:
        """A problem a run goes on with: warned when strict, else kept."""
        if not self.collect:
            self.warn(message)
        else:
            self.found.append(Problem(kind, message, "warning", tuple(map(str, ids))))

    @contextmanager
    def guard(self, kind: str) -> Iterator[None]:
        """Collecting: an InputError raised inside becomes a problem of ``kind`` and the block is left; strict:
        nothing changes."""
        if not self.collect:
            yield
            return
        try:
            yield
        except InputError as err:
            self.error(kind, str(err))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.found if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.found if p.severity == "warning"]


def strict(problems: Problems | None) -> Problems:
    """``problems``, or a strict sink (raise on the first error) when None: the loaders' default."""
    return problems if problems is not None else Problems()
