"""An option the chosen mode of a command would not use is refused in one line (or passed
through), never silently ignored: predict's photos / --video / --library, search's --gallery /
--library, index, serve without a model, calibrate by hand, people's listing, and the run options
of another remedy, schedule or split (and the ones tune searches)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facecls.cli import main
from tests.cli_helpers import one_error, photo


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--every", "2"], "--every 2 reads every N-th frame: it is for --video"),
        (["--library", "LIB", "--out", "p.csv"], "no CSV: --out p.csv is for photos or a video"),
        (["--library", "LIB", "--top-k", "3"], "each face's one name: --top-k is for photos"),
        (["--library", "LIB", "--every", "2"], "--every 2 reads every N-th frame"),
        (["--video", "clip.avi", "--top-k", "3"], "each face's top identity"),
        (["--video", "clip.avi", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--backend", "onnx", "--device", "cuda"], "--device cuda is for --backend torch"),
    ],
)
def test_predict_options_of_another_mode_are_refused(
    extra: list[str], says: str, untrained_bundle: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    photos = [] if {"--library", "--video"} & set(extra) else [str(photo(tmp_path / "a.png"))]
    assert main(["predict", str(untrained_bundle), *photos, *extra]) == 2
    assert says in one_error(capsys)
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "predictions.csv").exists()


def test_calibrate_by_hand_refuses_the_options_that_choose_from_data(
    untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(untrained_bundle, bundle)
    before = (bundle / "model.json").read_text()
    for extra in (["--fpir", "0.05"], ["--acceptance", "0.9"], ["--data", str(tmp_path)]):
        assert main(["calibrate", str(bundle), "--threshold", "0.5", *extra]) == 2
        assert f"--threshold 0.5 sets the threshold by hand: {extra[0]}" in one_error(capsys)
    assert (bundle / "model.json").read_text() == before  # nothing changed
    assert main(["--quiet", "calibrate", str(bundle), "--threshold", "0.5"]) == 0
    assert json.loads((bundle / "model.json").read_text()) != json.loads(before)


def test_search_and_index_options_of_the_other_mode_are_refused(
    untrained_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    face = photo(tmp_path / "g" / "a.png")
    model, lib, weights = str(untrained_bundle), str(tmp_path / "lib"), str(tmp_path / "w")
    cases = [
        (["search", model, str(face), "--gallery", str(face.parent), "--model", model],
         "search --model is for --library; with --gallery the model is the first argument"),
        (["search", model, str(face), "--gallery", str(face.parent), "--weights", weights],
         "search --weights is for --library"),
        (["search", str(face), "--library", lib, "--model", model, "--weights", weights],
         f"--weights {weights} is for a library made by a backbone alone, and --model {model}"),
        (["search", str(face), "--library", lib, "--require-digest"],
         "--require-digest checks a trained model's bundle: with --library it needs --model"),
        (["index", str(face), "--library", lib, "--model", model, "--weights", weights],
         f"--weights {weights} is for a library made by a backbone alone, and --model {model}"),
        (["index", str(face), "--library", lib, "--model", model, "--backbone", "sface"],
         f"--backbone sface is for a library made by a backbone alone, and --model {model}"),
    ]  # fmt: skip
    for argv, says in cases:
        assert main(argv) == 2, argv
        assert says in one_error(capsys)
    assert not (tmp_path / "lib").exists()


@pytest.mark.parametrize("option", ["--store", "--gallery", "--detect"])
def test_serve_without_a_model_refuses_the_model_options(option: str, tmp_path: Path) -> None:
    from facecls.service.serve import build_app

    given = {"--store": {"store": tmp_path}, "--gallery": {"gallery": tmp_path},
             "--detect": {"detect": True}}[option]  # fmt: skip
    with pytest.raises(ValueError, match=f"{option} is for the model's service"):
        build_app(None, library=str(tmp_path), **given)  # type: ignore[arg-type]


def test_people_all_is_for_the_listing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["people", str(tmp_path / "lib"), "--all", "name", "3", "Ada"]) == 2
    assert "people --all lists forgotten people too: it is for the listing" in one_error(capsys)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--tau", "2"], "--tau is a setting of --imbalance logit-adjust"),
        (["--imbalance", "sqrt", "--beta", "0.9"], "--beta is a setting of --imbalance effective"),
        (["--imbalance", "effective", "--drw-epoch", "1"], "--drw-epoch is a setting of --imb"),
        (["--unfreeze-epoch", "1"], "--unfreeze-epoch is a setting of --freeze backbone-then"),
        (["--split-column", "lfw8"], "--split-column is a setting of --split-file"),
    ],
)
def test_run_options_of_another_remedy_or_schedule_are_refused(
    extra: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    data = ["--data", str(tmp_path / "missing"), "--runs-dir", str(runs), "--epochs", "1"]
    for command in ("train", "cv"):
        assert main([command, *data, *extra]) == 2
        assert says in one_error(capsys)
    assert not runs.exists()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--lr", "0.01"], "--lr: facecls tune searches it"),
        (["--imbalance", "sqrt"], "--imbalance: facecls tune searches it"),
        (["--folds", "3"], "--folds 3 is for --mode cv"),
    ],
)
def test_tune_refuses_what_it_searches(
    extra: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    # --trials 0 would be refused too, after these: no trial ever runs here
    assert main(["tune", "--trials", "0", "--runs-dir", str(runs), *extra]) == 2
    assert says in one_error(capsys)
    assert not runs.exists()
