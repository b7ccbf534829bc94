"""The subcommands of ``train.py``: one Lightning CLI with fit, validate, test, predict, mine, demo and check-data."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess

import yaml

from commands.cli import main

from cli_runs import ROOT, train

SUBCOMMANDS = tuple("fit validate test predict mine demo check-data bm25 fuse reproduce verbalize".split())


def test_help_lists_every_subcommand() -> None:
    proc = train("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = re.findall(r"^ {4}([\w-]+) ", proc.stdout, flags=re.MULTILINE)
    assert tuple(listed) == SUBCOMMANDS


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """``train.py ARGS`` in this process (``--help`` and ``--print_config`` end in SystemExit), from the repository
    root, with its exit status and output: the parser is the one ``python train.py`` builds."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(list(args))
            except SystemExit as exit_:
                status = exit_.code or 0
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(list(args), status, out.getvalue(), err.getvalue())


def test_mine_takes_help_config_and_print_config() -> None:
    help_ = run_in_process("mine", "--help")
    assert help_.returncode == 0, help_.stderr[-2000:]
    for option in ("--ckpt_path", "--out", "--top_k", "--config", "--print_config", "--data.data_dir", "--run_dir"):
        assert option in help_.stdout, option
    printed = run_in_process("mine", "--config", "configs/tiny/univl_dr_tiny.yaml", "--top_k", "7", "--print_config")
    assert printed.returncode == 0, printed.stderr[-2000:]
    config = yaml.safe_load(printed.stdout)
    assert config["top_k"] == 7 and config["out"] is None
    assert config["model"]["encoder"]["init_args"]["model_name"] == "tiny-clip-64px"
    assert "processor" not in config["data"]  # linked from the model at instantiation, not a setting


def test_demo_takes_help_and_print_config_without_running() -> None:
    help_ = run_in_process("demo", "--help")
    assert help_.returncode == 0, help_.stderr[-2000:]
    assert "--stage1_epochs" in help_.stdout and "--refresh_every" in help_.stdout
    printed = run_in_process("demo", "--out", "elsewhere/demo", "--stage3_epochs", "3", "--print_config")
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert yaml.safe_load(printed.stdout) == {
        "out": "elsewhere/demo",
        "size": "small",
        "seed": 0,
        "stage1_epochs": 16,
        "stage3_epochs": 3,
        "refresh_every": 69,
    }


def test_check_data_reads_the_data_settings_of_a_training_config() -> None:
    help_ = run_in_process("check-data", "--help")
    assert help_.returncode == 0, help_.stderr[-2000:]
    for option in ("--data.data_dir", "--data.caption_file", "--report", "--workers", "--write-skip-list"):
        assert option in help_.stdout, option
    assert "--trainer" not in help_.stdout and "--model" not in help_.stdout
    printed = run_in_process(
        *"check-data --config configs/tiny/univl_dr_tiny.yaml --data.caption_file all_imgs_exp.json".split(),
        *"--write-skip-list bad.txt --print_config".split(),
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    config = yaml.safe_load(printed.stdout)
    assert config["data"]["data_dir"] == "mini-webqa:small" and config["data"]["caption_file"] == "all_imgs_exp.json"
    assert (config["report"], config["workers"], config["write_skip_list"]) == (None, None, "bad.txt")
    assert set(config) == {"data", "report", "workers", "write_skip_list"}  # the trainer and model are not read
