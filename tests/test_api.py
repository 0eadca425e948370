"""The Python API: the examples of docs/api.md as they stand, arrays and paths alike, the CLI's errors."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

import edge_verify as ev
from edge_verify.bundle import load_bundle
from edge_verify.errors import MultipleFacesError, NoFaceError
from tests.conftest import ROOT, SAMPLES


def test_api_page_examples_run(tmp_path, capsys, monkeypatch):
    """Every Python block of docs/api.md, as it stands, in order."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # a user runs them again, on the store the first run made
        for code in blocks:
            exec(compile(code, "docs/api.md", "exec"), {})
        out = capsys.readouterr().out
        assert "same person: True" in out and "refused: no_such_file.jpg: no such image file" in out
        assert re.search(r"astronaut_check.jpg: 0\.\d{4} accepted", out) and re.search(
            r"cameraman.jpg: 0\.\d{4} rejected", out
        )
    assert (tmp_path / "doors.db").exists()


def test_arrays_and_paths_give_the_same_answers():
    path = SAMPLES / "astronaut_check.jpg"
    image = cv2.imread(str(path))
    assert np.allclose(ev.embed(path), ev.embed(image))
    assert ev.compare(path, SAMPLES / "astronaut_enroll.jpg") == pytest.approx(
        ev.compare(image, ev.embed_one(SAMPLES / "astronaut_enroll.jpg"))
    )
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert len(ev.detect(grey)) == 1


def test_errors_are_the_clis(tmp_path):
    blank = np.full((300, 300, 3), 127, np.uint8)
    with pytest.raises(NoFaceError):
        ev.embed_one(blank)
    assert ev.embed(blank).shape == (0, load_bundle().embedding_size)
    pair = np.concatenate([cv2.imread(str(SAMPLES / "astronaut_check.jpg"))] * 2, axis=1)
    with pytest.raises(MultipleFacesError):
        ev.compare(pair, SAMPLES / "cameraman.jpg")
    assert ev.compare(pair, SAMPLES / "astronaut_enroll.jpg", ev.Options(largest_face=True)) > ev.threshold()
    with pytest.raises(ev.EdgeVerifyError, match="need 8-bit BGR"):
        ev.embed(np.zeros((10, 10, 3), np.float32))
    with ev.open_store(tmp_path / "s.db") as store, pytest.raises(ev.EdgeVerifyError, match="not enrolled"):
        ev.verify(SAMPLES / "cameraman.jpg", "nobody", store)


def test_enroll_keeps_the_clis_rules(tmp_path):
    with ev.open_store(tmp_path / "s.db") as store:
        ev.enroll("astronaut", [SAMPLES / "astronaut_enroll.jpg"], store)
        with pytest.raises(ev.EdgeVerifyError, match="already enrolled") as refused:
            ev.enroll("astronaut", [SAMPLES / "astronaut_check.jpg"], store)
        assert "replace=True" in str(refused.value) and "--replace" not in str(refused.value)  # the API's words
        with pytest.raises(ev.EdgeVerifyError, match="do not show one person"):
            ev.enroll("mixed", [SAMPLES / "astronaut_enroll.jpg", SAMPLES / "cameraman.jpg"], store)
        with pytest.raises(ev.EdgeVerifyError, match="match an enrolled identity"):
            ev.enroll("again", [SAMPLES / "astronaut_check.jpg"], store)
        assert [t.identity for t in store.list()] == ["astronaut"]
        strict = ev.Options(operating_point="strict")
        assert ev.threshold(strict) > ev.threshold()


def test_public_names_load_on_first_use():
    """``import edge_verify`` stays light: a command that needs no store never loads its
    cryptography (7 MB, 13 ms of every cold start), yet every public name is there when asked for."""
    import subprocess
    import sys

    probe = (
        "import sys, edge_verify as ev; from edge_verify.cli import main; code = main(sys.argv[1:]); "
        "print(code, 'cryptography' in sys.modules); "
        "print(all(getattr(ev, n) is not None for n in ev.__all__), set(ev.__all__) <= set(dir(ev)), "
        "'cryptography' in sys.modules)"
    )
    argv = ["compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "astronaut_check.jpg")]
    r = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2:] == ["0 False", "True True True"]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        ev.Nothing  # noqa: B018
