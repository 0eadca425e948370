"""The dlib ResNet importer: stream primitives, malformed files, and equivalence with dlib itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from converters.dlib_import import DlibStream
from edge_verify.errors import ModelError


def _int(v: int) -> bytes:
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def test_stream_primitives():
    # 0.04 as dlib writes it: mantissa 0xa3d70a, exponent -28
    data = _int(300) + _int(-5) + bytes([3, 0x0A, 0xD7, 0xA3]) + _int(-28) + b"1" + _int(3) + b"abc"
    s = DlibStream(data)
    assert s.int() == 300 and s.int() == -5
    assert s.float() == pytest.approx(0.04)
    assert s.bool() is True and s.string() == "abc" and s.at_end()


def test_stream_tensor():
    values = np.arange(6, dtype="<f4")
    s = DlibStream(_int(2) + _int(1) + _int(2) + _int(3) + _int(1) + values.tobytes())
    assert np.array_equal(s.tensor(), values.reshape(1, 2, 3, 1))


def test_truncated_and_garbage_files(tmp_path):
    from converters.dlib_import import read_dlib_network

    with pytest.raises(ModelError, match="not a dlib network file"):
        DlibStream(_int(2) + _int(1)).tensor()
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\xff" * 100)
    with pytest.raises(ModelError, match="not a dlib network file"):
        read_dlib_network(junk)
    with pytest.raises(ModelError, match="cannot read"):
        read_dlib_network(tmp_path / "missing.dat")


@pytest.mark.slow
def test_truncated_real_model_is_refused(tmp_path):
    from converters.dlib_import import find_dlib_face_model, read_dlib_network

    dat = find_dlib_face_model()
    if dat is None:
        pytest.skip("face_recognition_models not installed (pip install -e '.[dlib]')")
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat.read_bytes()[:5_000_000])
    with pytest.raises(ModelError, match="unexpected end of file"):
        read_dlib_network(cut)


@pytest.mark.slow
def test_keras_port_equals_dlib_compute_face_descriptor():
    """Same aligned chips into both: max abs difference per component <= 1e-4."""
    dlib = pytest.importorskip("dlib")
    pytest.importorskip("keras")
    import keras

    from converters.dlib_import import find_dlib_face_model, import_dlib_face_model
    from edge_verify.align import align_face
    from edge_verify.bundle import load_bundle
    from edge_verify.detect import FaceDetector
    from edge_verify.sources import read_image
    from tests.conftest import SAMPLES

    dat = find_dlib_face_model()
    if dat is None:
        pytest.skip("face_recognition_models not installed (pip install -e '.[dlib]')")
    pre = load_bundle().preprocess
    detector = FaceDetector()
    chips = []
    for name in ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"):
        img = read_image(SAMPLES / name)
        chip = align_face(img, detector.detect(img)[0], pre)
        chips += [chip, chip[:, ::-1].copy(), np.ascontiguousarray(np.rot90(chip))]
    chips = np.stack(chips)
    reference = dlib.face_recognition_model_v1(str(dat))
    expected = np.array([np.array(reference.compute_face_descriptor(c)) for c in chips])
    model = import_dlib_face_model(dat)
    descriptor = keras.Model(model.input, model.get_layer("descriptor").output)
    ours = descriptor.predict(chips.astype(np.float32), verbose=0)
    assert np.abs(ours - expected).max() <= 1e-4
    unit = model.predict(chips.astype(np.float32), verbose=0)
    assert np.allclose(unit, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-5)


@pytest.mark.slow
def test_import_dlib_command_writes_a_loadable_model(tmp_path):
    pytest.importorskip("keras")
    from converters.dlib_import import find_dlib_face_model
    from tests.conftest import run_cli

    if find_dlib_face_model() is None:
        pytest.skip("face_recognition_models not installed (pip install -e '.[dlib]')")
    out = tmp_path / "dlib.keras"
    r = run_cli("import-dlib", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["params"] > 5_000_000
    import keras

    from edge_verify.cli.host import _load_keras

    model = _load_keras(str(out), keras)
    assert model.output_shape == (None, 128) and model.get_layer("descriptor") is not None
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01" + b"\x00" * 50)
    r = run_cli("import-dlib", "--dat", str(bad), "--out", str(tmp_path / "x.keras"))
    assert r.returncode == 16 and "not a dlib network file" in r.stderr and "Traceback" not in r.stderr
