"""Shared fixtures: sample images, the shared data set (skipped when absent), stores."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLES = Path(str(resources.files("edge_verify") / "samples"))


@pytest.fixture(scope="session", autouse=True)
def private_data_dir(tmp_path_factory):
    """No test (or CLI it runs) may touch the user's real store: the default store lives in a
    temporary XDG data directory for the whole session."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        del os.environ["XDG_DATA_HOME"]
    else:
        os.environ["XDG_DATA_HOME"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "faces").is_dir():
        pytest.skip(f"{SHARED} absent: the shared face photos are not part of a user's clone")
    return SHARED


@pytest.fixture(scope="session")
def verifier():
    from edge_verify import Verifier

    return Verifier()


@pytest.fixture
def store_path(tmp_path) -> Path:
    return tmp_path / "store" / "templates.db"


@pytest.fixture
def enrolled_store(store_path, verifier):
    """A store with 'astronaut' enrolled from the packaged sample photo."""
    from edge_verify.store import TemplateStore

    store = TemplateStore(store_path)
    store.put("astronaut", verifier.embed_image(SAMPLES / "astronaut_enroll.jpg"), verifier.bundle.fingerprint, 1)
    yield store
    store.close()


@pytest.fixture(scope="session")
def fashion_mnist():
    from training.data import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST missing: apt-get install dataset-fashion-mnist (CI installs it)")
    from training.data import load_fashion_mnist

    return load_fashion_mnist("train"), load_fashion_mnist("t10k")


@pytest.fixture
def pins():
    """gpiozero's own test double for the GPIO pins (MockFactory)."""
    gpiozero = pytest.importorskip("gpiozero")
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    gpiozero.Device.pin_factory = factory
    yield factory
    factory.reset()
    gpiozero.Device.pin_factory = None


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``edge-verify`` in a fresh interpreter, as a user would (``stdin``: what it reads)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edge_verify.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


def face_images(root: Path) -> dict[str, list[Path]]:
    from edge_verify.sources import list_images

    return {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir()}


def random_unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _frame(name: str) -> np.ndarray:
    img = cv2.imread(str(SAMPLES / name))
    canvas = np.full((480, 640, 3), 60, np.uint8)
    img = cv2.resize(img, (400, int(400 * img.shape[0] / img.shape[1])))[:480]
    canvas[: img.shape[0], 120 : 120 + img.shape[1]] = img
    return canvas


def make_video(path, sequence: list[tuple[str | None, int]]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for name, count in sequence:
        frame = _frame(name) if name else np.full((480, 640, 3), 60, np.uint8)
        for _ in range(count):
            writer.write(frame)
    writer.release()
