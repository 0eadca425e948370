"""The fleet's keys: the enrolment authority signs each template revision (Ed25519) and seals the
vector to each kiosk's own X25519 key (ephemeral X25519, HKDF-SHA256, AES-256-GCM; associated data =
identity, fingerprint, revision). No key on a kiosk opens another kiosk's templates."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge_verify.fleet import FleetError

_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}
_HKDF_INFO = b"edge-verify fleet box v1"
SIGNED_KIND = "edge-verify template revision v1"
SIGNED_CALIBRATION = "edge-verify site calibration v1"


class BadRevision(FleetError):
    """A template revision whose signature, box or digest does not check out."""


@dataclass(frozen=True)
class Revision:
    """One template revision as the authority signs it (a removal has no vector: digest "")."""

    revision: int
    group: str
    identity: str
    fingerprint: str
    op: str  # "put" or "remove"
    frames: int
    digest: str  # sha256 hex of the float32 vector

    def signed_bytes(self) -> bytes:
        values = [SIGNED_KIND, self.revision, self.group, self.identity, self.fingerprint, self.op, self.frames]
        return json.dumps(values + [self.digest], separators=(",", ":")).encode()


@dataclass(frozen=True)
class Calibration:
    """A site calibration as the authority signs it: ``payload`` is the record's JSON ("null": reset)."""

    revision: int
    group: str
    fingerprint: str
    payload: str

    def signed_bytes(self) -> bytes:
        values = [SIGNED_CALIBRATION, self.revision, self.group, self.fingerprint, self.payload]
        return json.dumps(values, separators=(",", ":")).encode()


def digest(vector: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(vector, np.float32).tobytes()).hexdigest()


def aad(identity: str, fingerprint: str, revision: int) -> bytes:
    return b"\0".join((identity.encode(), fingerprint.encode(), str(revision).encode()))


def request_aad(kiosk: str, identity: str, fingerprint: str) -> bytes:
    """Associated data of an enrolment request: which kiosk asked, for whom, with which bundle."""
    return b"\0".join((b"request", kiosk.encode(), identity.encode(), fingerprint.encode()))


def public_bytes(key) -> bytes:
    return key.public_bytes(**_RAW)


def seal(recipient: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``plaintext`` readable only by the holder of the X25519 private key of ``recipient`` (32 bytes)."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = public_bytes(ephemeral.public_key())
    key = _box_key(ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient)), eph_pub, recipient)
    nonce = os.urandom(12)
    return eph_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_box(private: X25519PrivateKey, box: bytes, associated: bytes) -> bytes:
    """The plaintext of ``box``; BadRevision when it is not for this key, or was altered or moved."""
    if len(box) < 32 + 12 + 16:
        raise BadRevision("sealed template too short")
    eph_pub, nonce, ciphertext = box[:32], box[32:44], box[44:]
    own = public_bytes(private.public_key())
    try:
        key = _box_key(private.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, own)
        return AESGCM(key).decrypt(nonce, ciphertext, associated)
    except (InvalidTag, ValueError):
        raise BadRevision("sealed template fails authentication (not for this kiosk, altered or moved)") from None


def _box_key(shared: bytes, eph_pub: bytes, recipient: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=eph_pub + recipient, info=_HKDF_INFO).derive(shared)


def verify(authority: bytes, revision: Revision | Calibration, signature: bytes | None) -> None:
    """BadRevision unless ``signature`` is the authority's over ``revision``."""
    what = (
        f"revision {revision.revision} ({revision.identity!r})"
        if isinstance(revision, Revision)
        else f"calibration revision {revision.revision} (bundle {revision.fingerprint[:12]})"
    )
    if not signature:
        raise BadRevision(f"{what} is not signed")
    try:
        Ed25519PublicKey.from_public_bytes(authority).verify(bytes(signature), revision.signed_bytes())
    except (InvalidSignature, ValueError):
        raise BadRevision(f"{what} fails the authority's signature (altered at the centre)") from None


def open_template(key: X25519PrivateKey, entry: Revision, box: bytes) -> np.ndarray:
    """The vector of the verified "put" revision ``entry``, from ``box`` sealed to ``key``; BadRevision
    when the box does not open or its vector is not the one signed (``entry.digest``)."""
    plain = open_box(key, bytes(box), aad(entry.identity, entry.fingerprint, entry.revision))
    vector = np.frombuffer(plain, np.float32)
    if digest(vector) != entry.digest:
        raise BadRevision(f"revision {entry.revision} ({entry.identity!r}): the template is not the one signed")
    return vector


class Authority:
    """The enrolment authority's two keys: Ed25519 to sign revisions, X25519 to open what kiosks send
    it (enrolment requests) and its own copy of each template (to seal it to kiosks added later)."""

    def __init__(self, signing: Ed25519PrivateKey, box: X25519PrivateKey):
        self.signing = signing
        self.box = box

    @classmethod
    def generate(cls) -> Authority:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def public(self) -> bytes:
        return public_bytes(self.signing.public_key())

    @property
    def box_public(self) -> bytes:
        return public_bytes(self.box.public_key())

    def sign(self, revision: Revision | Calibration) -> bytes:
        return self.signing.sign(revision.signed_bytes())

    def save(self, path: Path) -> None:
        """Write the key file (0600, refusing to overwrite: it is the fleet's root of trust)."""
        raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        text = json.dumps(
            {
                "edge-verify-authority": 1,
                "signing": self.signing.private_bytes(*raw).hex(),
                "box": self.box.private_bytes(*raw).hex(),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise FleetError(f"{path}: an authority key already exists; refusing to overwrite it") from None
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> Authority:
        try:
            mode = os.stat(path).st_mode
            if mode & 0o077:
                raise FleetError(
                    f"{path}: the authority key may be read by others (mode {mode & 0o777:o}); chmod 600 it"
                    " (and keep it only on the admin host)"
                )
            data = json.loads(Path(path).read_text())
            return cls(
                Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["signing"])),
                X25519PrivateKey.from_private_bytes(bytes.fromhex(data["box"])),
            )
        except FileNotFoundError:
            raise FleetError(f"{path}: no authority key here (`edge-verify fleet init` makes it)") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetError(f"{path}: not an authority key file ({exc})") from None


def kiosk_key(hex_text: str) -> X25519PrivateKey:
    try:
        return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_text))
    except ValueError:
        raise FleetError("kiosk key must be 64 hex digits (an X25519 private key)") from None


def new_kiosk_key() -> tuple[str, bytes]:
    """A kiosk's private key (hex) and its public key (raw)."""
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return raw.hex(), public_bytes(key.public_key())
