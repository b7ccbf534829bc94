"""Shared fixtures: a generated tiny mini-WebQA and a tiny CLIP encoder (built once per session).

Named datasets (``mini-webqa:tiny``) are generated into a cache directory of the session
(``UNIVL_RETRIEVAL_CACHE``, set for the whole session and inherited by CLI subprocesses), never into the home directory.

The session also checks that the tests leave the git checkout as they found it: every test must
write under ``tmp_path``. ``git status`` is recorded when the session starts and compared when it
ends; a path that appeared or changed in between fails the session (exit status 1) and is listed.
Changes that predate the session are ignored unless a test touches them again. Set
``UNIVL_SKIP_CHECKOUT_CHECK=1`` to skip the check (e.g. while editing files during a test run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from datamodules.mini_webqa import generate_mini_webqa
from datamodules.named_datasets import CACHE_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Ignored paths that only a run writes (see .gitignore); other ignored files (bytecode, egg-info) are not checked.
RUN_OUTPUT_DIRS = ("runs/", "data/", "lightning_logs/", "wandb/", "eval/")
_checkout_before = pytest.StashKey[dict[str, tuple]]()


@pytest.fixture(scope="session", autouse=True)
def retrieval_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's cache of named datasets, in ``UNIVL_RETRIEVAL_CACHE`` for the whole session."""
    cache = tmp_path_factory.mktemp("univl_retrieval_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache))
        yield cache


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mini-WebQA directory in the release layout (read-only: copy it before corrupting)."""
    return generate_mini_webqa(tmp_path_factory.mktemp("mini") / "webqa", size="tiny", seed=0)


@pytest.fixture
def data_copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny directory that a test may damage."""
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "webqa"))


@pytest.fixture(scope="session")
def tiny_encoder():
    """A randomly initialised tiny CLIP, seeded so that it does not depend on which tests ran before."""
    from lightning_modules.encoders import CLIPEncoder

    torch.manual_seed(0)
    return CLIPEncoder("tiny-clip-64px", pretrained=None)


# ------------------------------------------------------------------ checkout check
def _git(*args: str) -> bytes | None:
    """Output of ``git args`` run in the repository root, or None if git fails or is missing."""
    try:
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _is_checked(path: str, status: str) -> bool:
    """Whether a ``git status`` entry counts: any non-ignored path, and ignored run outputs."""
    if status != "!!":
        return True
    return path.startswith(RUN_OUTPUT_DIRS) or path.endswith(".ckpt")


def _fingerprint(top: Path, path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of ``top / path``, or None if it does not exist."""
    try:
        stat = (top / path).stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def checkout_state() -> dict[str, tuple] | None:
    """Path -> (git status code, fingerprint) of every changed, untracked or ignored-output file, and of every
    directory under the run output directories (``runs/``, ...).

    None when the tests do not run inside a git work tree (e.g. an unpacked sdist) or git is missing.
    """
    top = _git("rev-parse", "--show-toplevel")  # fails outside a work tree; status paths are relative to it
    if not top:
        return None
    top_dir = Path(top.decode().strip())
    out = _git("status", "--porcelain", "--untracked-files=all", "--ignored", "-z")
    if out is None:
        return None
    entries = out.decode("utf-8", "surrogateescape").split("\0")
    state: dict[str, tuple] = {}
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        if status[0] in "RC":  # a rename or copy: the next entry is the original path
            i += 1
        if _is_checked(path, status):
            state[path] = (status, _fingerprint(top_dir, path))
    for output_dir in RUN_OUTPUT_DIRS:  # git lists no directories: an empty log directory shows only here
        if (top_dir / output_dir).is_dir():
            state.setdefault(output_dir, ("!!", None))
        for parent, dirs, _ in os.walk(top_dir / output_dir):
            for name in dirs:
                state.setdefault(f"{Path(parent, name).relative_to(top_dir).as_posix()}/", ("!!", None))
    return state


def checkout_changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """``git status``-like lines of the paths whose status or file changed between the two states."""
    changed = []
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) == after.get(path):
            continue
        status = after[path][0] if path in after else "reverted"
        changed.append(f"{status} {path}")
    return changed


def pytest_sessionstart(session: pytest.Session) -> None:
    """Record the checkout's state (not in xdist workers, nor when the check is switched off)."""
    if hasattr(session.config, "workerinput") or os.environ.get("UNIVL_SKIP_CHECKOUT_CHECK"):
        return
    state = checkout_state()
    if state is not None:
        session.config.stash[_checkout_before] = state


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if the tests wrote into the checkout, listing the paths."""
    before = session.config.stash.get(_checkout_before, None)
    after = checkout_state() if before is not None else None
    if after is None:
        return
    changed = checkout_changes(before, after)
    if not changed:
        return
    lines = [
        f"the tests changed the git checkout {REPO_ROOT} (tests must write under tmp_path only):",
        *(f"    {line}" for line in changed),
    ]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.line("")
        reporter.write_sep("=", "checkout changed", red=True)
        for line in lines:
            reporter.write_line(line, red=True)
    else:
        print("\n".join(lines))
    if session.exitstatus == 0:
        session.exitstatus = 1
