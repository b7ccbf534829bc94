"""Every shipped config parses with the Lightning CLI (no unknown keys), alone or composed as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from commands.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = str(CONFIGS / "recipes" / "clip_dpr.yaml")
OVERLAYS = sorted(str(p) for folder in ("ablations", "trainers", "loggers") for p in (CONFIGS / folder).glob("*.yaml"))
RECIPES = sorted(str(p) for folder in ("recipes", "tiny") for p in (CONFIGS / folder).glob("*.yaml"))


def _print_config(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: Path(p).stem)
def test_recipe_parses(recipe: str, capsys: pytest.CaptureFixture) -> None:
    config = _print_config(["--config", BASE, "--config", recipe], capsys)
    own = yaml.safe_load(Path(recipe).read_text()).get("model", {}).get("encoder", {})
    encoder = own.get("class_path", "lightning_modules.encoders.CLIPEncoder")
    assert config["model"]["encoder"]["class_path"] == encoder
    assert config["model"]["encoder"]["init_args"].items() >= own.get("init_args", {}).items()


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: Path(p).stem)
def test_overlay_composes_with_a_recipe(overlay: str, capsys: pytest.CaptureFixture) -> None:
    config = _print_config(["--config", BASE, "--config", overlay], capsys)
    assert config["data"]["data_dir"]


def test_table3_ablations_set_the_strategy(capsys: pytest.CaptureFixture) -> None:
    config = _print_config(
        ["--config", BASE, "--config", str(CONFIGS / "ablations" / "negatives_text2_image1.yaml")], capsys
    )
    assert config["data"]["negative_strategy"] == "text2_image1"
    assert config["model"]["loss"]["init_args"]["hard_negatives"] is True


@pytest.mark.parametrize("config", sorted((CONFIGS / "verbalization").glob("*.yaml")), ids=lambda p: p.stem)
def test_verbalization_config_parses(config: Path, capsys: pytest.CaptureFixture) -> None:
    parsed = _print_config(["--config", str(config)], capsys)
    assert parsed["model"]["class_path"] == "lightning_modules.verbalizer.ImageVerbalizer"
    assert (parsed["model"]["init_args"]["num_beams"], parsed["model"]["init_args"]["max_new_tokens"]) == (5, 20)
