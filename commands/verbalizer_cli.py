"""The Lightning CLI of image verbalization: ``train.py {fit,validate,verbalize} --config configs/verbalization/...``.

``train.py`` builds this CLI instead of the retriever's for ``verbalize`` and for every configuration whose model is
``lightning_modules.verbalizer.ImageVerbalizer`` (its ``class_path`` says so), so the query generator trains with
the same command line, run directories, ``run.json`` and overrides as the retriever:

    python train.py fit --config configs/verbalization/query_generator_tiny.yaml
    python train.py verbalize --config configs/verbalization/query_generator_tiny.yaml \\
        --ckpt_path RUN/checkpoints/best.ckpt --out DATA/all_imgs_query.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.run_directory import run_directory
from callbacks.run_manifest import RunManifest
from commands.cli import RetrieverCLI, cli_options
from commands.parser import config_files
from commands.verbalize import run_verbalize
from datamodules.verbalization_datamodule import VerbalizationDataModule
from lightning_modules.verbalizer import ImageVerbalizer

#: The model class that selects this CLI in a configuration file.
VERBALIZER_CLASS = f"{ImageVerbalizer.__module__}.{ImageVerbalizer.__name__}"


def uses_verbalizer(args: list[str]) -> bool:
    """True for ``verbalize`` and when a ``--config`` file's model is the image verbalizer (a missing file is left
    to the CLI to report)."""
    if args[:1] == ["verbalize"]:
        return True
    for path in config_files(args):
        model = (yaml.safe_load(path.read_text()) or {}).get("model")
        if isinstance(model, dict) and model.get("class_path") == VERBALIZER_CLASS:
            return True
    return False


class VerbalizerTrainer(L.Trainer):
    """Lightning's ``Trainer`` with ``verbalize``. ``run_dir`` is the run directory the CLI chose."""

    run_dir: Path | None = None

    def verbalize(
        self,
        model: ImageVerbalizer,
        datamodule: VerbalizationDataModule,
        ckpt_path: str | None = None,
        out: str | None = None,
        shard_size: int = 1000,
    ) -> str:
        """Write an expanded caption file, ``caption`` = ``C [SEP] V(I)`` (paper eq. 8), in the schema of
        ``all_imgs.json`` (every image, every other field kept), sharded over the ranks, resumable.

        Args:
            model: the verbalizer (``mode`` query: a trained generator from ``ckpt_path``; caption: zero-shot).
            datamodule: the data directory whose images and captions are read.
            ckpt_path: checkpoint of a trained query generator.
            out: the caption file to write (default ``<run dir>/all_imgs_<mode>.json``); finished shards go to
                ``<out>.shards/``, counts to ``<out>.summary.json``.
            shard_size: images per shard (the unit a rerun reuses).
        """
        path = Path(out) if out else run_directory(self) / f"all_imgs_{model.hparams.mode}.json"
        run_verbalize(self, model, datamodule, ckpt_path, path, shard_size)
        return str(path)


class VerbalizerCLI(RetrieverCLI):
    """The retriever CLI's run directories, configuration files and checkpoint rules, for the verbalizer."""

    @classmethod
    def build(cls, args: list[str] | None, run: bool) -> VerbalizerCLI:
        return cls(
            ImageVerbalizer,
            VerbalizationDataModule,
            subclass_mode_model=True,
            trainer_class=VerbalizerTrainer,
            **cli_options(args, run),
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        lightning = LightningCLI.subcommands()
        return {"fit": lightning["fit"], "validate": lightning["validate"], "verbalize": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str | None, default=None, help="where this command writes")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        return LightningCLI._prepare_subcommand_parser(self, klass, subcommand, **kwargs)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = LightningCLI.instantiate_trainer(self, **kwargs)
        if not any(isinstance(cb, RunManifest) for cb in trainer.callbacks):
            trainer.callbacks.append(RunManifest())
        return trainer

    def before_fit(self) -> None:
        """Nothing to check (the retriever's CLI checks its negatives here)."""

    def _run_subcommand(self, subcommand: str) -> None:
        LightningCLI._run_subcommand(self, subcommand)
