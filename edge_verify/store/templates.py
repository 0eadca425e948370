"""Templates: one AES-256-GCM encrypted vector per identity, bound (associated data) to the identity
and the bundle fingerprint that made it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_verify.errors import FingerprintMismatchError, TemplateIntegrityError, UsageError
from edge_verify.store.db import Database

MAX_NAME_LENGTH = 128
# Template format 2: the unnormalised mean of unit enrolment embeddings (matcher.mean_template).
# Format 1 (edge-verify 0.1) renormalised the mean, which scores higher; such templates made from
# several frames must be re-enrolled. From one frame both formats are the same vector.
TEMPLATE_FORMAT = 2
_ROW = "identity, fingerprint, nonce, ciphertext, frames, format"


@dataclass(frozen=True)
class TemplateInfo:
    identity: str
    fingerprint: str
    frames: int
    created: float
    updated: float
    bundle: str = ""  # name and version of the bundle that made it, as pinned; "" if unknown


def check_identity_name(name: str) -> str:
    """An identity name: 1..128 printable characters, no control or bidi-override characters, no
    surrounding spaces (a name must not be able to forge a line of output). UsageError otherwise."""
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_NAME_LENGTH
        or not name.isprintable()
        or name != name.strip()
    ):
        raise UsageError(
            f"invalid identity name {ascii(name)}: use 1-{MAX_NAME_LENGTH} printable characters, "
            "no control characters and no leading or trailing spaces"
        )
    return name


class Templates:
    def __init__(self, db: Database, aead: AESGCM):
        self.db = db
        self._aead = aead

    @staticmethod
    def aad(identity: str, fingerprint: str) -> bytes:
        return identity.encode() + b"\0" + fingerprint.encode()

    def put(self, identity: str, vector: np.ndarray, fingerprint: str, frames: int, replace: bool) -> None:
        """Write the template of ``identity`` (in the open transaction, or in its own); an existing one
        is replaced only with ``replace`` (checked inside the transaction: two enrolments cannot race)."""
        check_identity_name(identity)
        vector = np.asarray(vector, np.float32).reshape(-1)
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, vector.tobytes(), self.aad(identity, fingerprint))
        now = time.time()
        with self.db.transaction():
            row = self.db.execute("SELECT created FROM templates WHERE identity = ?", (identity,)).fetchone()
            if row is not None and not replace:
                raise UsageError(f"{identity!r} is already enrolled; add --replace to overwrite the template")
            self.db.execute(
                "INSERT OR REPLACE INTO templates"
                " (identity, fingerprint, nonce, ciphertext, frames, created, updated, format)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (identity, fingerprint, nonce, ciphertext, int(frames), row[0] if row else now, now, TEMPLATE_FORMAT),
            )

    def row(self, identity: str) -> tuple | None:
        return self.db.execute(f"SELECT {_ROW} FROM templates WHERE identity = ?", (identity,)).fetchone()

    def rows(self, fingerprint: str | None = None) -> list[tuple]:
        if fingerprint is None:
            return self.db.execute(f"SELECT {_ROW} FROM templates ORDER BY identity").fetchall()
        return self.db.execute(
            f"SELECT {_ROW} FROM templates WHERE fingerprint = ? ORDER BY identity", (fingerprint,)
        ).fetchall()

    def decrypt(self, row: tuple, fingerprint: str | None = None) -> np.ndarray:
        """The vector of ``row`` (authenticated); made by a bundle other than ``fingerprint`` (or in a
        format to re-enrol): FingerprintMismatchError."""
        identity, stored_fp, nonce, ciphertext, frames, fmt = row[:6]
        try:
            plain = self._aead.decrypt(nonce, ciphertext, self.aad(identity, stored_fp))
        except InvalidTag:
            raise TemplateIntegrityError(
                f"template of {identity!r} failed authentication (tampered or corrupted); "
                f"`edge-verify remove {identity}` and enroll again"
            ) from None
        if fingerprint is not None and stored_fp != fingerprint:
            raise FingerprintMismatchError(
                f"{identity!r} was enrolled with another model (fingerprint {stored_fp[:12]}); "
                f"re-enroll with `edge-verify enroll {identity} --replace`"
            )
        if fmt < TEMPLATE_FORMAT and frames > 1:
            raise FingerprintMismatchError(
                f"{identity!r} was enrolled by an older edge-verify (template format {fmt}); "
                f"re-enroll with `edge-verify enroll {identity} --replace`"
            )
        return np.frombuffer(plain, np.float32).copy()

    def infos(self) -> list[tuple]:
        return self.db.execute(
            "SELECT identity, fingerprint, frames, created, updated FROM templates ORDER BY identity"
        ).fetchall()

    def delete(self, identity: str) -> bool:
        with self.db.transaction():
            return self.db.execute("DELETE FROM templates WHERE identity = ?", (identity,)).rowcount > 0
