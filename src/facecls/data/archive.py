"""Safe, cached extraction of tar and zip archives of face photos.

An archive is extracted once into ``<cache_dir>/archives/<first 16 hex of its sha256>/`` and reused
afterwards. Extraction is all-or-nothing: every member is checked before anything is written (no
paths outside the target, no links, no devices, a cap on total size), files are streamed into a
hidden staging folder, a ``.complete`` marker is written last and the folder is renamed into place,
so a crash never leaves a half-extracted folder that looks finished. The archive itself is only read.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO, NoReturn

MAX_ARCHIVE_BYTES: int = 20 * 1024**3
ARCHIVE_SUFFIXES: tuple[str, ...] = (".tgz", ".tar.gz", ".tar", ".zip")

_CHUNK_BYTES = 1024 * 1024
_COMPLETE_MARKER = ".complete"
_DIGEST_CHARS = 16
# What a damaged archive raises while its headers or data are read (gzip's BadGzipFile is an OSError).
_CORRUPT_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError)
_DEVICE_TYPES = frozenset({stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK})


class ArchiveError(Exception):
    """An archive that cannot be extracted safely; the message names the archive (and member)."""


def is_archive(path: Path) -> bool:
    """Say whether ``path`` names an archive facecls can extract, judged by its name alone.

    Args:
        path: Any path; it need not exist (a missing archive is reported by extract_archive).

    Returns:
        True when the name ends in one of ARCHIVE_SUFFIXES (case-insensitive) and it is not a folder.
    """
    path = Path(path)
    return path.name.lower().endswith(ARCHIVE_SUFFIXES) and not path.is_dir()


def archive_digest(path: Path) -> str:
    """Return the sha256 hex digest of a file, read in 1 MiB chunks so memory use stays flat."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def extract_archive(archive: Path, cache_dir: Path, max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Extract an archive into the cache once and return the extracted folder.

    Args:
        archive: A .tar, .tar.gz/.tgz (any tarfile compression) or .zip file; only read.
        cache_dir: Cache root; the result is ``cache_dir/archives/<first 16 hex of sha256>``.
        max_bytes: Cap on the total uncompressed size, checked against the declared member sizes
            before extracting and against the bytes actually written while extracting.

    Returns:
        The folder holding the archive's contents (plus the hidden ``.complete`` marker). A folder
        completed by an earlier call is returned without extracting again.

    Raises:
        ArchiveError: The archive is missing, unreadable, corrupt, not a tar or zip, holds a member
            that is unsafe (absolute or ``..`` path, link, device or fifo) or exceeds ``max_bytes``.
            Nothing is left behind in the cache when this is raised.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found or not a file")
    try:
        digest = archive_digest(archive)
    except OSError as error:
        raise ArchiveError(f"{archive}: cannot read archive ({error})") from error
    target = Path(cache_dir) / "archives" / digest[:_DIGEST_CHARS]
    if (target / _COMPLETE_MARKER).is_file():
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    # A hidden sibling on the same file system, so os.replace() is an atomic rename. Its name
    # carries the process id, so a later run can tell a killed extraction from a live one.
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent)
    )
    try:
        try:
            if _is_zip(archive):
                _extract_zip(archive, staging, max_bytes)
            else:
                _extract_tar(archive, staging, max_bytes)
        except _CORRUPT_ERRORS as error:
            raise ArchiveError(f"{archive}: corrupt or not a tar/zip archive ({error})") from error
        except OSError as error:
            raise ArchiveError(f"{archive}: extraction failed ({error})") from error
        (staging / _COMPLETE_MARKER).write_text(f"{digest}\n", encoding="utf-8")  # written last
        _move_into_place(archive, staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _remove_abandoned_staging(target: Path) -> None:
    """Delete staging folders of ``target`` left by a killed extraction (its process is gone;
    one without a process id in its name, from an older facecls, once a day old)."""
    for staging in target.parent.glob(f".{target.name}.partial-*"):
        match = re.match(rf"\.{target.name}\.partial-(\d+)-", staging.name)
        if match is None:
            abandoned = time.time() - staging.stat().st_mtime > 86400
        else:
            abandoned = not _process_alive(int(match.group(1)))
        if abandoned:
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier, abandoned attempt
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


def _is_zip(archive: Path) -> bool:
    """Trust a tar/zip suffix; sniff the content only for other names."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return True
    if name.endswith((".tar", ".tgz", ".tar.gz")):
        # A tar whose last member is a zip can look like a zip to is_zipfile(); the name decides.
        return False
    return zipfile.is_zipfile(archive)


def _move_into_place(archive: Path, staging: Path, target: Path) -> None:
    """Rename the finished staging folder to ``target``, tolerating a concurrent extraction."""
    if target.exists():
        if (target / _COMPLETE_MARKER).is_file():
            return  # another process finished first; its copy is identical
        # Only complete folders are ever renamed into place, so this one is stale debris.
        shutil.rmtree(target)
    try:
        os.replace(staging, target)
    except OSError as error:
        if not (target / _COMPLETE_MARKER).is_file():
            raise ArchiveError(
                f"{archive}: cannot move extraction into {target} ({error})"
            ) from error


def _extract_tar(archive: Path, staging: Path, max_bytes: int) -> None:
    """Check every tar member, then stream regular files and create folders under ``staging``."""
    with tarfile.open(archive, mode="r:*") as tar:
        members = tar.getmembers()  # reads every header; corrupt data fails here, before writing
        plan = []
        declared = 0
        for member in members:
            relative = _safe_relative_path(archive, member.name, staging)
            if member.issym() or member.islnk():
                _refuse(archive, member.name, f"link member (-> {member.linkname!r})")
            if member.ischr() or member.isblk() or member.isfifo():
                _refuse(archive, member.name, "device or fifo member")
            if not (member.isreg() or member.isdir()):
                _refuse(archive, member.name, "unsupported member type")
            if member.isreg():
                declared += member.size
            plan.append((member, relative))
        _check_declared_size(archive, declared, max_bytes)

        written = 0
        for member, relative in plan:
            if relative is None:
                continue
            destination = staging.joinpath(*relative.parts)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            source = tar.extractfile(member)
            if source is None:  # cannot happen for a regular member; keep the type checker honest
                _refuse(archive, member.name, "unreadable member")
            with source:
                written += _stream_to_file(
                    source, destination, max_bytes - written, f"{archive}: member {member.name!r}"
                )


def _extract_zip(archive: Path, staging: Path, max_bytes: int) -> None:
    """Check every zip entry, then stream files and create folders under ``staging``."""
    with zipfile.ZipFile(archive) as bundle:
        plan = []
        declared = 0
        for info in bundle.infolist():
            relative = _safe_relative_path(archive, info.filename, staging)
            # Unix zip tools keep st_mode in the high 16 bits of external_attr.
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if file_type == stat.S_IFLNK:
                _refuse(archive, info.filename, "symlink entry")
            if file_type in _DEVICE_TYPES:
                _refuse(archive, info.filename, "device or fifo entry")
            if info.flag_bits & 0x1:
                _refuse(archive, info.filename, "encrypted entry")
            if not info.is_dir():
                declared += info.file_size
            plan.append((info, relative))
        _check_declared_size(archive, declared, max_bytes)

        written = 0
        for info, relative in plan:
            if relative is None:
                continue
            destination = staging.joinpath(*relative.parts)
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            with bundle.open(info) as source:
                written += _stream_to_file(
                    source, destination, max_bytes - written, f"{archive}: member {info.filename!r}"
                )


def _safe_relative_path(archive: Path, name: str, staging: Path) -> PurePosixPath | None:
    """Return a member's path relative to the extraction folder, or None for the folder itself.

    Raises:
        ArchiveError: The name is absolute, has a ``..`` component, holds a NUL byte or would
            otherwise resolve outside ``staging``.
    """
    if "\x00" in name:
        _refuse(archive, name, "NUL byte in name")
    # Zips written on Windows may use backslashes; treat them as separators so they are checked too.
    posix_name = name.replace("\\", "/")
    is_drive_path = len(posix_name) >= 2 and posix_name[0].isalpha() and posix_name[1] == ":"
    if posix_name.startswith("/") or is_drive_path:
        _refuse(archive, name, "absolute path")
    parts = [part for part in posix_name.split("/") if part not in ("", ".")]
    if ".." in parts:
        _refuse(archive, name, "'..' path component escapes the extraction folder")
    if not parts:
        return None
    root = staging.resolve()
    if not root.joinpath(*parts).resolve().is_relative_to(root):
        _refuse(archive, name, "path resolves outside the extraction folder")
    return PurePosixPath(*parts)


def _check_declared_size(archive: Path, declared: int, max_bytes: int) -> None:
    """Refuse before writing anything when the members' own sizes add up past the cap."""
    if declared > max_bytes:
        raise ArchiveError(
            f"{archive}: members declare {declared:,} bytes uncompressed, "
            f"over the {max_bytes:,}-byte limit"
        )


def _stream_to_file(source: BinaryIO, destination: Path, allowance: int, where: str) -> int:
    """Copy ``source`` into a new file chunk by chunk, never writing more than ``allowance`` bytes.

    Declared sizes can lie, so the bytes really produced are counted too.

    Returns:
        The number of bytes written.

    Raises:
        ArchiveError: ``source`` yields more than ``allowance`` bytes.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with destination.open("wb") as sink:
        while chunk := source.read(_CHUNK_BYTES):
            written += len(chunk)
            if written > allowance:
                raise ArchiveError(f"{where}: uncompressed data exceeds the archive size limit")
            sink.write(chunk)
    return written


def _refuse(archive: Path, member: str, reason: str) -> NoReturn:
    """Raise the ArchiveError for an unsafe member, naming the archive and the member."""
    raise ArchiveError(f"{archive}: refused member {member!r}: {reason}")
