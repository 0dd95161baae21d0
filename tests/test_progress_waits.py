"""No wait without a word: the commands that can run for minutes (embed, predict --video,
search's first pass over its gallery, calibrate, index) say where they are, a plain line every
tenth when the console is not a terminal (as here), and nothing with ``--quiet``.
"""

from __future__ import annotations

import logging
import re
import shutil

import pytest

from facecls.cli import main
from facecls.progress import bar
from tests import serve_fixtures
from tests.test_video import make_clip

people, tiny_run = serve_fixtures.people, serve_fixtures.tiny_run  # session-scoped fixtures


def _progress(caplog: pytest.LogCaptureFixture, desc: str) -> list[str]:
    return [m for m in caplog.messages if re.match(rf"{desc}: \d+% \(\d+/\d+ ", m)]


def _run(caplog: pytest.LogCaptureFixture, args: list[str], desc: str) -> tuple[list, list]:
    """The progress lines of ``args``, then of ``--quiet args``."""
    shown = []
    for quiet in ([], ["--quiet"]):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="facecls"):
            assert main([*quiet, *args]) == 0
        shown.append(_progress(caplog, desc))
    return shown[0], shown[1]


def test_embed_search_and_video_say_where_they_are(tiny_run, people, tmp_path, caplog) -> None:
    photos = people["train"] / "person_01"  # 20+ photos: a line at each tenth
    count = sum(1 for _ in photos.iterdir())
    lines, quiet = _run(caplog, ["embed", str(tiny_run), str(photos), "--out",
                                 str(tmp_path / "e.safetensors")], "embed")  # fmt: skip
    assert len(lines) == 10 and lines[-1].startswith(f"embed: 100% ({count}/{count} photo")
    assert quiet == []

    query = sorted(photos.iterdir())[0]
    for gallery in (tmp_path / "g1", tmp_path / "g2"):  # a fresh gallery each
        shutil.copytree(photos, gallery)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="facecls"):
        main(["search", str(tiny_run), str(query), "--gallery", str(tmp_path / "g1")])
        first = _progress(caplog, "gallery")
        caplog.clear()
        main(["search", str(tiny_run), str(query), "--gallery", str(tmp_path / "g1")])
        cached = _progress(caplog, "gallery")
        main(["--quiet", "search", str(tiny_run), str(query), "--gallery", str(tmp_path / "g2")])
    assert len(first) == 10 and first[-1].startswith(f"gallery: 100% ({count}/{count} photo")
    assert cached == [] and _progress(caplog, "gallery") == []  # from the cache; --quiet

    clip = make_clip(sorted(photos.iterdir())[:12], tmp_path / "clip.avi")
    lines, quiet = _run(caplog, ["predict", str(tiny_run), "--video", str(clip), "--out",
                                 str(tmp_path / "v.csv")], "video")  # fmt: skip
    assert len(lines) == 10 and lines[-1].startswith("video: 100% (12/12 frame")
    assert quiet == []


def test_calibrate_says_where_it_is(tiny_run, tmp_path, caplog) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")  # calibrate writes into the run
    lines, quiet = _run(caplog, ["calibrate", str(run)], "calibrate")
    assert lines and lines[-1].startswith("calibrate: 100%") and quiet == []


def test_a_step_of_unknown_length_logs_a_count(monkeypatch, caplog) -> None:
    """A webcam has no frame count: off a terminal it logs how far it got every so often."""
    import facecls.progress as progress

    monkeypatch.setattr(progress, "UNKNOWN_EVERY_S", 0.0)
    counter = bar(0, "video", True, unit="frame", terminal=False)
    with caplog.at_level(logging.INFO, logger="facecls"):
        counter.update(1)
        counter.update(1)
    assert [m.split(" (")[0] for m in caplog.messages] == ["video: 1 frame", "video: 2 frame"]
    silent = bar(0, "video", False, unit="frame", terminal=False)
    silent.update(5)
    assert len(caplog.messages) == 2


def test_index_says_where_it_is(tmp_path, caplog) -> None:
    from facecls.library.embedder import facenet_embedder
    from facecls.library.index import index_photos
    from tests.library_photos import build_collection
    from tests.test_library_index import WEIGHTS

    root = tmp_path / "photos"
    build_collection(root)
    embedder = facenet_embedder(WEIGHTS, "cpu")
    with caplog.at_level(logging.INFO, logger="facecls"):
        index_photos([root], tmp_path / "lib", embedder=embedder, log=lambda _m: None,
                     show_progress=True)  # fmt: skip
        lines = _progress(caplog, "index")
        caplog.clear()
        index_photos([root], tmp_path / "lib2", embedder=embedder, log=lambda _m: None)
    assert lines and lines[-1].startswith("index: 100% (8/8 photo")
    assert _progress(caplog, "index") == []
