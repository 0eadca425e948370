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


def write_tls_files(root: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost: (ca, cert, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, public_key, signing_key, ca: bool, names=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("edge-verify test CA", "edge-verify test CA", ca_key.public_key(), ca_key, True)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = certificate("localhost", "edge-verify test CA", server_key.public_key(), ca_key, False, names)
    paths = root / "ca.crt", root / "server.crt", root / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@dataclass
class Mosquitto:
    """A broker on 127.0.0.1 that wants a user name and password: plain on ``port``, TLS on
    ``tls_port`` (server certificate signed by ``ca``)."""

    root: Path
    port: int
    users: dict[str, str]
    tls_port: int = 0
    ca: Path | None = None
    process: subprocess.Popen | None = None

    @classmethod
    def start_new(cls, users: dict[str, str], acl: str | None = None) -> Mosquitto:
        """``acl``: the text of an ACL file (mosquitto's ``acl_file``); None: every user may do anything."""
        root = Path(tempfile.mkdtemp(prefix="ev-mqtt-"))
        passwords = root / "passwd"
        for i, (name, password) in enumerate(users.items()):
            flags = ["-c"] if i == 0 else []
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", *flags, str(passwords), name, password], check=True, capture_output=True
            )
        port, tls_port = free_port(), free_port()
        ca, cert, key = write_tls_files(root)
        (root / "acl").write_text(acl or "")
        (root / "mosquitto.conf").write_text(
            f"allow_anonymous false\npassword_file {passwords}\npersistence false\nlog_dest stderr\n"
            + (f"acl_file {root / 'acl'}\n" if acl is not None else "")
            + f"listener {port} 127.0.0.1\n"
            f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        )
        if os.geteuid() == 0:
            try:
                info = pwd.getpwnam("mosquitto")
                for p in (root, passwords, root / "mosquitto.conf", root / "acl", ca, cert, key):
                    os.chown(p, info.pw_uid, info.pw_gid)
            except KeyError:
                pass
        broker = cls(root, port, users, tls_port, ca)
        broker.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(root / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=open(root / "log", "w")
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                for p in (port, tls_port):
                    socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
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
