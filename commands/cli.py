"""The command line: ``python train.py {fit,validate,test,predict,mine,demo,check-data,bm25,fuse,reproduce} ...``
(one Lightning CLI).

Every subcommand takes ``--help``, ``--config``, ``--print_config`` and dotted overrides. ``mine``, ``demo`` and
``check-data`` are methods of :class:`RetrieverTrainer`, added the way lightning-ir adds ``index``/``search``;
``demo`` and ``check-data`` build no model or trainer (the demo runs the other commands; ``check-data`` reads the
same ``--data.*`` settings as ``fit``, from the same config files, and checks the data they name).

Run directories (``callbacks.run_directory``): a fresh ``fit`` writes everything (checkpoints, evaluations, mined
negatives, configuration, logs, ``run.json``) under ``--run_dir``, by default the next ``version_N`` under
``trainer.default_root_dir``; a resumed ``fit`` continues in its checkpoint's run; ``validate``/``test``/``predict``/
``mine`` of a checkpoint write under that checkpoint's run (or ``--run_dir``) without opening a logger version.
``--ckpt_path auto`` (SLURM requeue): the newest ``hpc_ckpt_*.ckpt`` or ``last*.ckpt`` under ``--run_dir`` or
``trainer.default_root_dir``, none (a fresh start) when there is neither.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback, _get_short_description
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from callbacks.ance_mining import ANCEMiningCallback
from callbacks.evaluation_writer import EvaluationWriter
from callbacks.run_directory import MANIFEST, run_directory, run_of_checkpoint
from callbacks.run_manifest import RunManifest
from commands.parser import RetrieverArgumentParser
from datamodules.webqa_datamodule import WebQADataModule
from lightning_modules.checkpoint_config import report_checkpoint_differences
from lightning_modules.retriever import UniversalRetriever
from retrieval.atomic import atomic_write
from retrieval.errors import InputError, exit_status

#: Environment variable through which the first process hands its run directory to the ranks it launches.
RUN_DIR_ENV = "UNIVL_RUN_DIR"
#: Root of the run directories when the configuration names no ``trainer.default_root_dir``.
DEFAULT_ROOT = "runs"
#: Subcommands that build no model, data or trainer from the configuration (they run their own method).
STANDALONE = ("demo", "check-data", "bm25", "fuse", "reproduce")
#: ``verbalize``'s line in ``python train.py --help`` (it runs in ``commands.verbalizer_cli``).
VERBALIZE_HELP = (
    "Write an expanded caption file (caption = C [SEP] V(I)) with a configs/verbalization model; "
    "python train.py verbalize --help lists its options."
)
#: Subcommands whose name on the command line is not the name of their Trainer method.
METHOD_OF = {"check-data": "check_data"}
#: Sections of the shared config files that ``check-data``, ``bm25``, ``fuse`` and ``reproduce`` accept and ignore.
IGNORED_BY_DATA_COMMANDS = ("seed_everything", "trainer", "model", "optimizer", "lr_scheduler", "ckpt_path", "run_dir")


class RetrieverTrainer(L.Trainer):
    """Lightning's ``Trainer`` with this project's commands. ``run_dir`` is the run directory the CLI chose."""

    run_dir: Path | None = None

    def mine(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        out: str | None = None,
        top_k: int = 100,
    ) -> str:
        """Mine hard negatives for the training queries with a checkpoint (paper stage 2).

        Args:
            model: the retriever (weights from ``ckpt_path``, else from the configuration).
            datamodule: the data the training queries and the corpus come from.
            ckpt_path: checkpoint to mine with.
            out: negatives file to write (default ``<run dir>/negatives/train-negatives-step<N>.json``).
            top_k: depth of the mined lists (the paper: 100).

        Returns:
            The path of the negatives file. The dev split is evaluated on the way (``<run dir>/eval``).
        """
        miner = ANCEMiningCallback(on_validate=True, top_k=top_k, output_file=out)
        self.callbacks.append(miner)
        try:
            self.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        finally:
            self.callbacks.remove(miner)
        path = miner.mined_files[-1]
        if self.is_global_zero:
            print(f"mined negatives: {path}")
        return path

    @staticmethod
    def demo(
        out: str = "runs/demo",
        size: str = "small",
        seed: int = 0,
        stage1_epochs: int = 16,
        stage3_epochs: int = 12,
        refresh_every: int = 69,
    ) -> list[dict[str, Any]]:
        """The mini-WebQA demo on CPU: stage 1 CLIP-DPR, mining, stage 3 UniVL-DR, test, results table and plot.

        Args:
            out: output folder (data, runs, results.md, results.json, results.png).
            size: mini-WebQA preset, ``tiny`` or ``small``.
            seed: seed of the data and of both stages.
            stage1_epochs: epochs of stage 1.
            stage3_epochs: epochs of stage 3.
            refresh_every: re-mine hard negatives every this many steps in stage 3.
        """
        from commands.demo import run_demo

        return run_demo(Path(out), size, seed, stage1_epochs, stage3_epochs, refresh_every)

    @staticmethod
    def bm25(
        datamodule: WebQADataModule,
        split: str = "test",
        out: str = "runs/bm25",
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "english",
        top_k: int = 100,
        threads: int = 0,
    ) -> dict[str, float]:
        """BM25 over the mixed corpus (facts and captions): OUT/run.trec, run-text.trec, run-image.trec, metrics.json.

        Args:
            datamodule: the data settings (``--data.data_dir``, ``--data.caption_file``; ``--config`` files are read
                for them).
            split: the queries to search, ``dev`` or ``test``.
            out: output folder (the index is saved in ``OUT/index`` and reused when corpus and settings match).
            k1: BM25's term-frequency saturation.
            b: BM25's length normalisation.
            stemmer: a Snowball stemmer of PyStemmer (``english``), or ``null`` for none.
            top_k: depth of each ranking.
            threads: search threads (0: the calling thread).
        """
        from commands.baselines import run_bm25
        from retrieval.bm25 import BM25Settings

        return run_bm25(datamodule, split, out, BM25Settings(k1=k1, b=b, stemmer=stemmer), top_k, threads)

    @staticmethod
    def fuse(
        datamodule: WebQADataModule,
        runs: list[str],
        out: str = "runs/fused",
        method: str = "rrf",
        oracle_routing: bool = False,
        weights: list[float] | None = None,
        rrf_k: float = 60.0,
        normalisation: str = "minmax",
        split: str = "test",
        top_k: int = 100,
    ) -> dict[str, float]:
        """Fuse run files (divide and conquer): OUT/run.trec and metrics.json.

        Args:
            datamodule: the data settings the runs were searched on (corpus, qrels of ``split``).
            runs: two or more TREC run files (e.g. BM25's run-text.trec and a dense test's run-image.trec).
            out: output folder.
            method: ``rrf`` (reciprocal rank fusion) or ``interpolation`` (normalised scores, weighted sum).
            oracle_routing: keep for each query only the docs of its relevant docs' modality (paper's upper bound).
            weights: one weight per run (default: all 1).
            rrf_k: RRF's constant.
            normalisation: ``minmax`` or ``zscore``, per query and run (interpolation).
            split: ``dev`` or ``test``.
            top_k: depth of the fused ranking.
        """
        from commands.baselines import run_fusion
        from retrieval.fusion import FusionSettings

        weights_ = tuple(weights) if weights is not None else None
        settings = FusionSettings(method, oracle_routing, weights_, rrf_k, normalisation, top_k)
        return run_fusion(datamodule, runs, out, settings, split)

    @staticmethod
    def reproduce(
        datamodule: WebQADataModule,
        out: str = "runs/reproduce",
        rows: list[str] | None = None,
        stage1_config: str = "configs/tiny/clip_dpr_tiny.yaml",
        stage3_config: str = "configs/tiny/univl_dr_tiny.yaml",
        extra_configs: list[str] | None = None,
        overrides: list[str] | None = None,
        stage1_epochs: int | None = None,
        stage3_epochs: int | None = None,
        seed: int = 0,
        embedding_sample: int = 30,
        wandb: bool = False,
        report_only: bool = False,
    ) -> int:
        """The rows of paper Table 1 and Table 3, resumable: OUT/results.md, results.json, plots.

        Args:
            datamodule: the data settings (``--data.data_dir``, ``--data.caption_file``) every row runs on.
            out: output folder (each row in ``OUT/rows/<row>``; a finished row is skipped on a rerun).
            rows: the rows to run (default all; the rows they need are added): bm25, zero_shot, clip_dpr,
                inbatch_balanced, bm25_clip_dpr_rrf, bm25_clip_dpr_oracle, univl_dr, hn_only_text, hn_only_image,
                hn_text2_image1, hn_text1_image2, hn_random, hn_balanced.
            stage1_config: the in-batch recipe (CLIP-DPR, zero-shot, balanced in-batch).
            stage3_config: the hard-negative recipe (UniVL-DR and the Table 3 hard-negative ablations).
            extra_configs: configs composed after the recipe and the ablation (e.g. configs/trainers/gpu.yaml).
            overrides: more CLI arguments for every training and test command (e.g. ["--data.num_workers", "0"]).
            stage1_epochs: epochs of the in-batch rows (default: the recipe's).
            stage3_epochs: epochs of the hard-negative rows (default: the recipe's).
            seed: seed of every row (``seed_everything``) and of the embedding picture's sample.
            embedding_sample: queries, text docs and image docs each in the embedding picture (0: no picture).
            wandb: log the results table and the figures to W&B (offline without an API key).
            report_only: run nothing; write the tables and figures of the rows finished so far.

        Returns:
            The exit status: 1 when a row failed, else 0.
        """
        from commands.reproduce import Settings, run_reproduce

        settings = Settings(
            data_dir=datamodule.hparams.data_dir,
            caption_file=datamodule.hparams.caption_file,
            stage1_config=stage1_config,
            stage3_config=stage3_config,
            extra_configs=tuple(extra_configs or ()),
            overrides=tuple(overrides or ()),
            stage1_epochs=stage1_epochs,
            stage3_epochs=stage3_epochs,
            seed=seed,
        )
        results = run_reproduce(datamodule, out, rows, settings, embedding_sample, wandb, report_only=report_only)
        return 1 if any(r["status"] == "failed" for r in results) else 0

    @staticmethod
    def check_data(
        datamodule: WebQADataModule,
        report: str | None = None,
        workers: int | None = None,
        write_skip_list: str | None = None,
    ) -> int:
        """Check a data directory in one pass: every problem listed, every image decoded; exit 2 if a run would stop.

        Args:
            datamodule: the data settings (``--data.*``, as for ``fit``; ``--config`` files are read for them).
            report: the JSON report to write (default ``runs/check-data/<data directory name>.json``).
            workers: processes that decode the images (default: one per CPU core; 0: none, this process decodes).
            write_skip_list: write the ids of the undecodable images here (train with ``--data.skip_list FILE``).

        Returns:
            The exit status: 2 if a problem would stop a run, else 0.
        """
        from commands.check_data import run_check_data

        return run_check_data(datamodule, report, workers, write_skip_list)


class RunConfig(SaveConfigCallback):
    """Save the command's full configuration as ``<run dir>/<subcommand>-config.yaml`` (rank 0, atomic)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        path = run_directory(trainer) / self.config_filename
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            with atomic_write(path) as handle:
                handle.write(text)
        self.already_saved = True


def resolve_auto_ckpt(root: str | Path, log_dirs: Iterable[str | Path] = ()) -> str | None:
    """What ``--ckpt_path auto`` means: the newest (by modification time) of the ``hpc_ckpt_*.ckpt`` (a SLURM
    preemption checkpoint) and ``last*.ckpt`` files under ``root`` and ``log_dirs``; None when there is none, so
    that a fresh run starts from nothing."""
    candidates: set[Path] = set()
    for folder in {Path(root), *map(Path, log_dirs)}:
        if folder.is_dir():
            candidates.update(folder.rglob("hpc_ckpt_*.ckpt"))
            candidates.update(folder.rglob("last*.ckpt"))
    stamped = [(path.stat().st_mtime_ns, path.name.startswith("hpc_ckpt_"), str(path)) for path in candidates]
    return max(stamped)[2] if stamped else None  # on equal times the preemption checkpoint


def next_version(root: Path) -> Path:
    """``root/version_N`` with N one above the highest there (``version_0`` in an empty or missing root)."""
    numbers = [
        int(p.name.removeprefix("version_"))
        for p in root.glob("version_*")
        if p.name.removeprefix("version_").isdigit()
    ]
    return root / f"version_{max(numbers, default=-1) + 1}"


def choose_run_dir(subcommand: str, run_dir: str | None, ckpt_path: str | None, root: str | None) -> Path:
    """The run directory of a command (see the module docstring)."""
    if os.environ.get(RUN_DIR_ENV) and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        return Path(os.environ[RUN_DIR_ENV])  # a rank launched by the first process: the same directory
    if run_dir:
        return Path(run_dir)
    if ckpt_path:
        return run_of_checkpoint(ckpt_path)
    base = Path(root or DEFAULT_ROOT)
    if subcommand != "fit":
        return base / "untrained"
    for variable, prefix in (("SLURM_JOB_ID", "slurm"), ("TORCHELASTIC_RUN_ID", "torchrun")):
        if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1"))) > 1 and os.environ.get(variable):
            return base / f"{prefix}-{os.environ[variable]}"  # ranks started together agree on the name
    return next_version(base)


class RetrieverCLI(LightningCLI):
    """The Lightning CLI of this project (configs compose: ``--config a.yaml --config b.yaml``).

    With ``--ckpt_path``, Lightning's CLI parses the checkpoint's saved hyperparameters over the configuration,
    silently dropping what the user typed. Here the configuration wins: the checkpoint's values are only compared
    with it (one line lists the keys that differ), and an encoder architecture other than the checkpoint's is
    refused before anything loads. The encoder's processor reaches the datamodule through one link
    (``model`` -> ``data.processor``, at instantiation).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.run_dir: Path | None = None
        self.status = 0  # the exit status a subcommand asks for (check-data: 2 when it found errors)
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "mine": {"model", "datamodule"},
            "demo": set(),
            "check-data": {"datamodule"},
            "bm25": {"datamodule"},
            "fuse": {"datamodule"},
            "reproduce": {"datamodule"},
        }

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's, with command-line names that are not method names (``check-data`` runs ``check_data``)."""
        self._subcommand_parsers: dict[str, LightningArgumentParser] = {}
        parser_subcommands = parser.add_subcommands()
        for subcommand in self.subcommands():
            description = _get_short_description(getattr(self.trainer_class, METHOD_OF.get(subcommand, subcommand)))
            subparser_kwargs = kwargs.get(subcommand, {})
            subparser_kwargs.setdefault("description", description)
            subcommand_parser = self._prepare_subcommand_parser(self.trainer_class, subcommand, **subparser_kwargs)
            self._subcommand_parsers[subcommand] = subcommand_parser
            parser_subcommands.add_subcommand(subcommand, subcommand_parser, help=description)
        if "verbalize" not in self.subcommands():  # listed for --help: cli_main hands it to the verbalizer's CLI
            parser_subcommands.add_subcommand("verbalize", LightningArgumentParser(), help=VERBALIZE_HELP)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--run_dir",
            type=str | None,
            default=None,
            help="where this command writes (default: see `python train.py --help`)",
        )
        parser.link_arguments(
            "model", "data.train_task", compute_fn=lambda model: model.loss.train_task, apply_on="instantiate"
        )
        parser.link_arguments(
            "model", "data.processor", compute_fn=lambda model: model.encoder.processor, apply_on="instantiate"
        )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        if subcommand == "demo":
            parser = self.init_parser(**kwargs)  # the demo runs the other commands: no trainer, model or data here
            self._subcommand_method_arguments[subcommand] = parser.add_method_arguments(klass, subcommand)
            return parser
        if subcommand == "check-data":
            return self._check_data_parser(**kwargs)
        if subcommand in STANDALONE:  # bm25, fuse, reproduce: the data settings and the method's own arguments
            parser = self._data_parser(**kwargs)
            added = parser.add_method_arguments(klass, subcommand, skip={"datamodule"})
            self._subcommand_method_arguments[subcommand] = added
            return parser
        return super()._prepare_subcommand_parser(klass, subcommand, **kwargs)

    def _data_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """``--data.*`` as for ``fit`` (the other sections of a config file are accepted and ignored)."""
        parser = self.init_parser(**kwargs)
        parser.add_class_arguments(
            self.datamodule_class, "data", skip={"processor"}, fail_untyped=False, sub_configs=True
        )
        for key in IGNORED_BY_DATA_COMMANDS:
            parser.add_argument(f"--{key}", type=Any, default=None, help=argparse.SUPPRESS)
        return parser

    def _check_data_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The data settings (:meth:`_data_parser`), ``--report``, ``--workers`` and ``--write-skip-list``."""
        parser = self._data_parser(**kwargs)
        own = (
            (("--report",), "the JSON report to write (default runs/check-data/<data directory name>.json)", str),
            (("--workers",), "processes that decode the images (default: one per CPU core; 0: the main process)", int),
            (
                ("--write-skip-list", "--write_skip_list"),
                "write the ids of the undecodable images to this file (train with --data.skip_list FILE)",
                str,
            ),
        )
        for flags, text, kind in own:
            parser.add_argument(*flags, type=kind | None, default=None, help=text)
        self._subcommand_method_arguments["check-data"] = ["report", "workers", "write_skip_list"]
        return parser

    def _set_seed(self) -> None:
        if self.subcommand not in STANDALONE:
            super()._set_seed()

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand or subcommand in STANDALONE:
            return
        config = self.config[subcommand]
        if config.get("ckpt_path") == "auto":
            root = config.get("run_dir") or config.trainer.get("default_root_dir")
            if not root:
                raise InputError(
                    "--ckpt_path auto needs --run_dir (or --trainer.default_root_dir), the folder it searches"
                )
            config["ckpt_path"] = resolve_auto_ckpt(root)
            rank_zero_info(f"--ckpt_path auto: {config['ckpt_path'] or 'none, a fresh start'}")
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and not Path(ckpt_path).is_file():
            raise InputError(
                f"--ckpt_path {ckpt_path} does not exist; pass a checkpoint file (a run's "
                f"checkpoints/best.ckpt or last.ckpt, listed in its {MANIFEST})"
            )
        if ckpt_path:
            report_checkpoint_differences(ckpt_path, config.model, config.get("data"))

    def before_instantiate_classes(self) -> None:
        if self.subcommand is None or self.subcommand in STANDALONE:
            return
        config = self.config[self.subcommand]
        self.run_dir = choose_run_dir(
            self.subcommand, config.get("run_dir"), config.get("ckpt_path"), config.trainer.get("default_root_dir")
        )
        os.environ[RUN_DIR_ENV] = str(self.run_dir)  # the ranks this process launches use the same one
        config.trainer.default_root_dir = str(self.run_dir)
        if self.subcommand == "fit":
            for logger in _loggers(config.trainer.get("logger")):
                logger.init_args.save_dir = str(self.run_dir)
        else:  # an evaluation or mining of a checkpoint opens no logger version; its files and run.json say it all
            config.trainer.logger = False
        self.save_config_kwargs["config_filename"] = f"{self.subcommand}-config.yaml"

    def instantiate_classes(self) -> None:
        if self.subcommand in STANDALONE:
            self.config_init = self.parser.instantiate_classes(self.config)  # check-data: its data settings
            self.model = self.datamodule = self.trainer = None
            return
        super().instantiate_classes()
        if self.trainer is None or self.run_dir is None:
            return
        self.trainer.run_dir = self.run_dir
        for callback in self.trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(self.run_dir / "checkpoints")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(cb, EvaluationWriter) for cb in trainer.callbacks):
            trainer.callbacks.append(EvaluationWriter())
        if not any(isinstance(cb, RunManifest) for cb in trainer.callbacks):
            trainer.callbacks.append(RunManifest())
        return trainer

    def before_fit(self) -> None:
        loss, dm = self.model.loss, self.datamodule
        mines_at_start = any(getattr(cb, "at_fit_start", False) for cb in self.trainer.callbacks)
        loss.check_has_negatives(
            dm.hparams.batch_size,
            self.trainer.world_size,
            dm.hard_negatives_per_query(),
            mines_at_start,
            negatives=f"negatives_file={dm.hparams.negatives_file}, strategy={dm.strategy.name}",
        )

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        print(f"run directory: {self.run_dir}\nbest checkpoint: {best or 'none'}\nmanifest: {self.run_dir / MANIFEST}")

    def _run_subcommand(self, subcommand: str) -> None:
        if subcommand not in STANDALONE:
            return super()._run_subcommand(subcommand)
        config = self.config_init[subcommand]
        arguments = {k: v for k, v in config.items() if k in self._subcommand_method_arguments[subcommand]}
        if subcommand == "demo":
            RetrieverTrainer.demo(**arguments)  # the demo needs no trainer of its own
        elif subcommand == "check-data":
            self.status = RetrieverTrainer.check_data(config["data"], **arguments)
        else:
            result = getattr(RetrieverTrainer, subcommand)(config["data"], **arguments)
            self.status = result if isinstance(result, int) else 0


def _loggers(value: Any) -> list[Any]:
    """The configured loggers that take a ``save_dir`` (``trainer.logger`` may be one, a list, or a bool)."""
    loggers = value if isinstance(value, list) else [value]
    return [
        lg for lg in loggers if hasattr(lg, "init_args") and lg.init_args is not None and "save_dir" in lg.init_args
    ]


def cli_main(args: list[str] | None = None, run: bool = True) -> RetrieverCLI:
    """Build (and by default run) the CLI for ``args`` (the command line when None): the verbalizer's
    (``commands.verbalizer_cli``) for ``verbalize`` and for configurations whose model is the image verbalizer."""
    from commands.verbalizer_cli import VerbalizerCLI, uses_verbalizer

    arguments = sys.argv[1:] if args is None else args
    if uses_verbalizer(arguments):
        return VerbalizerCLI.build(args, run)
    return RetrieverCLI(UniversalRetriever, WebQADataModule, trainer_class=RetrieverTrainer, **cli_options(args, run))


def cli_options(args: list[str] | None, run: bool) -> dict[str, Any]:
    """The Lightning CLI options every CLI of this project shares (configuration files, parser, run config)."""
    return dict(
        args=args,
        run=run,
        save_config_callback=RunConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"},
        parser_class=RetrieverArgumentParser,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command in ``argv`` (the command line when None); bad input ends as one ``error: ...`` line, exit 2."""
    args = sys.argv[1:] if argv is None else argv

    def run() -> int:
        return cli_main(None if args == sys.argv[1:] else args).status

    return exit_status(run)
