"""The comparison page says only what its tests say (issue 29): the fold sentence follows its
own sign, colour and arrows only where a test is significant, no negative zero, Holm for every
test when more than two runs are compared."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from html import unescape
from pathlib import Path

from facecls.report.write import write_comparison


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def variant(
    run: Path, to: Path, right: bool | None = None, flip: int = 0,
    balanced: list[float] | None = None,
) -> Path:  # fmt: skip
    """A copy of ``run``: every test image right (``right=True``) or wrong (``False``), or the
    first ``flip`` right ones made wrong; ``balanced``: the folds' validation balanced accuracy."""
    shutil.copytree(run, to)
    rows = list(csv.DictReader((to / "predictions.csv").open()))
    names = sorted({r["true"] for r in rows})
    flipped = 0
    for r in rows:
        wrong = next(n for n in names if n != r["true"])
        if right is not None:
            r["predicted"] = r["true"] if right else wrong
        elif r["predicted"] == r["true"] and flipped < flip:
            r["predicted"], flipped = wrong, flipped + 1
        r["correct"] = int(r["predicted"] == r["true"])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    (to / "predictions.csv").write_text(out.getvalue())
    if balanced is not None:
        metrics = json.loads(read(to / "metrics.json"))
        for fold, value in zip(metrics["cv"]["folds"], balanced, strict=True):
            fold["balanced_accuracy"] = value
        (to / "metrics.json").write_text(json.dumps(metrics))
    return to


def text_of(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def test_fold_sentence_follows_its_own_sign(four_identity_run: dict, tmp_path: Path) -> None:
    """Issue 29.4: McNemar favours A on the test images while the folds favour B: the fold
    sentence names B, the metric, and says it runs against the verdict."""
    run = four_identity_run["run"]
    a = variant(run, tmp_path / "a", right=True, balanced=[0.50, 0.55])
    b = variant(run, tmp_path / "b", right=False, balanced=[0.70, 0.76])
    page = read(write_comparison([a, b], tmp_path / "cmp"))
    verdict = text_of(page.split('class="yes-sig verdict">')[1].split("</p>")[0])
    assert "a is more accurate (McNemar" in verdict
    note = text_of(page.split('class="note fold-note">')[1].split("</p>")[0])
    assert "validation balanced accuracy is higher for b than for a" in note
    assert "opposite of the test part's verdict" in note
    md = read(tmp_path / "cmp" / "comparison.md")
    assert "validation balanced accuracy is higher for b than for a" in md


def test_no_colour_without_significance(four_identity_run: dict, tmp_path: Path) -> None:
    """Issue 29.11: one image fewer right is no significant change: no colour, no arrow, and no
    number prints as -0.000; "±" is labelled as the folds' standard deviation."""
    run = four_identity_run["run"]
    b = variant(run, tmp_path / "b", flip=1)
    page = read(write_comparison([run, b], tmp_path / "cmp"))
    boot = page.split('<tr class="bootstrap"')[1].split("</tr>")[0]
    assert float(re.search(r'data-p="([^"]+)"', boot).group(1)) > 0.05
    assert "worse" not in boot and "better" not in boot and "▼" not in boot and "▲" not in boot
    moved = page.split("Identities whose recall changed most")[1].split("</details>")[0]
    assert "▼" not in moved and "worse" not in moved
    folds = page.split('<tr class="folds"')[1].split("</tr>")[0]
    assert "mean 0.000, sd 0.000 over the folds" in folds  # identical folds: no sign on nothing
    for text in (text_of(page), read(tmp_path / "cmp" / "comparison.md")):
        assert "-0.000" not in text and "+0.000" not in text and "−0.000" not in text
    assert "standard deviation over the folds" in text_of(page)


def test_holm_adjusts_the_fold_test_too(four_identity_run: dict, tmp_path: Path) -> None:
    """Issue 29.12: three cv runs on the same folds: every test, the fold test included, shows
    its Holm-adjusted p-value."""
    run = four_identity_run["run"]
    a = variant(run, tmp_path / "a", balanced=[0.50, 0.60])
    b = variant(run, tmp_path / "b", flip=1, balanced=[0.55, 0.62])
    c = variant(run, tmp_path / "c", flip=2, balanced=[0.65, 0.70])
    page = read(write_comparison([a, b, c], tmp_path / "cmp"))
    rows = page.split('<tr class="folds"')[1:]
    assert len(rows) == 3
    for row in rows:
        cells = re.findall(r'<td class="num">([^<]*)</td>', row.split("</tr>")[0])
        assert cells[-1] not in ("–", "") and re.fullmatch(r"(< )?[01]\.\d{3}", cells[-1])
    md = read(tmp_path / "cmp" / "comparison.md")
    fold_lines = [line for line in md.splitlines() if line.startswith("| Corrected t-test")]
    assert len(fold_lines) == 3 and all(not line.rstrip().endswith("– |") for line in fold_lines)


def test_the_fold_sentence_says_which_p_it_quotes(four_identity_run: dict, tmp_path: Path) -> None:
    """Three runs: the fold row shows p and its Holm-adjusted p; the sentence below quotes both
    as they are, never the adjusted one under the plain name (0.875 in the row, "p = 1.000")."""
    run = four_identity_run["run"]
    a = variant(run, tmp_path / "a", balanced=[0.50, 0.60])
    b = variant(run, tmp_path / "b", flip=1, balanced=[0.55, 0.62])
    c = variant(run, tmp_path / "c", flip=2, balanced=[0.65, 0.70])
    page = read(write_comparison([a, b, c], tmp_path / "cmp"))
    md = read(tmp_path / "cmp" / "comparison.md")
    rows = [r.split("</tr>")[0] for r in page.split('<tr class="folds"')[1:]]
    notes = [text_of(n.split("</p>")[0]) for n in page.split('class="note fold-note">')[1:]]
    md_rows = [line for line in md.splitlines() if line.startswith("| Corrected t-test")]
    assert len(rows) == len(notes) == len(md_rows) == 3
    for row, note, md_row in zip(rows, notes, md_rows, strict=True):
        raw, holm = re.findall(r'<td class="num">([^<]*)</td>', row)[-2:]
        said = re.search(r"corrected t-test (p [^)]*)\)", note).group(1)
        plain = f"= {raw}" if not raw.startswith("<") else raw
        adjusted = f"= {holm}" if not holm.startswith("<") else holm
        want = f"p {plain}" if raw == holm else f"p {plain}, Holm-adjusted {adjusted}"
        assert said == want
        assert want in md  # the Markdown says the same
        assert md_row.rstrip().endswith(f"| {raw} | {holm} |")
