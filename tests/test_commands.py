"""The subcommands of ``train.py``: one Lightning CLI with fit, validate, test, predict, mine, demo and check-data."""

from __future__ import annotations

import re

import yaml

from cli_runs import train

SUBCOMMANDS = ("fit", "validate", "test", "predict", "mine", "demo", "check-data")


def test_help_lists_every_subcommand() -> None:
    proc = train("--help", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    listed = re.findall(r"^ {4}([\w-]+) ", proc.stdout, flags=re.MULTILINE)
    assert tuple(listed) == SUBCOMMANDS


def test_mine_takes_help_config_and_print_config() -> None:
    help_ = train("mine", "--help", timeout=120)
    assert help_.returncode == 0, help_.stderr[-2000:]
    for option in ("--ckpt_path", "--out", "--top_k", "--config", "--print_config", "--data.data_dir", "--run_dir"):
        assert option in help_.stdout, option
    printed = train(
        "mine", "--config", "configs/tiny/univl_dr_tiny.yaml", "--top_k", "7", "--print_config", timeout=120
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    config = yaml.safe_load(printed.stdout)
    assert config["top_k"] == 7 and config["out"] is None
    assert config["model"]["encoder"]["init_args"]["model_name"] == "tiny-clip-64px"
    assert "processor" not in config["data"]  # linked from the model at instantiation, not a setting


def test_demo_takes_help_and_print_config_without_running() -> None:
    help_ = train("demo", "--help", timeout=120)
    assert help_.returncode == 0, help_.stderr[-2000:]
    assert "--stage1_epochs" in help_.stdout and "--refresh_every" in help_.stdout
    printed = train("demo", "--out", "elsewhere/demo", "--stage3_epochs", "3", "--print_config", timeout=120)
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
    help_ = train("check-data", "--help", timeout=120)
    assert help_.returncode == 0, help_.stderr[-2000:]
    for option in ("--data.data_dir", "--data.caption_file", "--report", "--workers", "--write-skip-list"):
        assert option in help_.stdout, option
    assert "--trainer" not in help_.stdout and "--model" not in help_.stdout
    printed = train(
        *"check-data --config configs/tiny/univl_dr_tiny.yaml --data.caption_file all_imgs_exp.json".split(),
        *"--write-skip-list bad.txt --print_config".split(),
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    config = yaml.safe_load(printed.stdout)
    assert config["data"]["data_dir"] == "mini-webqa:small" and config["data"]["caption_file"] == "all_imgs_exp.json"
    assert (config["report"], config["workers"], config["write_skip_list"]) == (None, None, "bad.txt")
    assert set(config) == {"data", "report", "workers", "write_skip_list"}  # the trainer and model are not read
