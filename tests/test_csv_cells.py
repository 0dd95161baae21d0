"""No CSV facecls writes turns a name into a spreadsheet formula (issue 23, item 9: OWASP's
"CSV Injection"): a cell starting with ``= + - @``, a tab or a carriage return is quoted with a
leading ``'``; numbers stay numbers; facecls reads its own CSVs back unchanged."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facecls.bundle import Bundle, save_bundle
from facecls.cli import main
from facecls.models import create_model

FORMULAS = ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "'=quoted"]


@pytest.mark.parametrize("text", FORMULAS)
def test_a_formula_cell_is_quoted_and_reads_back(text: str) -> None:
    from facecls.atomic import read_cell, safe_cell

    cell = safe_cell(text)
    assert cell == "'" + text
    assert read_cell(cell) == text


@pytest.mark.parametrize("number", ["-0.25", "+3", "-1e-05", "-inf", "12", "0.5"])
def test_numbers_stay_numbers(number: str) -> None:
    from facecls.atomic import safe_cell

    assert safe_cell(number) == number
    assert safe_cell(float(number)) == float(number)


def test_csv_text_quotes_every_formula_cell() -> None:
    from facecls.atomic import csv_text

    names = [t for t in FORMULAS if "\r" not in t]  # a bare CR ends a line for csv's reader
    text = csv_text(["name", "score"], [[t, "-0.5"] for t in names])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [r[0] for r in rows[1:]] == ["'" + t for t in names]
    assert {r[1] for r in rows[1:]} == {"-0.5"}


def test_predictions_csv_names_are_not_formulas(tmp_path: Path) -> None:
    names = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-x"]
    torch.manual_seed(0)
    model = create_model("baseline", num_classes=len(names), image_size=32)
    bundle = tmp_path / "model"
    save_bundle(Bundle(model, "baseline", names, 32, [0.5] * 3, [0.25] * 3), bundle)
    photo = tmp_path / "a.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    out = tmp_path / "p.csv"
    assert main(["--quiet", "predict", str(bundle), str(photo), "--out", str(out)]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        (row,) = list(csv.DictReader(f))
    tops = [row[f"top{r}"] for r in range(1, len(names) + 1)]
    assert sorted(tops) == sorted("'" + n for n in names)
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in row.values())
