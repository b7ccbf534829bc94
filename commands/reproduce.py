"""``python train.py reproduce``: the rows of paper Table 1 and Table 3 on one data directory, then one table.

Each row is the recipe it names, run through the same commands a user types (``commands.cli.cli_main``,
``commands.baselines``), into ``OUT/rows/<row>/``:

* ``bm25``: BM25 over facts and captions; ``zero_shot``: ``test`` of the stage-1 recipe's initial weights;
* in-batch rows (stage 1): ``fit`` the stage-1 recipe with a Table 3 in-batch ablation, ``test`` its best
  checkpoint; ``clip_dpr`` also mines the hard negatives of the training queries (paper stage 2);
* hard-negative rows (stage 3): ``fit`` the stage-3 recipe (with a Table 3 ablation, or as it is for ``univl_dr``)
  from the ``clip_dpr`` checkpoint on its mined negatives, ``test`` the best checkpoint;
* fusion rows: BM25's text-only run and CLIP-DPR's image-only run fused by RRF, with or without oracle routing.

A finished row leaves ``OUT/rows/<row>/result.json`` and is skipped on a rerun (resume); a row that fails is
reported in the table with its error and the others go on (a row whose prerequisite failed is not run). Selecting
rows (``--rows``) adds the rows they need. At the end: ``results.md``, ``results.json`` and the plots
(``commands.reproduce_plots``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from lightning.pytorch.utilities.exceptions import SIGTERMException

from callbacks.evaluation_writer import EvaluationWriter
from callbacks.run_directory import MANIFEST
from datamodules.webqa_datamodule import WebQADataModule
from retrieval.atomic import atomic_write
from retrieval.errors import InputError, error_message
from retrieval.report import view_run_file

log = logging.getLogger(__name__)

STAGE1_CONFIG = "configs/tiny/clip_dpr_tiny.yaml"
STAGE3_CONFIG = "configs/tiny/univl_dr_tiny.yaml"
ABLATIONS = "configs/ablations"
RESULT = "result.json"


@dataclass(frozen=True)
class Row:
    """One row of the paper's tables: what runs (``kind``), its Table 3 ablation config, the rows it needs."""

    name: str
    label: str
    tables: tuple[str, ...]
    kind: str  # bm25 | zero_shot | in_batch | hard_negatives | fusion
    ablation: str | None = None
    needs: tuple[str, ...] = ()
    oracle: bool = False


def _hard(name: str, label: str, ablation: str) -> Row:
    return Row(name, label, ("3",), "hard_negatives", f"{ABLATIONS}/negatives_{ablation}.yaml", ("clip_dpr",))


ROWS = (
    Row("bm25", "BM25 (facts + captions)", ("1",), "bm25"),
    Row("zero_shot", "CLIP zero-shot (the stage-1 recipe's initial weights)", ("1",), "zero_shot"),
    Row("clip_dpr", "CLIP-DPR, in-batch random", ("1", "3"), "in_batch", f"{ABLATIONS}/negatives_inbatch_random.yaml"),
    Row("inbatch_balanced", "balanced in-batch", ("3",), "in_batch", f"{ABLATIONS}/negatives_inbatch_balanced.yaml"),
    Row("bm25_clip_dpr_rrf", "BM25 & CLIP-DPR (RRF)", ("1",), "fusion", needs=("bm25", "clip_dpr")),
    Row(
        "bm25_clip_dpr_oracle",
        "BM25 & CLIP-DPR (oracle modality)",
        ("1",),
        "fusion",
        needs=("bm25", "clip_dpr"),
        oracle=True,
    ),
    Row("univl_dr", "UniVL-DR (the stage-3 recipe)", ("1",), "hard_negatives", needs=("clip_dpr",)),
    _hard("hn_only_text", "hard negatives: only texts", "only_text"),
    _hard("hn_only_image", "hard negatives: only images", "only_image"),
    _hard("hn_text2_image1", "hard negatives: 2 texts & 1 image", "text2_image1"),
    _hard("hn_text1_image2", "hard negatives: 1 text & 2 images", "text1_image2"),
    _hard("hn_random", "hard negatives: ANCE random", "ance_random"),
    _hard("hn_balanced", "hard negatives: balanced", "balanced"),
)
ROW_NAMES = tuple(row.name for row in ROWS)


def select_rows(names: Sequence[str] | None) -> list[Row]:
    """The rows named (all when None) and, first, every row they need, in table order."""
    by_name = {row.name: row for row in ROWS}
    unknown = [n for n in names or () if n not in by_name]
    if unknown:
        raise InputError(f"unknown row(s) {', '.join(unknown)}; choose among {', '.join(ROW_NAMES)}")
    wanted = set(names or ROW_NAMES)
    pending = list(wanted)
    while pending:
        for need in by_name[pending.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                pending.append(need)
    return [row for row in ROWS if row.name in wanted]


@dataclass
class Settings:
    """What every row shares: the data, the recipes, extra configs and overrides, epochs, seed."""

    data_dir: str
    caption_file: str
    stage1_config: str = STAGE1_CONFIG
    stage3_config: str = STAGE3_CONFIG
    extra_configs: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    stage1_epochs: int | None = None
    stage3_epochs: int | None = None
    seed: int = 0

    def args(self, config: str, ablation: str | None, run_dir: Path, epochs: int | None = None) -> list[str]:
        """Command-line arguments of a dense command of one row."""
        configs = [config, *([ablation] if ablation else []), *self.extra_configs]
        args = [arg for c in configs for arg in ("--config", c)]
        args += ["--data.data_dir", self.data_dir, "--data.caption_file", self.caption_file]
        args += ["--seed_everything", str(self.seed), "--run_dir", str(run_dir)]
        if epochs is not None:
            args += ["--trainer.max_epochs", str(epochs)]
        return args + list(self.overrides)


def _manifest(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / MANIFEST).read_text())


def _checkpoint(run_dir: Path) -> str:
    """The run's best checkpoint, else its last (a fit shorter than its validation interval has no best)."""
    manifest = _manifest(run_dir)
    checkpoint = manifest.get("best_checkpoint") or manifest.get("last_checkpoint")
    if not checkpoint:
        raise InputError(f"run {run_dir} saved no checkpoint; give the stage more epochs")
    return checkpoint


def _test(args: list[str], checkpoint: str | None) -> dict[str, Any]:
    """``test`` (of ``checkpoint``, or of the configuration's initial weights); its metrics and evaluation folder."""
    from commands.cli import cli_main

    cli = cli_main(["test", *args, *(["--ckpt_path", checkpoint] if checkpoint else [])])
    written = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EvaluationWriter)).written[-1]
    return {"metrics": dict(written.metrics), "eval_dir": written.directory}


class _ErrorLines(io.TextIOBase):
    """A stderr that passes everything through and keeps the last ``error: ...`` line (without the prefix)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last: str | None = None

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.startswith("error: "):
                self.last = line.removeprefix("error: ")
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class Runner:
    """Runs the selected rows into ``out`` (see the module docstring)."""

    def __init__(
        self,
        out: Path,
        settings: Settings,
        datamodule: WebQADataModule,
        progress: bool = True,
        report_only: bool = False,
    ) -> None:
        self.out = out
        self.settings = settings
        self.datamodule = datamodule
        self.progress = progress
        self.report_only = report_only
        self.done: dict[str, dict[str, Any]] = {}

    def row_dir(self, name: str) -> Path:
        return self.out / "rows" / name

    def finished(self, name: str) -> dict[str, Any] | None:
        """The saved result of a finished row, or None."""
        path = self.row_dir(name) / RESULT
        return json.loads(path.read_text()) if path.is_file() else None

    def run(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Run ``rows`` in order (finished ones are read back); one result dict per row."""
        results = []
        for row in rows:
            results.append(self.run_row(row))
        return results

    def run_row(self, row: Row) -> dict[str, Any]:
        base = {"name": row.name, "label": row.label, "tables": list(row.tables)}
        saved = self.finished(row.name)
        if saved is not None:
            log.info("row %s: finished in an earlier run, skipped", row.name)
            self.done[row.name] = saved
            return {**saved, "resumed": True}
        if self.report_only:
            return {**base, "status": "not run", "error": "not finished yet (a report of the finished rows only)"}
        missing = [need for need in row.needs if need not in self.done]
        if missing:
            return {**base, "status": "failed", "error": f"needs row(s) {', '.join(missing)}, which did not finish"}
        self._set_aside_unfinished(row.name)
        start = time.perf_counter()
        log.info("row %s: %s", row.name, row.label)
        stderr = _ErrorLines(sys.stderr)
        try:
            with contextlib.redirect_stderr(stderr):
                outcome = self.execute(row)
        except SIGTERMException:  # the runner itself is being stopped (Lightning turns SIGTERM into this exit)
            raise
        except (Exception, SystemExit) as err:  # one row's failure must not lose the others
            log.error("row %s failed:\n%s", row.name, traceback.format_exc())
            # a command's parser reports on stderr and exits: its "error: ..." line is the row's error
            message = error_message(err) if isinstance(err, Exception) else stderr.last or f"exit status {err.code}"
            return {**base, "status": "failed", "error": message.splitlines()[0] if message else type(err).__name__}
        result = {**base, "status": "done", "minutes": (time.perf_counter() - start) / 60, **outcome}
        with atomic_write(self.row_dir(row.name) / RESULT) as handle:
            json.dump(result, handle, indent=2)
        self.done[row.name] = result
        return result

    def _set_aside_unfinished(self, name: str) -> None:
        """A folder left by a failed or interrupted attempt of the row is renamed ``<row>.attempt-<N>`` (kept for
        its logs), so the row starts in an empty folder."""
        folder = self.row_dir(name)
        if folder.exists():
            attempt = 1 + sum(1 for _ in folder.parent.glob(f"{name}.attempt-*"))
            folder.rename(folder.with_name(f"{name}.attempt-{attempt}"))
            log.info("row %s: the unfinished attempt in %s is kept as %s.attempt-%d", name, folder, name, attempt)

    def execute(self, row: Row) -> dict[str, Any]:
        runners: dict[str, Callable[[Row], dict[str, Any]]] = {
            "bm25": self._bm25,
            "zero_shot": self._zero_shot,
            "in_batch": self._in_batch,
            "hard_negatives": self._hard_negatives,
            "fusion": self._fusion,
        }
        return runners[row.kind](row)

    def _bm25(self, row: Row) -> dict[str, Any]:
        from commands.baselines import run_bm25

        folder = self.row_dir(row.name)
        metrics = run_bm25(self.datamodule, "test", folder, progress=self.progress)
        return {"metrics": metrics, "eval_dir": str(folder)}

    def _zero_shot(self, row: Row) -> dict[str, Any]:
        return _test(self.settings.args(self.settings.stage1_config, None, self.row_dir(row.name)), None)

    def _fit_and_test(self, row: Row, config: str, epochs: int | None, extra: list[str]) -> tuple[dict, list[str]]:
        from commands.cli import cli_main

        args = self.settings.args(config, row.ablation, self.row_dir(row.name), epochs)
        cli_main(["fit", *args, *extra])
        checkpoint = _checkpoint(self.row_dir(row.name))
        return {**_test(args, checkpoint), "checkpoint": checkpoint, "fit_args": [*args, *extra]}, args

    def _in_batch(self, row: Row) -> dict[str, Any]:
        from commands.cli import cli_main

        outcome, args = self._fit_and_test(row, self.settings.stage1_config, self.settings.stage1_epochs, [])
        if row.name == "clip_dpr":  # paper stage 2: hard negatives mined with the stage-1 model
            negatives = self.row_dir(row.name) / "negatives" / "stage2-train-negatives.json"
            cli_main(["mine", *args, "--ckpt_path", outcome["checkpoint"], "--out", str(negatives)])
            outcome["negatives"] = str(negatives)
        return outcome

    def _hard_negatives(self, row: Row) -> dict[str, Any]:
        stage1 = self.done["clip_dpr"]
        extra = ["--model.encoder.init_args.pretrained", stage1["checkpoint"], "--data.negatives_file"]
        extra.append(stage1["negatives"])
        outcome, _ = self._fit_and_test(row, self.settings.stage3_config, self.settings.stage3_epochs, extra)
        outcome["refreshes"] = _manifest(self.row_dir(row.name)).get("mined", [])
        return outcome

    def _fusion(self, row: Row) -> dict[str, Any]:
        from commands.baselines import run_fusion
        from retrieval.fusion import FusionSettings

        text_run = Path(self.done["bm25"]["eval_dir"]) / view_run_file("text")
        image_run = Path(self.done["clip_dpr"]["eval_dir"]) / view_run_file("image")
        folder = self.row_dir(row.name)
        runs = [str(text_run), str(image_run)]
        metrics = run_fusion(self.datamodule, runs, folder, FusionSettings("rrf", oracle_routing=row.oracle))
        return {"metrics": metrics, "eval_dir": str(folder), "fused": runs}


def run_reproduce(
    datamodule: WebQADataModule,
    out: str | Path,
    rows: Sequence[str] | None = None,
    settings: Settings | None = None,
    embedding_sample: int = 30,
    wandb: bool = False,
    progress: bool = True,
    report_only: bool = False,
) -> list[dict[str, Any]]:
    """Run the rows into ``out``, then write ``results.md``, ``results.json`` and the plots; return the rows."""
    from commands import reproduce_plots as plots

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(out)
    settings = settings or Settings(datamodule.hparams.data_dir, datamodule.hparams.caption_file)
    selected = select_rows(rows)
    start = time.perf_counter()
    runner = Runner(out, settings, datamodule, progress, report_only)
    results = runner.run(selected)
    datamodule.prepare_data()
    true_share = plots.image_query_share(datamodule.data_dir, "test")
    figures = plots.write_plots(out, results, true_share)
    figures += plots.embedding_figure(out, settings, runner.done, embedding_sample)
    table = plots.results_markdown(results, true_share)
    minutes = (time.perf_counter() - start) / 60
    with atomic_write(out / "results.md") as handle:
        handle.write(f"# Paper Table 1 and Table 3 rows on {settings.data_dir} (test split)\n\n{table}\n")
        handle.write(f"\nThis invocation: {minutes:.1f} min. Figures: {', '.join(Path(f).name for f in figures)}\n")
    with atomic_write(out / "results.json") as handle:
        json.dump(
            {"rows": results, "image_query_share": true_share, "minutes": minutes, "settings": settings.__dict__},
            handle,
            indent=2,
            default=str,
        )
    if wandb:
        plots.log_to_wandb(out, results, figures)
    failed = [r["name"] for r in results if r["status"] == "failed"]
    print(f"\n{table}\n\nwritten: {out / 'results.md'}, {out / 'results.json'}, {', '.join(map(str, figures))}")
    if failed:
        print(f"failed rows: {', '.join(failed)} (rerun the same command to retry them; finished rows are kept)")
    return results
