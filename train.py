"""Command line: ``python train.py {fit,validate,test,predict} --config configs/...`` (Lightning CLI).

Two more verbs:
    python train.py mine --config C --ckpt_path X [--mine.out FILE]   mine hard negatives once (paper stage 2)
    python train.py demo [--out DIR]                                  the mini-WebQA end-to-end demo
"""
from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.checkpoint_config import report_checkpoint_differences
from lightning_modules.retriever import UniversalRetriever
from retrieval.errors import InputError


class RetrieverCLI(LightningCLI):
    """The Lightning CLI of this project (configs compose: ``--config a.yaml --config b.yaml``).

    With ``--ckpt_path``, Lightning's CLI parses the checkpoint's saved hyperparameters over the
    configuration, silently dropping what the user typed. Here the configuration wins: the checkpoint's
    values are only compared with it (one line lists the keys that differ), and an encoder architecture
    other than the checkpoint's is refused before anything loads.
    """

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            report_checkpoint_differences(ckpt_path, config.model)


def cli_main(args: list[str] | None = None, run: bool = True) -> RetrieverCLI:
    """Build the Lightning CLI for ``args`` (the command line when None)."""
    return RetrieverCLI(
        UniversalRetriever,
        WebQADataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
    )


def main(argv: list[str]) -> int:
    """Dispatch ``demo`` and ``mine`` to their modules; everything else to the Lightning CLI."""
    try:
        if argv[:1] == ["demo"]:
            from demo import run_demo_cli

            return run_demo_cli(argv[1:])
        if argv[:1] == ["mine"]:
            from callbacks.ance_mining import mine_cli

            return mine_cli(argv[1:], cli_main)
        cli_main(None if argv == sys.argv[1:] else argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
