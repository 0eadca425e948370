"""Template store: one SQLite file (WAL, transactions), AES-256-GCM templates, an audit chain.

Layers, each importing only those above it in this list: ``db`` (connection, schema, migrations,
transactions), ``keys``, ``records`` (authenticated settings, pins, calibrations), ``audit`` (the
chain), ``templates``, and ``facade`` (``TemplateStore``, composing them)."""

from edge_verify.store.audit import AuditEntry
from edge_verify.store.db import BUSY_TIMEOUT_S, SCHEMA_VERSION
from edge_verify.store.facade import TemplateStore, default_store_path
from edge_verify.store.keys import KEY_ENV, load_key
from edge_verify.store.templates import MAX_NAME_LENGTH, TEMPLATE_FORMAT, TemplateInfo, check_identity_name

__all__ = [
    "BUSY_TIMEOUT_S",
    "KEY_ENV",
    "MAX_NAME_LENGTH",
    "SCHEMA_VERSION",
    "TEMPLATE_FORMAT",
    "AuditEntry",
    "TemplateInfo",
    "TemplateStore",
    "check_identity_name",
    "default_store_path",
    "load_key",
]
