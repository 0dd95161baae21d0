"""Bad images: a messy folder trains on the rest, lists exactly the bad files with reasons, ignores
junk silently, refuses decompression bombs without allocating them, and is never modified."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO
from tests.offline import run_locally
from tests.test_images import _png_header_only

# name → what the reason must say. Exactly these five are listed; nothing else is.
BAD_FILES = {
    "truncated.jpg": "truncated or corrupt",
    "empty.jpg": "empty file (0 bytes)",
    "notes.jpg": "not an image",
    "huge.png": "image too large",
    "layers.psd": "unsupported file type: .psd",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def messy_folder(clean: Path, root: Path) -> Path:
    """A copy of ``clean`` with the five bad files in one identity, plus junk everywhere."""
    data = root / "faces"
    shutil.copytree(clean, data)
    identities = sorted(p for p in data.iterdir())
    ident = identities[0]
    jpeg = io.BytesIO()
    Image.open(next(ident.glob("*.png"))).convert("RGB").save(jpeg, format="JPEG")
    (ident / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (ident / "empty.jpg").write_bytes(b"")
    (ident / "notes.jpg").write_text("meeting notes, saved with the wrong extension\n")
    _png_header_only(ident / "huge.png", 30000, 30000)
    (ident / "layers.psd").write_bytes(b"8BPS" + b"\x00" * 64)  # HEIC is read since issue 24
    good = next(identities[1].glob("*.png")).read_bytes()
    junk = {
        data / ".DS_Store": b"\x00\x00\x00\x01Bud1",
        ident / ".DS_Store": b"\x00\x00\x00\x01Bud1",
        ident / "Thumbs.db": b"\xd0\xcf\x11\xe0",
        ident / "desktop.ini": b"[.ShellClassInfo]",
        ident / "._face.jpg": b"\x00\x05\x16\x07AppleDouble",
        ident / ".hidden.png": good,
        data / ".ipynb_checkpoints" / "face-checkpoint.png": good,
        ident / ".ipynb_checkpoints" / "face-checkpoint.png": good,
        data / "__MACOSX" / ident.name / "._x.png": b"\x00\x05\x16\x07",
        data / ".git" / "HEAD": b"ref: refs/heads/main\n",
    }
    for path, content in junk.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return data


@pytest.mark.slow
def test_messy_folder_trains_lists_exactly_the_bad_files_and_is_untouched(
    synthetic_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    data = messy_folder(synthetic_folder, tmp_path)
    runs = tmp_path / "runs"
    common = ["--data", str(data), "--image-size", "32", "--epochs", "1", "--runs-dir", str(runs)]
    codes = run_locally(
        [
            ["train", *common, "--name", "train"],
            ["cv", *common, "--folds", "2", "--name", "cv"],
            ["evaluate", str(runs / "train")],
            ["predict", str(runs / "train"), str(data), "--out", str(tmp_path / "pred.csv")],
            ["report", str(runs / "train")],
        ],
        data,
        monkeypatch,
        quiet=False,
    )
    assert codes == [0, 0, 0, 0, 0]
    out = capsys.readouterr().out
    assert "Skipped 5 file(s) that could not be used:" in out
    ident = sorted(p for p in data.iterdir() if not p.name.startswith(("_", ".")))[0].name
    for run in ("train", "cv"):
        report = json.loads((runs / run / "data_report.json").read_text())
        listed = {item["path"]: item["reason"] for item in report["skipped_files"]}
        assert set(listed) == {f"{ident}/{name}" for name in BAD_FILES}
        for name, reason in BAD_FILES.items():
            assert reason in listed[f"{ident}/{name}"], (name, listed[f"{ident}/{name}"])
            assert f"{ident}/{name}: {listed[f'{ident}/{name}']}" in out
        assert set(report["images_per_identity"]) == {
            p.name for p in synthetic_folder.iterdir()
        }  # no junk identity
        assert report["images"] == sum(1 for _ in synthetic_folder.rglob("*.png"))
    for junk in (".DS_Store", "Thumbs.db", "desktop.ini", ".hidden.png", "checkpoint", "MACOSX"):
        assert junk not in out
    # predict: one row per file, the bad ones as error rows with their reason, no junk row.
    with (tmp_path / "pred.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    errors = {Path(r["path"]).relative_to(data).as_posix(): r["reason"] for r in rows
              if r["decision"] == "error"}  # fmt: skip
    assert set(errors) == {f"{ident}/{name}" for name in BAD_FILES}
    for name, reason in BAD_FILES.items():
        assert reason in errors[f"{ident}/{name}"], (name, errors[f"{ident}/{name}"])
    assert len(rows) == len(BAD_FILES) + sum(1 for _ in synthetic_folder.rglob("*.png"))
    assert all(r["decision"] in ("known", "unknown") for r in rows if r["reason"] == "")
    assert (runs / "train" / "report.html").is_file()


def _png_bomb(path: Path, side: int) -> Path:
    """A real 8-bit grey PNG of side x side black pixels: tiny on disk, side² bytes decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return len(data).to_bytes(4, "big") + kind + data + crc.to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    packer = zlib.compressobj(6)
    row = bytes(side + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.skipif(sys.platform != "linux", reason="address-space limits via /proc and rlimit")
def test_decompression_bomb_is_refused_without_allocating_it(tmp_path: Path) -> None:
    # 12000² = 144 M pixels: over facecls's 64 M limit, under Pillow's own bomb error, so this
    # is facecls's check at work. The child process gets 96 MiB of address space to spare:
    # decoding would need 144 MB for the grey pixels alone (432 MB as RGB).
    bomb = _png_bomb(tmp_path / "bomb.png", 12000)
    assert bomb.stat().st_size < 1_000_000
    # images.py alone (numpy + Pillow) is loaded, not the facecls package, which imports torch.
    images_py = REPO / "src" / "facecls" / "data" / "images.py"
    script = textwrap.dedent(f"""
        import importlib.util, resource
        spec = importlib.util.spec_from_file_location("images", {str(images_py)!r})
        images = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(images)
        ImageError, load_rgb = images.ImageError, images.load_rgb
        pages = int(open("/proc/self/statm").read().split()[0])
        spare = 96 * 2**20
        limit = pages * resource.getpagesize() + spare
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        try:
            load_rgb({str(bomb)!r}, 64)
            print("decoded")
        except ImageError as error:
            print("refused:", error)
        except MemoryError:
            print("tried to allocate")
        try:
            bytearray(12000 * 12000)
            print("budget holds the pixels")
        except MemoryError:
            print("budget cannot hold the pixels")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines == [
        "refused: image too large: 12000x12000 pixels exceeds the 64,000,000-pixel limit",
        "budget cannot hold the pixels",
    ], done.stdout + done.stderr
