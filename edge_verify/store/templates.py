"""Templates: one AES-256-GCM encrypted vector per identity, bound (associated data) to the identity,
the bundle fingerprint that made it and the store revision that wrote it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_verify.errors import (
    AlreadyEnrolledError,
    FingerprintMismatchError,
    InvalidTemplateError,
    TemplateIntegrityError,
    UsageError,
)
from edge_verify.store.db import Database

MAX_NAME_LENGTH = 128
# Template format 2: the unnormalised mean of unit enrolment embeddings (matcher.mean_template).
# Format 1 (edge-verify 0.1) renormalised the mean, which scores higher; such templates made from
# several frames must be re-enrolled. From one frame both formats are the same vector.
TEMPLATE_FORMAT = 2
NORM_TOLERANCE = 1e-3  # a mean of float32 unit vectors: norm in (0, 1], up to rounding
_ROW = "identity, fingerprint, nonce, ciphertext, frames, format, revision, created, updated"


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


def template_vector(identity: str, embedding, size: int | None) -> np.ndarray:
    """``embedding`` as a template of ``size`` values (None: any): finite, with the norm a mean of unit
    vectors has (0 < norm <= 1). InvalidTemplateError naming what is wrong otherwise."""
    try:
        vector = np.asarray(embedding, np.float64)
    except (TypeError, ValueError):
        vector = None
    if vector is None or vector.ndim not in (1, 2) or vector.size != vector.shape[-1]:
        problem = f"not a vector of numbers ({type(embedding).__name__})"
    elif vector.size == 0:
        problem = "no values"
    elif size is not None and vector.size != size:
        problem = f"{vector.size} values, the bundle's embeddings have {size}"
    elif not np.isfinite(vector).all():
        problem = "values that are not finite (NaN or infinity)"
    elif not 0 < (norm := float(np.linalg.norm(vector))) <= 1 + NORM_TOLERANCE:
        problem = f"norm {norm:.4g}: a template is a mean of unit vectors (norm in (0, 1])"
    else:
        return vector.reshape(-1).astype(np.float32)
    raise InvalidTemplateError(f"template of {identity!r} is unusable: {problem}")


class Templates:
    def __init__(self, db: Database, aead: AESGCM):
        self.db = db
        self._aead = aead

    @staticmethod
    def aad(identity: str, fingerprint: str, revision: int | None) -> bytes:
        """Associated data: identity, fingerprint and revision (None: a schema-2 row, before revisions)."""
        aad = identity.encode() + b"\0" + fingerprint.encode()
        return aad if revision is None else aad + b"\0" + str(revision).encode()

    def put(self, identity: str, vector: np.ndarray, fingerprint: str, frames: int, replace: bool) -> None:
        """Write the template of ``identity`` in the open transaction, at its revision; an existing one
        is replaced only with ``replace`` (checked inside the transaction: two enrolments cannot race)."""
        check_identity_name(identity)
        vector = np.asarray(vector, np.float32).reshape(-1)
        with self.db.transaction() as tx:
            old = self.db.execute("SELECT created FROM templates WHERE identity = ?", (identity,)).fetchone()
            if old is not None and not replace:
                raise AlreadyEnrolledError(f"{identity!r} is already enrolled; add --replace to overwrite the template")
            now = time.time()
            self._write(tx, identity, fingerprint, vector, int(frames), TEMPLATE_FORMAT, old[0] if old else now, now)

    def _write(self, tx, identity: str, fingerprint: str, vector: np.ndarray, frames: int, fmt: int, created, updated):
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, vector.tobytes(), self.aad(identity, fingerprint, tx.revision))
        row = (identity, fingerprint, nonce, ciphertext, frames, fmt, tx.revision, created, updated)
        self.db.execute(f"INSERT OR REPLACE INTO templates ({_ROW}) VALUES ({', '.join('?' * len(row))})", row)
        tx.templates[identity] = entry(row)
        tx.removed.pop(identity, None)

    def reseal(self, tx) -> int:
        """Migration to revisions: re-encrypt every schema-2 row at revision ``tx.revision``. A row that
        fails authentication is left as it is (it keeps failing; `doctor` names it). Returns the count."""
        count = 0
        for row in self.rows():
            identity, fingerprint, nonce, ciphertext, frames, fmt, _, created, updated = row
            try:
                plain = self._aead.decrypt(nonce, ciphertext, self.aad(identity, fingerprint, None))
            except InvalidTag:
                continue
            self._write(tx, identity, fingerprint, np.frombuffer(plain, np.float32), frames, fmt, created, updated)
            count += 1
        return count

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
        identity, stored_fp, nonce, ciphertext, frames, fmt, revision = row[:7]
        try:
            plain = self._aead.decrypt(nonce, ciphertext, self.aad(identity, stored_fp, revision))
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

    def stored_size(self, fingerprint: str) -> int | None:
        """The size most templates of ``fingerprint`` have (read from the ciphertext length), or None."""
        row = self.db.execute(
            "SELECT length(ciphertext), COUNT(*) AS n FROM templates WHERE fingerprint = ? GROUP BY 1 ORDER BY n DESC",
            (fingerprint,),
        ).fetchone()
        return None if row is None else (row[0] - 16) // 4  # float32 values and a 16-byte GCM tag

    def infos(self) -> list[tuple]:
        return self.db.execute(
            "SELECT identity, fingerprint, frames, created, updated FROM templates ORDER BY identity"
        ).fetchall()

    def delete(self, identity: str) -> str | None:
        """Remove the template of ``identity`` in the open transaction; the fingerprint it had, or None."""
        with self.db.transaction() as tx:
            row = self.db.execute("SELECT fingerprint FROM templates WHERE identity = ?", (identity,)).fetchone()
            if row is None:
                return None
            self.db.execute("DELETE FROM templates WHERE identity = ?", (identity,))
            tx.templates[identity] = None
            tx.removed[identity] = tx.revision
        return row[0]


def entry(row: tuple) -> list:
    """What the store's state records of a template row: fingerprint, revision, digest of the row."""
    identity, fingerprint, nonce, ciphertext, frames, fmt, revision, created, updated = row
    values = [identity, fingerprint, nonce.hex(), ciphertext.hex(), frames, fmt, revision, created, updated]
    return [fingerprint, revision, hashlib.sha256(json.dumps(values).encode()).hexdigest()]
