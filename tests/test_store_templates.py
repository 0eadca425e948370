"""Templates are checked on write and on read: size, finite values, the norm a mean of unit vectors
has. A bad one is refused on ``put``; one found on read is skipped for that identity only."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import edge_verify as ev
from edge_verify.bundle import load_bundle
from edge_verify.errors import InvalidTemplateError
from edge_verify.matcher import Gallery
from edge_verify.store import TemplateStore
from tests.conftest import SAMPLES, random_unit


@pytest.fixture(scope="module")
def bundle():
    return load_bundle()


def unit(seed: int, size: int) -> np.ndarray:
    return random_unit(1, size, seed)[0]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: unit(1, d) * 10, r"norm 10: a template is a mean of unit vectors"),
        (lambda d: unit(1, d - 1), rf"{255} values, the bundle's embeddings have 256"),
        (lambda d: np.full(d, np.nan, np.float32), "not finite"),
        (lambda d: np.zeros(d, np.float32), "norm 0"),
        (lambda d: np.zeros(0, np.float32), "no values"),
        (lambda d: "not a vector", "not a vector of numbers"),
        (lambda d: None, "not a vector of numbers"),
    ],
)
def test_bad_template_is_refused_on_put(tmp_path, bundle, make, needle):
    with ev.open_store(tmp_path / "s.db") as store:
        store.pin_bundle(bundle)
        with pytest.raises(InvalidTemplateError, match=needle):
            store.put("stranger", make(bundle.embedding_size), bundle.fingerprint, 1)
        assert store.list() == [] and store.audit_log() == []


def test_size_is_checked_against_templates_already_stored_without_a_pin(tmp_path):
    with TemplateStore(tmp_path / "s.db") as store:
        store.put("alice", unit(1, 128), "f" * 32, 1)
        with pytest.raises(InvalidTemplateError, match="127 values, the bundle's embeddings have 128"):
            store.put("bob", unit(2, 127), "f" * 32, 1)


def test_bad_template_found_on_read_is_skipped_for_that_identity_only(tmp_path, bundle, caplog):
    """A template written by an older edge-verify, before these checks: 1:N keeps working for others."""
    fp, d = bundle.fingerprint, bundle.embedding_size
    with ev.open_store(tmp_path / "s.db") as store:
        store.pin_bundle(bundle)
        store.put("alice", unit(1, d), fp, 1)
        store.put("bob", unit(2, d), fp, 1)
        with store.transaction():  # below the checks: what an unchecked writer could leave
            store._templates.put("scaled", unit(3, d) * 10, fp, 1, replace=False)
            store._templates.put("short", unit(4, d)[:255], fp, 1, replace=False)
    with ev.open_store(tmp_path / "s.db") as store, caplog.at_level(logging.ERROR):
        templates = store.all_templates(fp)
        assert sorted(templates) == ["alice", "bob"]
        assert Gallery(templates).rank(unit(1, d)[None])[0][0] == "alice"
        with pytest.raises(InvalidTemplateError, match="template of 'scaled' is unusable"):
            store.get("scaled", fp)
        assert store.get("bob", fp).shape == (d,)
    assert "template of 'scaled' is unusable" in caplog.text and "template of 'short' is unusable" in caplog.text


def test_writes_through_the_api_are_audited(tmp_path, bundle):
    with ev.open_store(tmp_path / "s.db") as store:
        ev.enroll("astronaut", [SAMPLES / "astronaut_enroll.jpg"], store)
        store.put("alice", unit(1, bundle.embedding_size), bundle.fingerprint, 1)
        store.remove("alice")
        entries = [(e.command, e.claimed, e.source) for e in reversed(store.audit_log())]
        assert entries == [("enroll", "astronaut", "python"), ("enroll", "alice", None), ("remove", "alice", None)]
        assert store.verify_audit() == [] and store.integrity_check() == []
