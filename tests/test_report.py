"""The HTML/Markdown reports: numbers against metrics.json, escaping, shareable mode, comparison,
and the page in a real headless Chromium (failing when Chromium is not installed)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from facecls.cli import main
from facecls.report.content import clustered_classes
from facecls.report.render import REPORT_CSP, md_escape
from facecls.report.write import write_comparison, write_report, write_report_safely

EVIL = "<img src=x onerror=alert(1)>"
QUOTES = 'Tom "T" & Jerry\'s'
SECTIONS = ("summary", "data", "settings", "model", "training", "results", "identities",
            "errors", "learned")  # fmt: skip


class Page(HTMLParser):
    """Every start tag with its attributes, and the visible text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())
        ]


@pytest.fixture(scope="module")
def runs(synthetic_folder: Path, session_cache: Path, tmp_path_factory) -> dict[str, Path]:
    """Two train runs (plain and class-weighted, same test images) and a 2-fold cv run, on faces
    where two identity folders carry hostile names."""
    root = tmp_path_factory.mktemp("report")
    data = root / "faces"
    shutil.copytree(synthetic_folder, data)
    (data / "person_04").rename(data / EVIL)
    (data / "person_05").rename(data / QUOTES)
    common = [
        "--data", str(data), "--image-size", "32", "--epochs", "1", "--batch-size", "16",
        "--cache-dir", str(session_cache), "--runs-dir", str(root / "runs"),
    ]  # fmt: skip
    assert main(["--quiet", "train", *common, "--name", "plain"]) == 0
    assert (
        main(["--quiet", "train", *common, "--class-weights", "inverse", "--name", "weighted"]) == 0
    )
    terminal = io.StringIO()
    with contextlib.redirect_stdout(terminal):  # what a user reads in the terminal
        assert main(["cv", *common, "--folds", "2", "--name", "cv"]) == 0
    (root / "cv-terminal.txt").write_text(terminal.getvalue())
    return {
        "data": data,
        "cv_terminal": root / "cv-terminal.txt",
        **{name: root / "runs" / name for name in ("plain", "weighted", "cv")},
    }


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_train_and_cv_write_a_self_contained_report(runs: dict[str, Path]) -> None:
    for name in ("plain", "cv"):
        run = runs[name]
        html = read(run / "report.html")
        page = Page(html)
        assert (
            page.find("meta", **{"http-equiv": "Content-Security-Policy"})[0]["content"]
            == REPORT_CSP
        )
        sources = [a["src"] for t, a in page.tags if "src" in a]
        assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
        assert all(a["href"].startswith("#") for t, a in page.tags if "href" in a)
        assert not {"link", "iframe", "object", "embed", "base", "form"} & {t for t, _ in page.tags}
        assert all("src" not in a for a in page.find("script"))
        assert "http://" not in html and "https://" not in html
        for section in SECTIONS:
            assert page.find("section", id=section), section
        for figure in ("long_tail", "fold_losses", "recall_vs_train"):
            assert (run / "figures" / f"{figure}.png").is_file()
        kernels = len(list((run / "kernels").glob("*.png")))
        assert len([a for a in page.find("img") if "kernels of" in a.get("alt", "")]) == kernels
        errors = sum(
            1 for row in csv.DictReader((run / "predictions.csv").open()) if row["correct"] == "0"
        )
        gallery = [
            a
            for a in page.find("img", **{"class": "face"})
            if a.get("alt", "").startswith("test image")
        ]
        assert len(gallery) >= min(errors, 24)
        assert (run / "report.md").read_text().startswith(f"# Run {name}")


def test_report_numbers_match_metrics(runs: dict[str, Path]) -> None:
    run = runs["cv"]
    metrics = json.loads(read(run / "metrics.json"))
    test, cv = metrics["test"], metrics["cv"]
    page = Page(read(run / "report.html"))
    rows = {}
    for i, (tag, attrs) in enumerate(page.tags):
        if tag == "tr" and "data-key" in attrs:
            cells = [a for t, a in page.tags[i + 1 : i + 8] if t == "td"]
            rows[attrs["data-key"]] = cells
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "top5_accuracy"):
        value, interval, folds, pooled = rows[key][1:5]
        assert float(value["data-value"]) == pytest.approx(test["summary"][key], abs=1e-12)
        assert float(folds["data-mean"]) == pytest.approx(cv["mean_std"][key][0], abs=1e-12)
        assert float(folds["data-std"]) == pytest.approx(cv["mean_std"][key][1], abs=1e-12)
        assert float(pooled["data-value"]) == pytest.approx(
            cv["pooled_out_of_fold"][key], abs=1e-12
        )
        if key in test["intervals_95"]:
            low, high = test["intervals_95"][key]
            assert (float(interval["data-low"]), float(interval["data-high"])) == (low, high)
    # The per-identity table: one row per class, in metrics.json order, same numbers.
    names = [row["name"] for row in test["per_class"]]
    table = [a for t, a in page.tags if t == "tr" and "data-support" in a]
    assert [int(a["data-support"]) for a in table] == [r["support"] for r in test["per_class"]]
    for key in ("precision", "recall", "f1", "bcr", "aggregated", "accuracy"):
        cells = page.find("td", **{"class": "num", "data-key": key})
        values = [float(c["data-value"]) for c in cells][-len(names) :]
        assert values == pytest.approx([r[key] for r in test["per_class"]], abs=1e-12)
    md = read(run / "report.md")
    s = test["summary"]
    assert f"| Accuracy | {s['accuracy']:.3f} | [{test['intervals_95']['accuracy'][0]:.3f}, " in md
    assert f"| Aggregated | {s['class_avg_aggregated']:.3f} |" in md
    # Table 5's Accuracy row is the report's: mean per-identity accuracy (correct / its images).
    assert f"| Accuracy | {s['class_avg_accuracy']:.3f} |" in md
    assert s["class_avg_accuracy"] == pytest.approx(s["macro_recall"])
    for r in test["worst5"]:
        assert f"{md_escape(r['name'])} ({r['support']})" in md


def test_train_counts_agree_on_page_metrics_and_terminal(runs: dict[str, Path]) -> None:
    """One count of training images per identity: the kept model's training part (its fold's
    validation images left out), in metrics.json, the page's table and groups, and the terminal."""
    run = runs["cv"]
    metrics = json.loads(read(run / "metrics.json"))
    folds = json.loads(read(run / "folds.json"))
    kept = metrics["final_model"]["fold"]
    # By hand from folds.json: the pool less the kept fold, counted per identity folder.
    paths = {p if isinstance(p, str) else p[0] for p in folds["pool"]}
    paths -= {p if isinstance(p, str) else p[0] for p in folds["folds"][kept]}
    names = [r["name"] for r in metrics["test"]["per_class"]]
    by_hand = [sum(Path(p).parent.name == n for p in paths) for n in names]
    assert metrics["final_model"]["train_counts"] == by_hand
    page = Page(read(run / "report.html"))
    rows = [i for i, (t, a) in enumerate(page.tags) if t == "tr" and "data-support" in a]
    assert len(rows) == len(names)
    # Each row's cells with a value: test images, then train images, then the metrics.
    train_cells = [
        int(
            [a for t, a in page.tags[i + 1 : i + 8] if t == "td" and "data-value" in a][1][
                "data-value"
            ]
        )
        for i in rows
    ]
    assert train_cells == by_hand
    groups = metrics["test"]["groups"]
    html = read(run / "report.html")
    shown = dict(
        re.findall(r'<tr><td>(head|medium|few) \(.*?</td><td class="num">(\d+)</td>', html)
    )
    assert {g: int(n) for g, n in shown.items()} == groups["identities"]
    recalls = dict(re.findall(
        r'<tr><td>(head|medium|few) \(.*?</td><td class="num">\d+</td><td class="num" '
        r'data-value="([0-9.e-]+)"', html
    ))  # fmt: skip
    assert {g: float(v) for g, v in recalls.items()} == pytest.approx(groups["recall"])
    terminal = read(runs["cv_terminal"])
    line = next(x for x in terminal.splitlines() if x.startswith("Test recall by training images"))
    for g, recall in groups["recall"].items():
        assert f"{g} {recall:.3f} ({groups['identities'][g]} ids)" in line
    # The page's wall time is the command's up to its own writing; metrics.json adds the report.
    assert "until its results were saved" in html
    assert metrics["wall_seconds"] >= metrics["report_seconds"] > 0
    assert "Run folder:" in terminal and "wall time" in terminal


def test_run_page_shows_faces_layers_and_recipe_changes(runs: dict[str, Path]) -> None:
    run = runs["plain"]
    metrics = json.loads(read(run / "metrics.json"))
    html = read(run / "report.html")
    page = Page(html)
    identities = len(metrics["test"]["per_class"])
    grid = [a for a in page.find("img", **{"class": "face"}) if a["alt"].startswith("a face of")]
    assert len(grid) == min(identities, 24)
    assert len(page.find("img", **{"class": "thumb"})) == identities
    architecture = metrics["final_model"]["architecture"]
    assert architecture["parameters"] > 0 and architecture["layers"]
    assert f"{architecture['parameters']:,}" in html
    changed = html[
        html.index('id="settings-changed"') : html.index(
            "</table>", html.index('id="settings-changed"')
        )
    ]
    assert "train.epochs" in changed and "<b>1</b>" in changed  # --epochs 1 against the recipe's 30
    assert page.find("details", id="settings-all")
    assert page.find("details", id="deeper-kernels")  # kernels past the first layer are folded
    assert "Median aggregated score" in html
    aggregated = sorted(r["aggregated"] for r in metrics["test"]["per_class"] if r["support"])
    assert metrics["test"]["aggregated"]["median_aggregated"] == pytest.approx(
        np.median(aggregated)
    )
    shareable = read(write_report(run, shareable=True))
    assert "a face of" not in shareable and 'class="thumb"' not in shareable


def test_hostile_identity_names_are_text(runs: dict[str, Path]) -> None:
    html = read(runs["plain"] / "report.html")
    assert EVIL not in html and QUOTES not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Tom &#34;T&#34; &amp; Jerry&#39;s" in html
    text = "".join(Page(html).text)
    assert EVIL in text and QUOTES in text  # shown, as text
    md = read(runs["plain"] / "report.md")
    assert EVIL not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert 'Tom "T" &amp; Jerry\'s' in md
    card = read(runs["plain"] / "model" / "MODEL_CARD.md")  # its tables of names too
    assert EVIL not in card and "&lt;img src=x onerror=alert(1)&gt;" in card


def test_shareable_report_has_no_face_and_no_path(runs: dict[str, Path]) -> None:
    run = runs["plain"]
    full = Page(read(run / "report.html"))
    assert full.find("img", **{"class": "face"})  # the full report does show faces
    path = write_report(run, shareable=True)
    assert path == run / "report-shareable.html"
    html, md = read(path), read(run / "report-shareable.md")
    page = Page(html)
    assert page.find("img") and all(a.get("class") == "plot" for a in page.find("img"))
    test_paths = [row["path"] for row in csv.DictReader((run / "predictions.csv").open())]
    for text in (html, md):
        for secret in (str(runs["data"]), str(run.resolve()), str(run.parent), *test_paths):
            assert secret not in text
        assert "(path withheld)" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html  # names stay, escaped


def test_shareable_withholds_a_split_file_path(runs: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    run = tmp_path / "split-run"
    shutil.copytree(runs["plain"], run)
    config = yaml.safe_load(read(run / "config.yaml"))
    config["data"]["split_file"] = "/secret/folder/splits.csv"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    report = json.loads(read(run / "data_report.json"))
    report["split"] = (
        "split file /secret/folder/splits.csv (images not listed there are left out: 0)"
    )
    (run / "data_report.json").write_text(json.dumps(report))
    html = read(write_report(run, shareable=True))
    assert "/secret/folder" not in html and "/secret/folder" not in read(
        run / "report-shareable.md"
    )
    assert "/secret/folder" in read(write_report(run))  # the full report names it


def test_comparison_pairs_runs_on_the_same_images(runs: dict[str, Path], tmp_path: Path) -> None:
    plain, weighted = runs["plain"], runs["weighted"]
    other = tmp_path / "other"
    shutil.copytree(weighted, other)
    rows = (other / "predictions.csv").read_text().splitlines()
    (other / "predictions.csv").write_text("\n".join(rows[:-1]) + "\n")  # one test image fewer
    out = write_comparison([plain, weighted, other], tmp_path / "cmp")
    assert out == tmp_path / "cmp" / "comparison.html"
    page = Page(read(out))
    couples = {
        (a["data-a"], a["data-b"]): a["data-paired"] for a in page.find("div") if "data-paired" in a
    }
    assert couples == {
        ("plain", "weighted"): "yes",
        ("plain", "other"): "no",
        ("weighted", "other"): "no",
    }
    assert "cannot be paired" in read(out)
    # McNemar's discordant counts, by hand from the two predictions.csv files.
    right = {
        name: {
            r["path"]: r["correct"] == "1" for r in csv.DictReader((run / "predictions.csv").open())
        }
        for name, run in (("a", plain), ("b", weighted))
    }
    b = sum(right["a"][p] and not right["b"][p] for p in right["a"])
    c = sum(not right["a"][p] and right["b"][p] for p in right["a"])
    mcnemar = page.find("tr", **{"class": "mcnemar"})[0]
    assert (int(mcnemar["data-b"]), int(mcnemar["data-c"])) == (b, c)
    verdicts = [a for a in page.find("p") if "verdict" in a.get("class", "")]
    assert len(verdicts) == 1
    text = "".join(Page(read(out)).text)
    assert "Significant difference" in text or "No significant difference" in text
    assert "train.class_weights" in text  # what differs between the runs is named
    # Differences read B minus A: the change from the first run to the second.
    boot = page.find("tr", **{"class": "bootstrap"})[0]
    assert "weighted − plain" in text and float(boot["data-diff"]) is not None
    assert page.find("section", id="always-wrong") and page.find("section", id="groups")
    assert (tmp_path / "cmp" / "figures" / "losses.png").is_file()
    links = [a["href"] for a in page.find("a", **{"class": "run-page"})]
    assert len(links) == 3 and all((tmp_path / "cmp" / h).resolve().is_file() for h in links)
    metrics = json.loads(read(plain / "metrics.json"))
    cell = page.find(
        "td", **{"class": "num", "data-value": str(metrics["test"]["summary"]["accuracy"])}
    )
    assert cell
    assert (tmp_path / "cmp" / "comparison.md").is_file()


def test_cv_comparison_adds_the_fold_test(runs: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "cv-again"
    shutil.copytree(runs["cv"], again)
    page = Page(read(write_comparison([runs["cv"], again], tmp_path / "cmp")))
    folds = page.find("tr", **{"class": "folds"})
    assert folds and float(folds[0]["data-p"]) == 1.0  # identical runs: no difference at all
    assert float(page.find("tr", **{"class": "mcnemar"})[0]["data-p"]) == 1.0
    shareable = write_comparison([runs["cv"], again], tmp_path / "cmp", shareable=True)
    assert shareable.name == "comparison-shareable.html"
    for text in (read(shareable), read(shareable.with_suffix(".md"))):
        assert str(runs["cv"].parent) not in text and str(tmp_path) not in text
    assert str(runs["cv"].resolve()) in read(tmp_path / "cmp" / "comparison.html")


def test_cli_report_and_compare(runs: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main(["report", str(runs["plain"]), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    assert (tmp_path / "r" / "figures" / "loss_curves.png").is_file()  # Markdown links resolve
    md = read(tmp_path / "r" / "report.md")
    for link in [part.split(")")[0] for part in md.split("](")[1:]]:
        assert (tmp_path / "r" / link).is_file(), link
    assert main(["compare", str(runs["plain"])]) == 2
    assert "at least two" in capsys.readouterr().err
    # the verdict and the score table on the terminal, not only the page's path
    again = shutil.copytree(runs["plain"], tmp_path / "again")
    assert main(["--quiet", "compare", str(runs["plain"]), str(again), "--out",
                 str(tmp_path / "cmp")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    verdict = f"{runs['plain'].name} vs again: No significant difference between"
    assert verdict in out
    table = out.split("Metric (test part)")[1]
    assert "Accuracy" in table and "Balanced accuracy" in table
    assert str(tmp_path / "cmp" / "comparison.html") in out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no run folder named" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a complete facecls run folder" in capsys.readouterr().err


def test_report_failure_is_logged_not_raised(tmp_path: Path) -> None:
    messages: list[str] = []
    assert write_report_safely(tmp_path, messages.append) is None
    assert messages and messages[0].startswith("warning: report not written")


def test_md_escape() -> None:
    assert md_escape("a|b") == "a\\|b"
    assert md_escape(EVIL) == "&lt;img src=x onerror=alert(1)&gt;"
    assert md_escape("[x](y) *z*") == "\\[x\\](y) \\*z\\*"


def test_clustered_classes_puts_confused_classes_together() -> None:
    cm = np.diag([20] * 6)
    for a, b in ((0, 3), (1, 4), (2, 5)):
        cm[a, b] = cm[b, a] = 8 - a
    order = clustered_classes(cm)
    assert sorted(order) == list(range(6))
    position = {c: i for i, c in enumerate(order)}
    for a, b in ((0, 3), (1, 4), (2, 5)):
        assert abs(position[a] - position[b]) == 1
    assert clustered_classes(np.diag([5, 5])) == []
    assert len(clustered_classes(np.ones((60, 60), dtype=np.int64), max_classes=40)) == 40


# ---- in a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from tests.browser import Chromium, require_chromium

    chromium = Chromium(require_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_report_in_chromium(runs: dict[str, Path], browser, tmp_path: Path) -> None:
    report = runs["plain"] / "report.html"
    browser.open(report)
    assert browser.problems() == []  # no console error, no exception, no alert
    own = report.resolve().as_uri()
    assert [u for u in browser.requests() if u != own and not u.startswith("data:")] == []
    text = browser.evaluate("document.body.innerText")
    assert EVIL in text and QUOTES in text
    assert browser.evaluate("document.querySelectorAll('img[src=\"x\"]').length") == 0
    # Sorting: click the Recall header (descending first), then again (ascending).
    metrics = json.loads(read(runs["plain"] / "metrics.json"))
    recalls = [r["recall"] for r in metrics["test"]["per_class"]]
    first = "document.querySelector('#per-class tbody tr').cells[6].getAttribute('data-value')"
    browser.evaluate("document.querySelectorAll('#per-class th')[6].click()")
    assert float(browser.evaluate(first)) == pytest.approx(max(recalls))
    browser.evaluate("document.querySelectorAll('#per-class th')[6].click()")
    assert float(browser.evaluate(first)) == pytest.approx(min(recalls))
    browser.evaluate("facecls.sort('per-class', 0, false)")
    names = browser.evaluate(
        "Array.from(document.querySelectorAll('#per-class tbody tr')).map(r => r.cells[0].textContent)"
    )
    assert names == sorted(names, key=str.lower)
    assert browser.evaluate("facecls.filter('per-class', 'onerror')") == 1
    assert browser.evaluate("facecls.filter('per-class', '')") == len(recalls)
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 20_000


def test_strangers_section_in_chromium(runs: dict[str, Path], browser, tmp_path: Path) -> None:
    """The open-set section (openset.json from evaluate --strangers) renders self-contained,
    also in the shareable version, which names no stranger photo."""
    from facecls.atomic import write_json
    from facecls.inference.strangers import open_set_figures

    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    rng = np.random.default_rng(0)
    known_logits, stranger_logits = rng.normal(size=(40, 5)) * 3, rng.normal(size=(60, 5))
    methods = open_set_figures(
        known_logits, rng.normal(size=(40, 8)), known_logits.argmax(1),
        stranger_logits, rng.normal(size=(60, 8)), None, {"msp": 0.5, "energy": 2.0},
    )  # fmt: skip
    secret = "/secret/strangers/face.jpg"
    write_json(run / "openset.json", {
        "knowns": {"images": 40, "accuracy": 1.0},
        "strangers": {"images": 60, "skipped": [{"path": secret, "reason": "x"}],
                      "left_out_named_like_trained": 0},
        "method": "msp", "acceptance": 0.95, "target_fpir": 0.01, "methods": methods,
    })  # fmt: skip
    for shareable in (False, True):
        page = write_report(run, tmp_path / f"out-{shareable}", shareable=shareable)
        browser.open(page)
        assert browser.problems() == []
        assert [u for u in browser.requests() if not u.startswith(("data:", "file:"))] == []
        rows = browser.evaluate("document.querySelectorAll('#openset-table tbody tr').length")
        assert rows == 2  # msp and energy: this model has no centroids
        assert browser.evaluate("document.querySelector('#openset img.plot') !== null")
        assert browser.evaluate("document.querySelector('nav a[href=\"#openset\"]') !== null")
        assert secret not in read(page)
    browser.screenshot(tmp_path / "strangers.png")


def test_comparison_in_chromium(runs: dict[str, Path], browser, tmp_path: Path) -> None:
    page = write_comparison([runs["plain"], runs["weighted"]], tmp_path / "cmp")
    browser.open(page)
    assert browser.problems() == []
    assert [u for u in browser.requests() if not u.startswith(("data:", "file:"))] == []
    assert "plain vs weighted" in browser.evaluate("document.body.innerText")
    assert browser.evaluate("document.querySelectorAll('a.run-page').length") == 2
    assert browser.evaluate("document.querySelector('#losses img.plot') !== null")
    shot = browser.screenshot(tmp_path / "comparison.png")
    assert shot.stat().st_size > 20_000


def test_findings_name_collapse_and_unfinished_training() -> None:
    from facecls.config import RunConfig, TrainConfig
    from facecls.report.findings import findings
    from facecls.report.run_data import RunData

    def run(best_epochs: list[int], epochs: int = 10) -> RunData:
        return RunData(
            run_dir=Path("r"), config=RunConfig(train=TrainConfig(epochs=epochs)),
            metrics={"cv": {"best_epochs": best_epochs, "mean_std": {"balanced_accuracy": [0.5, 0.1]}}},
            data_report={}, folds={}, history=[], predictions=[], class_names=["ann", "bob", "cy"],
        )  # fmt: skip

    collapsed = np.array([[4, 0, 0], [8, 0, 0], [8, 0, 0]])  # everything predicted as "ann"
    found = findings(run([10, 10]), collapsed, {"head": 1.0, "few": 0.0})
    assert found[0].startswith("ann is predicted for 20 of the 20 test images but is only 4")
    assert "2 of the 3 identities in the test part are never predicted" in found[1]
    assert "still falling at the last epoch (10)" in found[2]
    assert "recalled at 100%, the few-image ones at 0%" in found[3]
    assert "folds disagree" in found[4]
    healthy = np.diag([5, 5, 5])
    assert findings(run([3, 4]), healthy, {"head": 0.9, "few": 0.85})[0].startswith(
        "The validation loss was lowest at epoch 3, 4 of 10"
    )


def test_table5_text_has_the_reports_accuracy_row_and_intervals() -> None:
    """demo's closing table: Table 5's Accuracy is the class average (correct / images of the
    identity), not overall accuracy, and each figure carries its 95 % interval where one exists."""
    from facecls.report.table5 import table5_text

    def result(class_avg: float, overall: float) -> dict:
        summary = {
            "class_avg_accuracy": class_avg, "class_avg_precision": 0.5,
            "class_avg_recall": class_avg, "class_avg_bcr": 0.4, "class_avg_aggregated": 0.45, "accuracy": overall,
            "balanced_accuracy": class_avg, "macro_f1": 0.3, "top5_accuracy": 0.9,
        }  # fmt: skip
        return {"test": {"summary": summary, "intervals_95": {"class_avg_accuracy": [0.05, 0.2]}}}

    text = table5_text({"a": result(0.125, 0.975), "b": result(0.5, 0.6)})
    lines = text.splitlines()
    assert lines[0] == "| Metric | a | b |"
    assert lines[2] == "| Accuracy (class avg.) | 0.125 [0.050, 0.200] | 0.500 [0.050, 0.200] |"
    assert "| Overall accuracy (correct / images) | 0.975 | 0.600 |" in lines
    old = result(0.1, 0.2)
    del old["test"]["summary"]["class_avg_accuracy"]  # a run written before the key existed
    assert "| Accuracy (class avg.) | – |" in table5_text({"old": old})


def test_look_alikes_with_hostile_names_on_the_report_and_the_card(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """The look-alike pairs a calibration records reach the report page, report.md and the model
    card as a table of names, escaped (the plain run has a hostile identity name); the note's
    command reads as code on the page, never as backticks."""
    from facecls.report.write import write_model_card

    run = tmp_path / "run"
    shutil.copytree(runs["plain"], run)
    model_json = run / "model" / "model.json"
    meta = json.loads(model_json.read_text())
    evil = meta["class_names"].index(EVIL)
    pairs = [{"person": evil, "as": 0, "score": 0.61, "photos": 2, "views": 1}]
    openset = meta["openset"]
    openset["rates"].setdefault(openset["method"], {})["look_alikes"] = pairs
    model_json.write_text(json.dumps(meta))
    html = read(write_report(run))
    md = read(run / "report.md")
    card = read(write_model_card(run))
    assert 'id="look-alikes"' in html and "<code>facecls calibrate --strangers</code>" in html
    assert "`facecls calibrate" not in html
    assert EVIL not in html and EVIL not in md and EVIL not in card
    other = md_escape(meta["class_names"][0])
    row = f"| &lt;img src=x onerror=alert(1)&gt; | {other} | 0.6100 | 2 (and 1 view) |"
    assert row in md and row in card
