"""A throw-away PostgreSQL server on loopback for the multi-worker search tests (Debian's ``postgresql`` package).

``python -m tests.distributed.postgres start`` creates a cluster in a fresh temp directory (``initdb -A trust``,
listening on 127.0.0.1 only, a free port), creates database ``nas_test`` and prints shell lines exporting
``NAS_TEST_POSTGRES_URL`` and ``NAS_TEST_POSTGRES_DIR``; ``python -m tests.distributed.postgres stop <dir>`` stops
it and removes the directory. ``.ci/run`` uses both; the tests start their own server the same way when the
variable is unset. PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DB = "nas_test"


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and Path(found).resolve().with_name("pg_ctl").exists():
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name.split(".")[0]))
    return Path(dirs[-1]) if dirs and (Path(dirs[-1]) / "initdb").exists() else None


def _as_user() -> list[str] | None:
    """Command prefix running a program as a non-root user (empty when not root), None if impossible."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TempPostgres:
    directory: Path
    port: int
    bindir: Path
    prefix: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DB}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, str(self.bindir / tool), *args], check=True, capture_output=True, text=True,
                       timeout=120)

    @classmethod
    def start(cls) -> TempPostgres:
        """Start a server; raises RuntimeError naming what is missing when it cannot."""
        bindir, prefix = _bindir(), _as_user()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        if prefix is None:
            raise RuntimeError("running as root without a 'postgres' user or runuser to drop privileges")
        directory = Path(tempfile.mkdtemp(prefix="nas-test-pg-"))
        if prefix:
            shutil.chown(directory, user="postgres")
        server = cls(directory, _free_port(), bindir, prefix)
        try:
            server._run("initdb", "-D", str(directory / "data"), "-A", "trust", "-U", "postgres", "--no-sync",
                        "-E", "UTF8")
            opts = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {directory} -c fsync=off"
            server._run("pg_ctl", "-D", str(directory / "data"), "-l", str(directory / "log"), "-w", "-o", opts,
                        "start")
            server._run("createdb", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", DB)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", "") or ""
            server.stop()
            raise RuntimeError(f"could not start PostgreSQL: {exc} {detail.strip()[-500:]}") from None
        return server

    def stop(self) -> None:
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["start"]:
        server = TempPostgres.start()
        print(f"export NAS_TEST_POSTGRES_URL={server.url}")
        print(f"export NAS_TEST_POSTGRES_DIR={server.directory}")
        return 0
    if argv[:1] == ["stop"] and len(argv) == 2:
        bindir = _bindir()
        if bindir is not None and _as_user() is not None:
            TempPostgres(Path(argv[1]), 0, bindir, _as_user() or []).stop()
        return 0
    print("usage: python -m tests.distributed.postgres start | stop <dir>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
