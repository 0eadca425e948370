"""Settings, bundle pins, site calibrations: small JSON records in ``meta``, each authenticated
with an HMAC of the store key over its name and contents."""

from __future__ import annotations

import hashlib
import hmac
import json

from edge_verify.errors import TemplateIntegrityError
from edge_verify.store.db import Database

# meta rows that are not sealed records: the key check and the schema version
UNSEALED = ("key_check", "schema")


class Records:
    def __init__(self, db: Database, mac_key: bytes):
        self.db = db
        self._key = mac_key

    def mac(self, name: str, payload: str) -> str:
        return hmac.new(self._key, name.encode() + b"\0" + payload.encode(), hashlib.sha256).hexdigest()

    def put(self, name: str, data: dict, track: bool = True) -> str:
        """Write record ``name`` (in the open transaction, or in its own); returns its MAC. ``track``:
        the state record follows it (every record but the state itself)."""
        payload = json.dumps(data, sort_keys=True)
        mac = self.mac(name, payload)
        with self.db.transaction() as tx:
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, json.dumps({"data": payload, "mac": mac}))
            )
            if track:
                tx.records[name] = mac
        return mac

    def get(self, name: str) -> dict | None:
        """Record ``name`` as written with this store's key, or None; edited outside edge-verify:
        TemplateIntegrityError."""
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        return None if row is None else self._open(name, row[0])[0]

    def _open(self, name: str, value: str) -> tuple[dict, str]:
        try:
            sealed = json.loads(value)
            payload, mac = sealed["data"], sealed["mac"]
            if hmac.compare_digest(self.mac(name, payload), str(mac)):
                return json.loads(payload), str(mac)
        except (ValueError, TypeError, KeyError):
            pass
        raise TemplateIntegrityError(
            f"{self.db.path}: setting {name.split(':')[0]!r} was changed outside edge-verify (authentication "
            "failed); refusing to decide: `edge-verify calibrate --reset` and calibrate again"
        )

    def delete(self, name: str) -> bool:
        """Delete record ``name``; the state stops expecting it even if it was already gone (deleted
        outside edge-verify: the key holder's deletion settles it). Whether a row was deleted."""
        with self.db.transaction() as tx:
            deleted = self.db.execute("DELETE FROM meta WHERE key = ?", (name,)).rowcount > 0
            tx.records[name] = None
        return deleted

    def names(self, prefix: str) -> list[str]:
        rows = self.db.execute("SELECT key FROM meta WHERE key LIKE ? ORDER BY key", (prefix + "%",)).fetchall()
        return [r[0] for r in rows if r[0].startswith(prefix)]

    def macs(self, exclude: tuple[str, ...] = (), only: str | None = None) -> dict[str, str | None]:
        """Every sealed record's MAC by name (None: it fails authentication), but ``exclude``; or
        only record ``only``."""
        if only is not None:
            rows = self.db.execute("SELECT key, value FROM meta WHERE key = ?", (only,)).fetchall()
        else:
            rows = self.db.execute("SELECT key, value FROM meta ORDER BY key").fetchall()
        found: dict[str, str | None] = {}
        for name, value in rows:
            if name in UNSEALED or name in exclude:
                continue
            try:
                found[name] = self._open(name, value)[1]
            except TemplateIntegrityError:
                found[name] = None
        return found
