"""``--recipe report`` trains as the report did (issue 29.17-18): rotation-only augmentation with
the rest a flag away, and a frozen backbone for a pretrained transfer model unless told
otherwise, which the page says."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from facecls.cli import build_parser, config_from_args
from facecls.config import RunConfig, TrainConfig
from facecls.config_rules import resolve
from facecls.report.content import build_run_page
from facecls.report.run_data import load_run
from facecls.report.settings import loss_labels


def cli_config(*flags: str) -> RunConfig:
    return resolve(config_from_args(build_parser().parse_args(["cv", *flags]), "cv"))


def test_report_recipe_augments_by_rotation_only() -> None:
    report = cli_config("--recipe", "report").augment
    assert (report.rotation, report.hflip, report.scale, report.translate) == (10.0, False, 0, 0)
    fast = cli_config().augment
    assert (fast.hflip, fast.scale, fast.translate) == (True, 0.1, 0.06)
    chosen = cli_config("--recipe", "report", "--hflip", "--scale", "0.2").augment
    assert (chosen.hflip, chosen.scale, chosen.translate) == (True, 0.2, 0.0)
    assert cli_config("--no-hflip").augment.hflip is False


def test_report_recipe_freezes_a_pretrained_backbone_unless_told() -> None:
    def freeze(**train: object) -> str:
        return resolve(RunConfig(train=TrainConfig(model="resnet18", **train))).train.freeze

    assert freeze(recipe="report", pretrained=True) == "backbone"
    assert freeze(recipe="report", pretrained=True, freeze="none") == "none"
    assert freeze(recipe="report") == "none"  # nothing pretrained to keep
    assert freeze(pretrained=True) == "none"  # the fast recipe fine-tunes
    assert cli_config("--model", "resnet18", "--pretrained", "--recipe", "report").train.lr == 1e-4


def test_the_page_says_which_weights_trained(four_identity_run: dict, tmp_path: Path) -> None:
    run = tmp_path / "transfer"
    shutil.copytree(four_identity_run["run"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"].update(model="resnet18", pretrained=True, recipe="report", freeze="backbone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    scope = build_run_page(load_run(run), shareable=True).context["training_scope"]
    assert scope.startswith("Backbone frozen, starting from pretrained weights: only the final")
    config["train"]["freeze"] = "none"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    scope = build_run_page(load_run(run), shareable=True).context["training_scope"]
    assert scope == "The whole network trained, starting from pretrained weights."


def test_the_page_says_what_a_frozen_backbone_saw(four_identity_run: dict, tmp_path: Path) -> None:
    """Under ``--recipe report`` the frozen backbone runs on the rotated images in every step, as
    the seed report's did; a probe of the fast recipe trains its head on embeddings computed once
    (``probe.py``), where rotation, zoom and shift are not applied, and the page says so."""
    report = {"label_smoothing": 0.0, "freeze": "backbone", "recipe": "report"}
    rotation_only = {"rotation": 10, "hflip": False, "scale": 0, "translate": 0}
    train, _ = loss_labels({"train": report, "augment": rotation_only})
    assert "augmented images (rotation ±10°)" in train and "not applied" not in train
    fast = {"rotation": 10, "hflip": True, "scale": 0.1, "translate": 0.06}
    train, _ = loss_labels({"train": {"freeze": "backbone"}, "augment": fast})
    assert "mirror images only (rotation ±10°, zoom ±0.1, shift ±0.06 not applied" in train
    staged = {"freeze": "backbone-then-unfreeze", "epochs": 9}
    train, _ = loss_labels({"train": staged, "augment": rotation_only})
    assert "no augmentation before epoch 4" in train
    assert "augmented images (rotation ±10°) from it on" in train
    train, _ = loss_labels({"train": {"freeze": "none"}, "augment": rotation_only})
    assert "augmented images (rotation ±10°)" in train  # the backbone runs on every warped image
    run = tmp_path / "transfer"
    shutil.copytree(four_identity_run["run"], run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"].update(model="resnet18", pretrained=True, recipe="report", freeze="backbone")
    config["augment"].update(rotation_only)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    page = build_run_page(load_run(run), shareable=True).context
    assert "not applied" not in page["training_scope"]
    assert "augmented images (rotation ±10°)" in page["loss_labels"][0]
    config["train"]["recipe"] = "fast"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    page = build_run_page(load_run(run), shareable=True).context
    assert (
        "the rotation ±10° of the augmentation settings was not applied" in page["training_scope"]
    )
