"""Administrator passwords (scrypt, memory-hard), server-side sessions, CSRF tokens and the
login rate limit. Standard library only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from edge_verify.errors import UsageError

# scrypt at N=2^15, r=8, p=3: 32 MiB and about 0.3 s per guess on a laptop. OWASP's table trades memory
# for passes: N=2^17, r=8, p=1 (128 MiB, more than a 1 GB Raspberry Pi can spare per login) or, at
# 32 MiB, N=2^15, r=8, p=3. Records keep their own parameters, so older ones still verify.
SCRYPT = {"n": 2**15, "r": 8, "p": 3}
MIN_PASSWORD = 10
SESSION_IDLE_S = 30 * 60
SESSION_MAX_S = 8 * 3600
_HASHING = threading.BoundedSemaphore(2)  # a burst of logins must not take 32 MiB each at once


def hash_password(password: str) -> dict:
    """The record stored for a password: scrypt parameters, salt and hash (hex)."""
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the administrator password must have at least {MIN_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    return {"kdf": "scrypt", **SCRYPT, "salt": salt.hex(), "hash": _scrypt(password, salt, SCRYPT).hex()}


def check_password(record: dict | None, password: str) -> bool:
    """Whether ``password`` matches ``record``; an unknown administrator (None) costs the same time."""
    params = SCRYPT if record is None else {k: int(record[k]) for k in ("n", "r", "p")}
    salt = bytes.fromhex(record["salt"]) if record else b"\0" * 16
    digest = _scrypt(password, salt, params)
    return record is not None and hmac.compare_digest(digest.hex(), str(record["hash"]))


def _scrypt(password: str, salt: bytes, params: dict) -> bytes:
    n, r, p = params["n"], params["r"], params["p"]
    with _HASHING:
        return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n + 2**20, dklen=32)


@dataclass
class Session:
    token: str
    admin: str
    csrf: str
    created: float
    seen: float
    salt: str = ""  # of the password record it was opened with: a new password ends the session


def same_record(session: Session, record: dict | None) -> bool:
    """Whether the administrator's password record is still the one ``session`` logged in with."""
    return record is not None and hmac.compare_digest(session.salt, str(record.get("salt", "")))


class Sessions:
    """Random session tokens held in memory (a restart logs everyone out)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, admin: str, salt: str = "") -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), admin, secrets.token_urlsafe(32), now, now, salt)
        with self._lock:
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.seen > SESSION_IDLE_S or now - session.created > SESSION_MAX_S:
                del self._sessions[token]
                return None
            session.seen = now
            return session

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)


def same_token(expected: str, given: object) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


@dataclass
class LoginLimiter:
    """At most ``failures`` failed logins per client address and per administrator name within
    ``window_s``; then logins from there (or for that name) wait until the oldest failure ages out."""

    failures: int = 5
    window_s: float = 300.0
    clock: object = time.monotonic
    _seen: dict[str, deque] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pruned: float = float("-inf")

    def retry_after(self, *keys: str) -> float:
        """Seconds to wait before another attempt (0: allowed now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._seen.get(key, deque())
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.failures:
                    wait = max(wait, times[0] + self.window_s - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            if self._seen and now - self._pruned > self.window_s:  # forget clients and names aged out
                self._seen = {k: t for k, t in self._seen.items() if t and t[-1] > now - self.window_s}
                self._pruned = now
            for key in keys:
                self._seen.setdefault(key, deque()).append(now)
