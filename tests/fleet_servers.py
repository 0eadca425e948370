"""A real PostgreSQL 15 and a real mosquitto 2, started for the fleet tests and benchmark (and torn
down after): PostgreSQL in a temporary directory owned by ``postgres`` (initdb refuses root), on a
free local port with fsync off; mosquitto on 127.0.0.1 with a password file."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_missing() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 not installed ({PG_BIN}/initdb absent: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run initdb as"
    return None


def mosquitto_missing() -> str | None:
    if not (Path(MOSQUITTO).exists() and Path(MOSQUITTO_PASSWD).exists()):
        return "mosquitto not installed (apt-get install mosquitto)"
    return None


def _as_owner(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@dataclass
class Postgres:
    """A throw-away cluster: ``dsn`` is its superuser's (password authentication over TCP)."""

    root: Path
    port: int
    password: str
    user: str | None  # the OS user that owns the cluster (None: this process's)

    @classmethod
    def start_new(cls) -> Postgres:
        user = "postgres" if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="ev-pg-"))
        password = os.urandom(12).hex()
        (root / "pw").write_text(password + "\n")
        if user:
            info = pwd.getpwnam(user)
            for p in (root, root / "pw"):
                os.chown(p, info.pw_uid, info.pw_gid)
        subprocess.run(
            _as_owner(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(root / "data"),
                    "-U",
                    "postgres",
                    "--pwfile",
                    str(root / "pw"),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                user,
            ),
            check=True,
            capture_output=True,
        )
        server = cls(root, free_port(), password, user)
        server.start()
        return server

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=postgres user=postgres password={self.password}"

    def start(self) -> None:
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c fsync=off -c unix_socket_directories={self.root}"
        )
        subprocess.run(
            _as_owner(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-l",
                    str(self.root / "log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
                self.user,
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_owner(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"], self.user
            ),
            capture_output=True,
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Mosquitto:
    """A broker on 127.0.0.1 that wants a user name and password."""

    root: Path
    port: int
    users: dict[str, str]
    process: subprocess.Popen | None = None

    @classmethod
    def start_new(cls, users: dict[str, str]) -> Mosquitto:
        root = Path(tempfile.mkdtemp(prefix="ev-mqtt-"))
        passwords = root / "passwd"
        for i, (name, password) in enumerate(users.items()):
            flags = ["-c"] if i == 0 else []
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", *flags, str(passwords), name, password], check=True, capture_output=True
            )
        port = free_port()
        (root / "mosquitto.conf").write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\npersistence false\n"
            "log_dest stderr\n"
        )
        if os.geteuid() == 0:
            try:
                info = pwd.getpwnam("mosquitto")
                for p in (root, passwords, root / "mosquitto.conf"):
                    os.chown(p, info.pw_uid, info.pw_gid)
            except KeyError:
                pass
        broker = cls(root, port, users)
        broker.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(root / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=open(root / "log", "w")
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return broker
            except OSError:
                if broker.process.poll() is not None:
                    break
                time.sleep(0.05)
        log = (root / "log").read_text()
        broker.destroy()
        raise RuntimeError(f"mosquitto did not start: {log[-500:]}")

    def destroy(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
