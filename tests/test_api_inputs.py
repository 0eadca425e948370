"""Any value in any argument of the Python API gives a result or an ``EdgeVerifyError``: never
another exception, never a hang, never a huge array processed past the limits files have."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import edge_verify as ev
from edge_verify.api import DEFAULT
from edge_verify.errors import EdgeVerifyError, InputError, StoreError
from tests.conftest import SAMPLES, run_cli

FACE = SAMPLES / "astronaut_check.jpg"
SHAPES = [(0, 0), (0, 5), (5, 0), (0, 0, 3), (1, 1, 3), (5, 7), (3, 3, 4), (2, 2, 2, 3), (), (1,)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    fifo = root / "fifo.jpg"
    os.mkfifo(fifo)
    (root / "text.jpg").write_text("not an image")
    return {"fifo": fifo, "text": root / "text.jpg", "dir": root, "missing": root / "missing.png"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with ev.open_store(tmp_path_factory.mktemp("store") / "s.db") as s:
        ev.enroll("astronaut", [SAMPLES / "astronaut_enroll.jpg"], s)
        yield s


def hostile(files: dict[str, Path]) -> st.SearchStrategy:
    arrays = hnp.arrays(
        st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=24),
    )
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=12),
        st.binary(max_size=12),
        st.lists(st.integers(0, 255), max_size=6),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        arrays,
        st.sampled_from([np.zeros(s, np.uint8) for s in SHAPES]),
        st.sampled_from([np.zeros(0), np.zeros(3), np.full(256, np.nan), np.zeros(256), np.full(256, np.inf)]),
        st.sampled_from(["", "\0", "/dev/null", "/dev/zero", *[str(p) for p in files.values()], *files.values()]),
    )


def image_or_hostile(files) -> st.SearchStrategy:
    return st.one_of(hostile(files), st.just(FACE), st.just(cv2.imread(str(FACE))), st.just(ev.embed_one(FACE)))


def outcome(fn, *args) -> None:
    start = time.monotonic()
    try:
        fn(*args)
    except EdgeVerifyError:
        pass
    assert time.monotonic() - start < 5, f"{fn.__name__} took {time.monotonic() - start:.1f}s"


CHECKS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("fn", [ev.detect, ev.embed, ev.embed_one])
def test_any_image_argument(files, fn):
    @CHECKS
    @given(image_or_hostile(files), st.one_of(st.just(DEFAULT), hostile(files)))
    def check(image, options):
        outcome(fn, image, options)

    check()


def test_any_compare_argument(files):
    @CHECKS
    @given(image_or_hostile(files), image_or_hostile(files))
    def check(a, b):
        outcome(ev.compare, a, b)

    check()


def test_any_enroll_and_verify_argument(files, store):
    @CHECKS
    @given(
        st.one_of(st.just("astronaut"), hostile(files)),
        image_or_hostile(files),
        st.one_of(st.just(store), hostile(files)),
        st.one_of(st.just(False), hostile(files)),
    )
    def check(name, image, target, flag):
        outcome(ev.verify, image, name, target)
        outcome(ev.enroll, name, [image], target, DEFAULT, flag)
        outcome(ev.enroll, name, image, target)

    check()


@pytest.mark.parametrize("shape", [(8000, 6000, 3), (30000, 30000)])
def test_array_above_the_pixel_limit_is_refused_at_once(shape):
    huge = np.broadcast_to(np.zeros(1, np.uint8), shape)  # no memory: refused before any copy
    start = time.monotonic()
    with pytest.raises(InputError, match="megapixels allowed"):
        ev.detect(huge)
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("vector", [np.zeros(0), np.zeros(3, np.float32), np.full(256, np.nan), np.zeros(256)])
def test_compare_of_a_bad_vector_is_an_input_error(vector):
    with pytest.raises(InputError, match="embedding"):
        ev.compare(vector, ev.embed_one(FACE))


# ---- FIFOs: a source that never ends is refused, never waited on ---------------------------------------
@pytest.mark.parametrize("command", ["check", "enroll"])
def test_fifo_source_is_refused_not_a_hang(tmp_path, enrolled_store, command):
    fifo = tmp_path / "camera.mp4"
    os.mkfifo(fifo)
    options = ["astronaut", "--liveness", "off"] if command == "check" else ["someone"]
    r = run_cli(command, *options, "--source", str(fifo), "--store", str(enrolled_store.path), timeout=30)
    assert r.returncode == 4 and "not a regular file or a device" in r.stderr, r.stderr


def test_store_on_a_fifo_is_refused_and_leaves_no_key(tmp_path):
    fifo = tmp_path / "store.db"
    os.mkfifo(fifo)
    with pytest.raises(StoreError, match="not a regular file"):
        ev.open_store(fifo)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.db"]
