"""The CLI's argument parser: a mistake is one ``error:`` line with the closest valid key, not a usage dump.

``python train.py fit --data.batch_sise 4`` prints ``error: unrecognized argument --data.batch_sise; did you mean
--data.batch_size?``; a misspelled key in a config file is named with the file. Exit status 2; the usage only
with ``--help``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import yaml
from lightning.pytorch.cli import LightningArgumentParser

_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<args>.*)", re.S)
_UNKNOWN_KEYS = (
    re.compile(r"Subcommand '[^']+' does not accept option '(?P<key>[^']+)'"),
    re.compile(r"Group '(?P<group>[^']+)' does not accept option '(?P<key>[^']+)'"),
    re.compile(r"Option '(?P<key>[^']+)' is not accepted"),
)
_PARENT = re.compile(r"Parser key \"(?P<parent>[^\"]+)\":")
_INIT_ARG = re.compile(r"Problem with given class_path '(?P<cls>[^']+)':\s*Option '(?P<key>[^']+)' is not accepted")
#: Longest message kept of an error that is neither an unknown flag nor an unknown key.
MAX_CHARS = 300


def parser_keys(parser: Any) -> list[str]:
    """The dotted keys the parser accepts (``data.batch_size``), from its ``--`` options."""
    return [
        opt[2:]
        for action in parser._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt not in ("--help", "--config", "--print_config")
    ]


def init_arg_keys(parent: str, class_path: str) -> list[str]:
    """``<parent>.init_args.<arg>`` for each init argument of ``class_path`` (none if it does not import)."""
    module, _, name = class_path.rpartition(".")
    try:
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return []
    return [f"{parent}.init_args.{p.name}" for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def config_files(args: Iterable[str]) -> list[Path]:
    """The existing files given with ``--config``/``-c`` in ``args``."""
    args, files = list(args), []
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
        elif arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
    return [Path(f) for f in files if Path(f).is_file()]


def _holds_key(path: Path, key: str) -> bool:
    try:
        node: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _suggestion(key: str, candidates: list[str], dashes: str, help_hint: str) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"did you mean {dashes}{close[0]}?" if close else help_hint


def one_line_error(message: str, parser: Any, args: list[str]) -> str:
    """The parser's ``message`` as one line; an unknown flag or key with the closest valid one."""
    prog = parser.prog.replace(" [options]", "")
    help_hint = f"run {prog} --help for the valid options"
    unrecognized = _UNRECOGNIZED.match(message)
    if unrecognized:
        flags = [a.split("=", 1)[0] for a in unrecognized["args"].split() if a.startswith("-")]
        if not flags:
            return f"unrecognized arguments: {unrecognized['args'].strip()}; {help_hint}"
        also = f" (also unrecognized: {' '.join(flags[1:])})" if len(flags) > 1 else ""
        return (
            f"unrecognized argument {flags[0]}{also}; "
            f"{_suggestion(flags[0].lstrip('-'), parser_keys(parser), '--', help_hint)}"
        )
    parent, init_arg = _PARENT.match(message), _INIT_ARG.search(message)
    if parent and init_arg:  # an init argument of a class given by class_path (model.encoder, trainer.callbacks, ...)
        key = f"{parent['parent']}.init_args.{init_arg['key']}"
        candidates = init_arg_keys(parent["parent"], init_arg["cls"])
    else:
        unknown = next((m for m in (p.search(message) for p in _UNKNOWN_KEYS) if m), None)
        if unknown is None:
            text = " ".join(message.split())
            return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + " ..."
        key = f"{unknown['group']}.{unknown['key']}" if "group" in unknown.groupdict() else unknown["key"]
        candidates = parser_keys(parser)
    if any(a == f"--{key}" or a.startswith(f"--{key}=") for a in args):
        return f"unrecognized argument --{key}; {_suggestion(key, candidates, '--', help_hint)}"
    where = next((f" in config file {f}" for f in config_files(args) if _holds_key(f, key)), "")
    return f"unknown key {key}{where}; {_suggestion(key, candidates, '', help_hint)}"


class RetrieverArgumentParser(LightningArgumentParser):
    """``LightningArgumentParser`` whose errors are one ``error:`` line on stderr and exit status 2, no usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # raises: a parser used inside another parser, or the debug mode
        self._logger.error(message)
        parser = getattr(ex, "subcommand_parser", None) or self
        args = getattr(self, "args", None) or sys.argv[1:]
        sys.stderr.write(f"error: {one_line_error(message, parser, list(args))}\n")
        self.exit(2)
