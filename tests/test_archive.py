"""Contracts of safe archive extraction: cached once, all-or-nothing, nothing escapes, archive untouched."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from facecls.data import archive as archive_module
from facecls.data.archive import ArchiveError, archive_digest, extract_archive, is_archive

FILES = {"alice/1.jpg": b"a" * 1000, "alice/2.jpg": b"b" * 500, "bob/1.jpg": b"c" * 2000}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            _add_bytes(tar, name, data)
    return path


def _make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return path


def _tar_with_member(path: Path, info: tarfile.TarInfo) -> Path:
    """A tar.gz holding one ordinary file and then ``info`` (a link, device or odd path)."""
    with tarfile.open(path, "w:gz") as tar:
        _add_bytes(tar, "ok/1.jpg", b"fine")
        tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return path


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _assert_refused_cleanly(archive: Path, cache: Path, match: str) -> None:
    """Extraction raises naming the archive, and leaves no file anywhere in the cache."""
    with pytest.raises(ArchiveError, match=match) as caught:
        extract_archive(archive, cache)
    assert str(archive) in str(caught.value)
    # Not even an empty staging folder is left behind.
    assert not cache.exists() or list((cache / "archives").iterdir()) == []


# ---- normal extraction and reuse -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar.gz", "tgz", "tar", "zip"])
def test_extracts_and_reuses(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"faces.{kind}"
    if kind == "zip":
        _make_zip(path, FILES)
    else:
        _make_tar(path, FILES, "w" if kind == "tar" else "w:gz")
    cache = tmp_path / "cache"

    folder = extract_archive(path, cache)
    assert folder == cache / "archives" / archive_digest(path)[:16]
    assert {p: (folder / p).read_bytes() for p in FILES} == FILES
    assert _files_under(folder) == set(FILES) | {".complete"}
    assert [p.name for p in (cache / "archives").iterdir()] == [folder.name]  # no staging left
    mtime = (folder / "alice/1.jpg").stat().st_mtime_ns

    # The second call must not extract at all.
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-extracted a completed archive")

    monkeypatch.setattr(archive_module, "_extract_tar", fail)
    monkeypatch.setattr(archive_module, "_extract_zip", fail)
    assert extract_archive(path, cache) == folder
    assert (folder / "alice/1.jpg").stat().st_mtime_ns == mtime


def test_incomplete_folder_is_replaced(tmp_path: Path) -> None:
    path = _make_tar(tmp_path / "faces.tgz", FILES)
    cache = tmp_path / "cache"
    stale = cache / "archives" / archive_digest(path)[:16]
    (stale / "alice").mkdir(parents=True)
    (stale / "alice" / "half.jpg").write_bytes(b"partial")  # crash debris: no .complete marker
    folder = extract_archive(path, cache)
    assert _files_under(folder) == set(FILES) | {".complete"}


def test_archive_bytes_are_unchanged(tmp_path: Path) -> None:
    for path in (_make_tar(tmp_path / "a.tar.gz", FILES), _make_zip(tmp_path / "a.zip", FILES)):
        before = (archive_digest(path), path.stat().st_mtime_ns)
        extract_archive(path, tmp_path / "cache")
        assert (archive_digest(path), path.stat().st_mtime_ns) == before


def test_digest_is_sha256(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"abc")
    assert archive_digest(path) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_is_archive(tmp_path: Path) -> None:
    for name in ["a.tgz", "a.tar.gz", "A.TAR.GZ", "a.tar", "a.zip", "missing.zip"]:
        assert is_archive(tmp_path / name)
    for name in ["a.gz", "a.jpg", "a.tar.bz2", "zipped"]:
        assert not is_archive(tmp_path / name)
    (tmp_path / "folder.zip").mkdir()
    assert not is_archive(tmp_path / "folder.zip")


# ---- unsafe members ------------------------------------------------------------------------------


def test_parent_traversal_is_refused_and_nothing_escapes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    path = _make_tar(work / "evil.tgz", {"ok/1.jpg": b"fine", "../evil.txt": b"pwned"})
    cache = work / "cache"
    _assert_refused_cleanly(path, cache, r"'\.\./evil\.txt'.*'\.\.'")
    assert not any(p.name == "evil.txt" for p in tmp_path.rglob("*"))


def test_nested_traversal_is_refused(tmp_path: Path) -> None:
    path = _make_tar(tmp_path / "evil.tar", {"a/../../evil.txt": b"x"}, "w")
    _assert_refused_cleanly(path, tmp_path / "cache", r"'\.\.'")


def test_absolute_path_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "abs-evil.txt"
    info = tarfile.TarInfo(str(target))
    info.size = 3
    path = _tar_with_member(tmp_path / "abs.tgz", info)
    _assert_refused_cleanly(path, tmp_path / "cache", "absolute path")
    assert not target.exists()


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../../x", "inside.jpg"])
def test_symlink_member_is_refused(tmp_path: Path, link_target: str) -> None:
    info = tarfile.TarInfo("link")
    info.type = tarfile.SYMTYPE
    info.linkname = link_target
    path = _tar_with_member(tmp_path / "link.tgz", info)
    _assert_refused_cleanly(path, tmp_path / "cache", "refused member 'link': link member")


def test_hardlink_member_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("hard")
    info.type = tarfile.LNKTYPE
    info.linkname = "/etc/passwd"
    path = _tar_with_member(tmp_path / "hard.tgz", info)
    _assert_refused_cleanly(path, tmp_path / "cache", "link member")


@pytest.mark.parametrize("member_type", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_members_are_refused(tmp_path: Path, member_type: bytes) -> None:
    info = tarfile.TarInfo("dev")
    info.type = member_type
    path = _tar_with_member(tmp_path / "dev.tgz", info)
    _assert_refused_cleanly(path, tmp_path / "cache", "device or fifo")


def test_zip_parent_traversal_is_refused(tmp_path: Path) -> None:
    path = _make_zip(tmp_path / "evil.zip", {"ok.jpg": b"fine", "../evil.txt": b"pwned"})
    _assert_refused_cleanly(path, tmp_path / "cache", "'..'")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_backslash_traversal_is_refused(tmp_path: Path) -> None:
    path = _make_zip(tmp_path / "evil.zip", {"..\\evil.txt": b"pwned"})
    _assert_refused_cleanly(path, tmp_path / "cache", "'..'")


def test_zip_absolute_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "abs.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        # writestr() strips a leading '/', so write the raw ZipInfo name.
        info = zipfile.ZipInfo("x")
        info.filename = "/tmp/abs-evil.txt"
        bundle.writestr(info, b"pwned")
    _assert_refused_cleanly(path, tmp_path / "cache", "absolute path")


def test_zip_symlink_entry_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as bundle:
        info = zipfile.ZipInfo("link")
        info.create_system = 3  # Unix, so the high bits of external_attr are st_mode
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, "/etc/passwd")
    _assert_refused_cleanly(path, tmp_path / "cache", "symlink entry")


# ---- size caps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_declared_size_over_cap_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"big.{kind}"
    _make_zip(path, FILES) if kind == "zip" else _make_tar(path, FILES)
    total = sum(len(data) for data in FILES.values())
    with pytest.raises(ArchiveError, match="over the 3,000-byte limit"):
        extract_archive(path, tmp_path / "cache", max_bytes=3000)
    assert _files_under(tmp_path / "cache") == set()
    assert extract_archive(path, tmp_path / "cache", max_bytes=total).is_dir()


def test_bytes_actually_written_are_counted(tmp_path: Path) -> None:
    # Declared sizes can lie (a crafted header); the copy loop stops at the allowance regardless.
    with pytest.raises(ArchiveError, match="exceeds the archive size limit"):
        archive_module._stream_to_file(io.BytesIO(b"z" * 5000), tmp_path / "out", 4096, "arch")
    assert archive_module._stream_to_file(io.BytesIO(b"z" * 10), tmp_path / "ok", 10, "arch") == 10


# ---- bad archives --------------------------------------------------------------------------------


def test_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar.gz"
    path.write_bytes(os.urandom(4096))
    _assert_refused_cleanly(path, tmp_path / "cache", "corrupt or not a tar/zip")


def test_truncated_tar_gz(tmp_path: Path) -> None:
    whole = _make_tar(tmp_path / "whole.tgz", {"a.bin": os.urandom(50_000)}).read_bytes()
    path = tmp_path / "cut.tgz"
    path.write_bytes(whole[: len(whole) // 2])
    _assert_refused_cleanly(path, tmp_path / "cache", "corrupt")


def test_zip_with_corrupt_data(tmp_path: Path) -> None:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as bundle:
        bundle.writestr("a.bin", b"A" * 1000)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"A" * 100) + 10] = ord("B")  # flip one stored byte: CRC check must fail
    path.write_bytes(bytes(raw))
    _assert_refused_cleanly(path, tmp_path / "cache", "corrupt")


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not found"):
        extract_archive(tmp_path / "nope.zip", tmp_path / "cache")
