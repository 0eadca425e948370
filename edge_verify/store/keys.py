"""The store key: where it comes from (environment or a 0600 key file), the subkeys derived from it,
and the record that proves a key is this store's."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_verify.errors import StoreError, TemplateIntegrityError

log = logging.getLogger(__name__)
KEY_ENV = "EDGE_VERIFY_KEY"
_KEY_CHECK = (b"edge-verify key check", b"key-check")


class Keys:
    """AES-256-GCM for templates, and HMAC keys for settings and the audit chain, from one key."""

    def __init__(self, key: bytes):
        self.aead = AESGCM(key)
        self.settings = _derive(key, b"edge-verify settings")
        self.audit = _derive(key, b"edge-verify audit chain")

    def check_record(self) -> str:
        """A new key-check record (hex): only this key decrypts it."""
        nonce = os.urandom(12)
        return (nonce + self.aead.encrypt(nonce, _KEY_CHECK[0], _KEY_CHECK[1])).hex()

    def matches(self, record: str) -> bool:
        blob = bytes.fromhex(record)
        try:
            self.aead.decrypt(blob[:12], blob[12:], _KEY_CHECK[1])
        except (InvalidTag, ValueError):
            return False
        return True


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(key)


def parse_key(text: str, origin: str) -> bytes:
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        key = b""
    if len(key) != 32:
        raise StoreError(f"{origin}: key must be 32 bytes as 64 hex digits or base64")
    return key


def wrong_key(store_path: Path, key_file: Path) -> TemplateIntegrityError:
    origin = "$" + KEY_ENV if os.environ.get(KEY_ENV) else key_file
    return TemplateIntegrityError(f"{store_path}: wrong key (from {origin}) for this store")


def load_key(key_file: Path, store_path: Path, create: bool) -> bytes:
    """The store key: from $EDGE_VERIFY_KEY, else from ``key_file``. With ``create`` (a new store)
    a missing key file is created (0600, atomically); otherwise it is an error that names the fix,
    never a fresh key beside a store made with another one."""
    env = os.environ.get(KEY_ENV)
    if env is not None:
        if not env.strip():
            raise StoreError(f"${KEY_ENV} is set but empty: set it to the store key, or unset it to use {key_file}")
        return parse_key(env, f"${KEY_ENV}")
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        if create:
            return _create_key(key_file)
        raise StoreError(
            f"{key_file}: key file missing; the store {store_path} needs the key it was made with: restore the "
            f"key file from your backup (or set ${KEY_ENV}); to start afresh, move the store away"
        ) from None
    except OSError as exc:
        raise StoreError(f"{key_file}: cannot read the key file ({exc.strerror})") from None
    with os.fdopen(fd) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise StoreError(f"{key_file}: not a regular file")
        text = f.read(4096)
    if info.st_mode & 0o077:
        log.warning(
            "%s: key file is readable by other users (mode %03o); run: chmod 600 %s",
            key_file,
            info.st_mode & 0o777,
            key_file,
        )
    return parse_key(text, str(key_file))


def _create_key(key_file: Path) -> bytes:
    """Write a new random key: a complete 0600 file appears under ``key_file`` at once (link of a
    temporary file), and a process that loses the race reads the winner's key."""
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = AESGCM.generate_key(bit_length=256)
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            return parse_key(key_file.read_text(), str(key_file))
    finally:
        tmp.unlink(missing_ok=True)
    return key
