"""Command line: ``python train.py {fit,validate,test,predict} --config configs/...`` (Lightning CLI).

Two more verbs:
    python train.py mine --config C --ckpt_path X [--mine.out FILE]   mine hard negatives once (paper stage 2)
    python train.py demo [--out DIR]                                  the mini-WebQA end-to-end demo

``--ckpt_path auto`` (SLURM requeue, configs/slurm/): the newest of ``<default_root_dir>/hpc_ckpt_*.ckpt`` and the
run's ``last*.ckpt``, none (a fresh start) when there is neither.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.checkpoint_config import report_checkpoint_differences
from lightning_modules.cli_parser import RetrieverArgumentParser
from lightning_modules.retriever import UniversalRetriever
from retrieval.errors import InputError, exit_status


def resolve_auto_ckpt(default_root_dir: str | Path, log_dirs: Iterable[str | Path] = ()) -> str | None:
    """What ``--ckpt_path auto`` means: the newest (by modification time) of ``<default_root_dir>/hpc_ckpt_*.ckpt``
    (a SLURM preemption checkpoint) and the ``last*.ckpt`` files under ``default_root_dir`` and ``log_dirs`` (the
    logger's save_dir); None when there is none, so that a fresh run starts from nothing."""
    root = Path(default_root_dir)
    candidates = set(root.glob("hpc_ckpt_*.ckpt"))
    for folder in {root, *map(Path, log_dirs)}:
        candidates.update(folder.rglob("last*.ckpt") if folder.is_dir() else ())
    stamped = [(path.stat().st_mtime_ns, path.name.startswith("hpc_ckpt_"), str(path)) for path in candidates]
    return max(stamped)[2] if stamped else None  # on equal times the preemption checkpoint


class RetrieverCLI(LightningCLI):
    """The Lightning CLI of this project (configs compose: ``--config a.yaml --config b.yaml``).

    With ``--ckpt_path``, Lightning's CLI parses the checkpoint's saved hyperparameters over the
    configuration, silently dropping what the user typed. Here the configuration wins: the checkpoint's
    values are only compared with it (one line lists the keys that differ), and an encoder architecture
    other than the checkpoint's is refused before anything loads. ``--ckpt_path auto`` is resolved first
    (:func:`resolve_auto_ckpt`).
    """

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if config.get("ckpt_path") == "auto":
            if not config.trainer.get("default_root_dir"):
                raise InputError("--ckpt_path auto needs --trainer.default_root_dir, the run directory it searches")
            config["ckpt_path"] = resolve_auto_ckpt(config.trainer.default_root_dir, _logger_save_dirs(config))
            rank_zero_info(f"--ckpt_path auto: {config['ckpt_path'] or 'none, a fresh start'}")
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            report_checkpoint_differences(ckpt_path, config.model)


def _logger_save_dirs(config: Any) -> list[str]:
    """The ``save_dir`` of each logger configured for the trainer."""
    loggers = config.trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    dirs = [getattr(getattr(lg, "init_args", None), "save_dir", None) for lg in loggers]
    return [d for d in dirs if d]


def cli_main(args: list[str] | None = None, run: bool = True) -> RetrieverCLI:
    """Build the Lightning CLI for ``args`` (the command line when None)."""
    return RetrieverCLI(
        UniversalRetriever,
        WebQADataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
        parser_class=RetrieverArgumentParser,
    )


def _dispatch(argv: list[str]) -> int | None:
    """``demo`` and ``mine`` to their modules; everything else to the Lightning CLI."""
    if argv[:1] == ["demo"]:
        from demo import run_demo_cli

        return run_demo_cli(argv[1:])
    if argv[:1] == ["mine"]:
        from callbacks.ance_mining import mine_cli

        return mine_cli(argv[1:], cli_main)
    cli_main(None if argv == sys.argv[1:] else argv)
    return 0


def main(argv: list[str]) -> int:
    """Run the command in ``argv``; bad input ends as one ``error: ...`` line and exit status 2."""
    return exit_status(lambda: _dispatch(argv))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
