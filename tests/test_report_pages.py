"""A run's pages never mislead (issue 29): commands that work as typed, Tables 3 and 4 on a run
with 4 identities, the Markdown against the page, one validation pass, labelled losses, what the
user set apart from what facecls filled in, the card's numbers, the grid, the table's width."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import pytest

from facecls.cli import main
from facecls.report.card import model_card
from facecls.report.run_data import load_run
from facecls.report.scores import headline_rows
from facecls.report.write import write_report


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def h2_titles(html: str) -> list[str]:
    return [unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r"<h2>(.*?)</h2>", html)]


def commands(html: str) -> list[str]:
    return [unescape(c) for c in re.findall(r'<code class="command">(.*?)</code>', html)]


def test_every_command_on_the_page_works_as_typed(
    four_identity_run: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Issue 29.9: run from the folder the run was started in (here a copy of it), every
    command the page prints (with PHOTOS/ and NAME filled in) succeeds; the Markdown prints
    the same commands."""
    shutil.copytree(four_identity_run["root"] / "runs", tmp_path / "runs")
    shutil.copytree(four_identity_run["strangers"], tmp_path / "photos")
    run = tmp_path / "runs" / "four"
    write_report(run)
    monkeypatch.chdir(tmp_path)
    done: list[str] = []
    for _ in range(3):  # measuring strangers adds the calibrate command to the page
        html, md = read(run / "report.html"), read(run / "report.md")
        todo = [c for c in commands(html) if c not in done]
        if not todo:
            break
        for command in todo:
            assert f"`{command}`" in md
            argv = shlex.split(command.replace("PHOTOS/", "photos/").replace(" NAME", " msp"))
            assert argv[0] == "facecls" and "runs/four" in command
            assert main(["--quiet", *argv[1:]]) == 0, command
            done.append(command)
    assert {c.split()[1] for c in done} == {"cv", "evaluate", "calibrate"}
    assert (tmp_path / "runs" / "four-2" / "metrics.json").is_file()  # repeated as typed
    capsys.readouterr()
    assert main(["evaluate", "four", "--strangers", "photos/"]) == 2
    err = capsys.readouterr().err
    assert "no run folder named four" in err and "did you mean runs/four" in err


def test_four_identities_are_split_between_the_tables(four_identity_run: dict) -> None:
    """Issue 29.2: with fewer than 10 tested identities no identity is in both lists, and the
    page, its Markdown and the compare tables say so."""
    run = four_identity_run["run"]
    html, md = read(run / "report.html"), read(run / "report.md")
    rows = {
        table: re.findall(r'<td class="name">(.*?) \(\d+\)</td>', html.split(f'id="{table}"')[1]
        .split("</table>")[0])
        for table in ("table3", "table4")
    }  # fmt: skip
    assert len(rows["table3"]) == len(rows["table4"]) == 2
    assert not set(rows["table3"]) & set(rows["table4"])
    for text in (html, md):
        assert "Only 4 identities are tested" in text
        assert "ranked by Acc" in text


def test_markdown_carries_the_pages_sections(four_identity_run: dict, tmp_path: Path) -> None:
    """Issue 29.16: report.md and comparison.md have every section of their page, in order."""
    from facecls.report.write import write_comparison

    run = four_identity_run["run"]
    again = tmp_path / "again"
    shutil.copytree(run, again)
    out = write_comparison([run, again], tmp_path / "cmp")
    for html_path, md_path in ((run / "report.html", run / "report.md"),
                               (out, out.with_suffix(".md"))):  # fmt: skip
        titles = h2_titles(read(html_path))
        md = read(md_path)
        in_md = [line[3:] for line in md.splitlines() if line.startswith("## ")]
        assert in_md == titles, md_path.name
        # "<" escaped only in names from the data: p-values and group bounds print as typed.
        assert "&lt; 0.001" not in md and "&lt; 8" not in md


def test_the_fold_table_is_the_kept_epochs_pass(four_identity_run: dict) -> None:
    """Issue 29.15: the fold table's numbers are the kept epoch's validation pass, the one
    history.csv (and the loss curves) show: one pass, one number."""
    run = four_identity_run["run"]
    metrics = json.loads(read(run / "metrics.json"))
    history = list(csv.DictReader((run / "history.csv").open()))
    for fold, (scores, epoch) in enumerate(
        zip(metrics["cv"]["folds"], metrics["cv"]["best_epochs"], strict=True)
    ):
        row = next(
            r for r in history if int(float(r["fold"])) == fold and int(float(r["epoch"])) == epoch
        )
        assert scores["loss"] == pytest.approx(float(row["val_loss"]), abs=1e-6)
        assert scores["accuracy"] == pytest.approx(float(row["val_accuracy"]), abs=1e-6)
        assert scores["balanced_accuracy"] == pytest.approx(
            float(row["val_balanced_accuracy"]), abs=1e-6
        )


def test_the_two_losses_are_labelled(four_identity_run: dict) -> None:
    """Issue 29.8: training (label smoothing 0.1, augmented) and validation (neither) are two
    different losses; the page and its figures say which is which."""
    html = read(four_identity_run["run"] / "report.html")
    section = html.split('id="training"')[1].split("</section>")[0]
    assert "training loss: label smoothing 0.1, augmented images (rotation ±10°, flip" in section
    assert "validation loss: no label smoothing, no augmentation" in section
    assert (four_identity_run["run"] / "figures" / "loss_curves.png").is_file()


def test_the_loss_figure_names_both_losses() -> None:
    """Issue 29.8, on the figure itself: its title says what each curve is."""
    from facecls.report.plots import plot_loss_curves
    from facecls.report.settings import loss_labels

    labels = loss_labels(
        {"train": {"label_smoothing": 0.1}, "augment": {"rotation": 10, "hflip": False}}
    )
    history = [
        {"fold": f, "epoch": e, "train_loss": 2.0 / e, "val_loss": 1.5 / e}
        for f in range(3) for e in (1, 2)
    ]  # fmt: skip
    title = plot_loss_curves(history, labels=labels).get_title(loc="left").replace("\n", " ")
    assert "Solid: training loss: label smoothing 0.1, augmented images (rotation ±10°)" in title
    assert "Dashed: validation loss: no label smoothing, no augmentation" in title


def test_filled_in_settings_are_not_the_users_changes(four_identity_run: dict) -> None:
    """Issue 29.13: precision auto became bf16 or fp32 on this machine; the user set epochs."""
    html = read(four_identity_run["run"] / "report.html")
    changed = html.split('id="settings-changed"')[1].split("</table>")[0]
    assert "train.epochs" in changed and "train.precision" not in changed
    resolved = html.split('id="settings-resolved"')[1].split("</p>")[0]
    assert "train.precision" in resolved
    metrics = json.loads(read(four_identity_run["run"] / "metrics.json"))
    assert metrics["settings_given"]["train.epochs"] == 2
    assert "train.precision" not in metrics["settings_given"]


def test_the_card_takes_the_pages_numbers(four_identity_run: dict, tmp_path: Path) -> None:
    """Issue 29.6: the card's intervals are the page's (top-5 included) and its median of
    training images is the median (4.5 here, not 4)."""
    run = tmp_path / "four"
    shutil.copytree(four_identity_run["run"], run)
    meta_path = run / "model" / "model.json"
    meta = json.loads(read(meta_path))
    meta["train_counts"] = [3, 4, 5, 8]
    meta_path.write_text(json.dumps(meta))
    card = model_card(run)
    assert "median 4.5," in card
    for row in headline_rows(load_run(run)):
        line = f"| {row['label']} | {row['value']:.3f} | [{row['low']:.3f}, {row['high']:.3f}] |"
        assert line in card
    page = read(write_report(run))
    top5 = next(r for r in headline_rows(load_run(run)) if r["key"] == "top5_accuracy")
    assert f'data-low="{top5["low"]}" data-high="{top5["high"]}"' in page


def test_face_grid_follows_the_identities_up_to_64() -> None:
    """Issue 29.19: the report's Figure 1 shows 64 faces; the grid shows every identity up to
    that many (30 here), then the 32 largest and the 32 smallest."""
    from types import SimpleNamespace

    import torch

    from facecls.report.faces import face_grid

    def grid(k: int) -> list[dict]:
        targets = torch.arange(k).repeat_interleave(2)
        dataset = SimpleNamespace(
            targets=targets, num_classes=k, class_names=[f"p{i:03d}" for i in range(k)],
            images=torch.zeros((2 * k, 3, 8, 8), dtype=torch.uint8),
        )  # fmt: skip
        faces = SimpleNamespace(
            dataset=dataset, picture=lambda i: np.zeros((8, 8, 3), np.uint8),
            first_images=lambda: {f"p{i:03d}": 2 * i for i in range(k)},
        )  # fmt: skip
        return face_grid(faces)

    assert len(grid(30)) == 30
    assert len(grid(90)) == 64


def test_collapse_is_told_in_counts() -> None:
    """Issue 29.14: 603 of 604 is not "100 %"."""
    from facecls.config import RunConfig
    from facecls.report.findings import findings
    from facecls.report.run_data import RunData

    cm = np.zeros((3, 3), dtype=np.int64)
    cm[:, 0] = [4, 300, 299]
    cm[2, 2] = 1
    run = RunData(
        run_dir=Path("r"), config=RunConfig(), metrics={}, data_report={}, folds={}, history=[],
        predictions=[], class_names=["ann", "bob", "cy"],
    )  # fmt: skip
    assert findings(run, cm, {})[0].startswith(
        "ann is predicted for 603 of the 604 test images but is only 4 of them"
    )


def test_per_identity_table_fits_the_page(four_identity_run: dict, tmp_path: Path) -> None:
    """Issue 29.10: at 1,400 px no name of the per-identity table is clipped."""
    from tests.browser import Chromium, require_chromium

    browser = Chromium(require_chromium(), tmp_path / "profile", width=1400, height=900)
    try:
        browser.open(four_identity_run["run"] / "report.html")
        assert browser.problems() == []
        box = "document.querySelector('#identities .scroll')"
        assert browser.evaluate(f"{box}.scrollWidth <= {box}.clientWidth")
        clipped = browser.evaluate(
            "Array.from(document.querySelectorAll('#per-class td'))"
            ".filter(td => td.scrollWidth > td.clientWidth + 1).length"
        )
        assert clipped == 0
    finally:
        browser.close()


def test_the_loss_overlay_keeps_its_labels_on_the_figure() -> None:
    """The compare page's loss figure with two runs' long labels (class weights, every warp):
    every legend line and the title lie inside the figure and the axis keeps most of its width
    (the labels once squeezed the axis to a sliver and ran off the figure's left edge)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from facecls.report.plots import plot_loss_overlay
    from facecls.report.settings import loss_labels

    config = {
        "train": {"label_smoothing": 0.1, "flip_tta": True, "imbalance": "inverse"},
        "augment": {"rotation": 10, "hflip": True, "scale": 0.1, "translate": 0.06},
    }
    names = ["a-run-with-a-long-name", "another-run-with-a-long-name"]
    history = [{"fold": 0, "epoch": e, "train_loss": 4 / e, "val_loss": 3 / e} for e in (1, 2, 3)]
    ax = plot_loss_overlay(
        dict.fromkeys(names, history),
        dict.fromkeys(names, 0),
        dict.fromkeys(names, loss_labels(config)),
    )
    figure = ax.figure
    canvas = FigureCanvasAgg(figure)  # how the page's PNG is drawn
    canvas.draw()
    renderer = canvas.get_renderer()
    box = figure.bbox
    texts = [*ax.get_legend().get_texts(), ax.title]
    assert len(texts) == 5
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, text.get_text()
    assert ax.get_window_extent(renderer).width > 0.6 * box.width
