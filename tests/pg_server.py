"""A throwaway PostgreSQL server for the library tests: ``initdb`` in a folder, then ``pg_ctl``.

``.ci/run`` starts one (``python tests/pg_server.py start DIR`` prints its URL into
``FACECLS_TEST_POSTGRES``) and stops it after the tests; without that variable the test fixture
starts its own the same way, so a local ``pytest`` runs the PostgreSQL tests too. Logins over
TCP need the password (the wrong-credentials test relies on it).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

USER, PASSWORD = "facecls", "facecls-test"


def _binaries() -> Path:
    found = shutil.which("pg_ctl") or shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not versions:
        raise RuntimeError(
            "PostgreSQL is not installed (initdb not found): .ci/run installs Debian's "
            "postgresql, or set FACECLS_TEST_POSTGRES to a server's URL"
        )
    return Path(versions[-1]).parent


def _as_owner(folder: Path) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return []
    shutil.chown(folder, "postgres", "postgres")
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(folder: Path) -> str:
    """Start a server whose data live in ``folder`` (made here); answers its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    data, bin_dir = folder / "data", _binaries()
    owner = _as_owner(folder)
    pwfile = folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if owner:
        shutil.chown(pwfile, "postgres", "postgres")
    subprocess.run(
        [*owner, str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}",
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*owner, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
         "-o", options, "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    (folder / "port").write_text(str(port))
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"


def stop(folder: Path) -> None:
    """Stop the server started in ``folder`` (its data stay until the folder is removed)."""
    subprocess.run(
        [*_as_owner(folder), str(_binaries() / "pg_ctl"), "-D", str(folder / "data"), "-m",
         "fast", "-w", "stop"],
        check=False, capture_output=True,
    )  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: python tests/pg_server.py start|stop FOLDER")
    if sys.argv[1] == "start":
        print(start(Path(sys.argv[2])))
    else:
        stop(Path(sys.argv[2]))
