"""Host pipeline: a real (short) training run, conversion to every variant, the bundle, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from converters.convert import ConvertOptions, convert  # noqa: E402
from converters.edgetpu import check_edgetpu  # noqa: E402
from edge_verify.bundle import load_bundle  # noqa: E402
from edge_verify.embedder import Embedder  # noqa: E402
from edge_verify.errors import InputError, ModelError  # noqa: E402
from training.fit import TrainOptions, train  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(fashion_mnist):
    (x, y), (xt, yt) = fashion_mnist
    model, history = train(x[:6000], y[:6000], TrainOptions(epochs=2, steps_per_epoch=150), progress=False)
    return model, history, (x, y), (xt[:600], yt[:600])


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    model, _, (x, _), validation = trained
    out = tmp_path_factory.mktemp("bundle")
    convert(model, x[:400], out, ConvertOptions(name="fm-test"), validation=validation)
    return out


def test_training_reduces_triplet_loss(trained):
    _, history, _, _ = trained
    assert history[-1] < history[0]


def test_bundle_has_every_variant_and_loads(bundle_dir):
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    assert set(meta["report"]["variants"]) == {"fp32", "fp16", "dynamic", "int8"}
    bundle = load_bundle(bundle_dir)
    assert bundle.embedding_size == 256 and bundle.preprocess.color_order == "GRAY"
    assert bundle.threshold.far == 1e-3
    assert bundle.far_curve and bundle.far_curve[0][0] == 0.1  # 1:N threshold lookup from the validation scores
    sizes = {v: d["bytes"] for v, d in meta["report"]["variants"].items()}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_int8_is_faithful_to_fp32(bundle_dir, trained):
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    int8 = meta["report"]["variants"]["int8"]
    assert int8["cosine_vs_fp32"]["mean"] >= 0.995
    assert abs(int8["eer_change_points"]) <= 0.5  # 600 images; the full-size figure is in the benchmark


def test_int8_model_matches_keras_model(bundle_dir, trained):
    model, _, _, (xt, _) = trained
    keras_emb = model.predict(xt[:50].astype(np.float32), verbose=0)
    tflite_emb = Embedder(bundle_dir / "model_int8.tflite").embed(xt[:50])
    assert np.mean(np.sum(keras_emb * tflite_emb, axis=1)) >= 0.995


def test_int8_model_is_edgetpu_mappable(bundle_dir):
    report = check_edgetpu(bundle_dir / "model_int8.tflite")
    assert report.mappable, report.problems
    assert report.compiler in ("absent", "ok", "failed")


def test_float_model_is_flagged_for_edgetpu(bundle_dir):
    report = check_edgetpu(bundle_dir / "model_fp32.tflite")
    assert not report.mappable
    assert "not quantised" in report.first_unmapped["reason"]


def test_without_validation_fidelity_comes_from_calibration_images(trained, tmp_path):
    from converters.convert import format_fidelity

    model, _, (x, _), _ = trained
    meta = convert(model, x[:200], tmp_path, ConvertOptions(name="nolabels", variants=("fp32", "int8")))
    table = format_fidelity(meta)
    assert "nan" not in table and "add --validation" in table
    assert meta["report"]["variants"]["int8"]["cosine_vs_fp32"]["mean"] >= 0.99


def test_converted_bundle_records_a_self_test_that_passes(bundle_dir):
    from edge_verify import selftest
    from edge_verify.pipeline import Verifier, VerifierOptions

    bundle = load_bundle(bundle_dir)
    assert bundle.metadata["self_test"]["inputs"] == selftest.INPUTS_FILE and selftest.INPUTS_FILE in bundle.files
    result = selftest.require(Verifier(VerifierOptions(bundle=bundle_dir)))
    assert result is not None and result.ok and result.worst[1] > 0.9999


def test_uint8_io(trained, tmp_path):
    model, _, (x, _), _ = trained
    convert(model, x[:200], tmp_path, ConvertOptions(name="u8", io_dtype="uint8", variants=("int8",)))
    emb = Embedder(tmp_path / "model_int8.tflite")
    assert emb._input["dtype"] == np.uint8
    assert np.allclose(np.linalg.norm(emb.embed(x[:3]), axis=1), 1.0, atol=1e-5)


def test_rejects_model_that_is_not_an_embedding(tmp_path, fashion_mnist):
    (x, _), _ = fashion_mnist
    inputs = keras.Input((28, 28, 1))
    classifier = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ModelError, match="not L2-normalised"):
        convert(classifier, x[:20], tmp_path, ConvertOptions(name="bad"))
    conv_out = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ModelError, match="not an embedding model"):
        convert(conv_out, x[:20], tmp_path, ConvertOptions(name="bad"))


def test_rejects_empty_calibration(trained, tmp_path):
    with pytest.raises(InputError, match="calibration set is empty"):
        convert(trained[0], np.zeros((0, 28, 28, 1), np.uint8), tmp_path, ConvertOptions(name="x"))


def test_cli_convert_bad_inputs(tmp_path):
    from tests.conftest import run_cli

    bad = tmp_path / "model.keras"
    bad.write_text("not a zip")
    r = run_cli("convert", str(bad), "--calibration", "fashion-mnist", "--out", str(tmp_path / "b"))
    assert r.returncode == 4 and "not a loadable .keras model" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "convert", str(bad), "--calibration", "fashion-mnist", "--out", str(tmp_path / "b"), "--float-ops", "-1"
    )
    assert r.returncode == 2 and "--float-ops -1" in r.stderr and not (tmp_path / "b").exists()
    (tmp_path / "empty").mkdir()
    r = run_cli("evaluate", str(tmp_path / "nothing.keras"), "--data", str(tmp_path / "empty"))
    assert r.returncode == 4


def test_unreadable_calibration_images(tmp_path):
    from training.data import load_image_folder

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="not a readable image"):
        load_image_folder(tmp_path, (28, 28), 1)


def test_saved_model_reloads_with_custom_layer(trained, tmp_path):
    from edge_verify.cli.host import _load_keras

    path = tmp_path / "m.keras"
    trained[0].save(path)
    assert _load_keras(str(path), keras).layers[-1].__class__.__name__ == "L2Normalize"


def test_train_from_a_folder_per_identity(tmp_path, fashion_mnist):
    import cv2

    from tests.conftest import run_cli

    (x, y), _ = fashion_mnist
    for label in range(3):
        folder = tmp_path / "data" / f"id{label}"
        folder.mkdir(parents=True)
        for i, idx in enumerate(np.flatnonzero(y == label)[:12]):
            cv2.imwrite(str(folder / f"{i}.png"), x[idx, :, :, 0])
    out = tmp_path / "m.keras"
    r = run_cli(
        "train",
        "--data",
        str(tmp_path / "data"),
        "--epochs",
        "1",
        "--steps",
        "5",
        "--p",
        "3",
        "--k",
        "4",
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert out.exists() and len(json.loads(r.stdout)["loss_per_epoch"]) == 1


def test_own_face_model_with_face_alignment(tmp_path):
    """A (untrained) mobile_embedder as someone's own face model: converted with --align face5
    from folders of photos (activation ranges by --ranges mse, weight rounding corrected in each
    convolution's batch norm by --bias-correction), EdgeTPU-mappable, and usable by the device
    commands."""
    from tests.conftest import SAMPLES, run_cli
    from training.models import mobile_embedder

    model_path = tmp_path / "face.keras"
    mobile_embedder(input_shape=(112, 112, 3), embedding_size=64).save(model_path)
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("astronaut_enroll.jpg", "astronaut_check.jpg", "cameraman.jpg"):
        shutil.copy(SAMPLES / name, calib / name)  # a flat folder: calibration needs no labels
    (calib / "notes.txt").write_text("not an image")
    out = tmp_path / "bundle"
    r = run_cli(
        "convert", str(model_path), "--calibration", str(calib), "--align", "face5", "--out", str(out), "--json",
        "--ranges", "mse", "--bias-correction",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    layers = keras.models.load_model(model_path).layers
    convolutions = sum(type(layer).__name__ in ("Conv2D", "DepthwiseConv2D") for layer in layers)
    assert meta["report"]["bias_correction"]["convolutions"] == convolutions > 0  # each has a batch norm after it
    assert meta["preprocess"]["alignment"] == "face5" and meta["preprocess"]["size"] == [112, 112]
    assert meta["preprocess"]["template"][2][0] == pytest.approx(74.5 * 112 / 150, abs=0.01)  # nose on the axis
    assert meta["report"]["edgetpu"]["mappable"], meta["report"]["edgetpu"]["problems"]
    r = run_cli(
        "compare", str(SAMPLES / "astronaut_enroll.jpg"), str(SAMPLES / "cameraman.jpg"), "--bundle", str(out), "--json"
    )
    assert r.returncode in (0, 1) and 0 < abs(json.loads(r.stdout)["score"]) <= 1.0
    from edge_verify.pipeline import Verifier, VerifierOptions

    for variant in ("int8", "fp32"):  # `evaluate --variant fp32` runs the host's fp32 model through the pipeline
        verifier = Verifier(VerifierOptions(bundle=out, use_edgetpu=False, variant=variant))
        assert verifier.embedder.loaded.model_path.name == f"model_{variant}.tflite"
    r = run_cli("convert", str(model_path), "--calibration", "fashion-mnist", "--align", "face5", "--out", str(out))
    assert r.returncode == 2 and "needs folders of face photos" in r.stderr


def test_convert_empty_calibration_folder(tmp_path, trained):
    from tests.conftest import run_cli

    model_path = tmp_path / "m.keras"
    trained[0].save(model_path)
    (tmp_path / "empty").mkdir()
    r = run_cli("convert", str(model_path), "--calibration", str(tmp_path / "empty"), "--out", str(tmp_path / "b"))
    assert r.returncode == 4 and "no images found" in r.stderr


def test_dead_activations_before_l2normalize_are_named(tmp_path, fashion_mnist):
    from training.layers import L2Normalize

    (x, _), _ = fashion_mnist
    inputs = keras.Input((28, 28, 1))
    dead = keras.layers.Dense(8, kernel_initializer="zeros")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, L2Normalize()(dead))
    with pytest.raises(ModelError, match="activations before L2Normalize are ~0"):
        convert(model, x[:20], tmp_path, ConvertOptions(name="dead"))


def test_clipped_activation_range_has_less_quantisation_error():
    """converters.calibration: a few extreme activations no longer stretch the int8 range."""
    from converters.calibration import best_range, quantization_error

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 100_000), [60.0, -40.0]]).astype(np.float32)
    low, high = best_range(values, float(values.min()), float(values.max()))
    assert -40 < low < 0 < high < 60
    assert quantization_error(values, low, high) < 0.85 * quantization_error(values, -40.0, 60.0)
    bulk = rng.normal(0, 1, 100_000).astype(np.float32)  # no outliers: clipping would only hurt
    assert best_range(bulk, float(bulk.min()), float(bulk.max()))[1] >= 0.9 * bulk.max()
    assert best_range(np.zeros(10, np.float32), 0.0, 0.0) == (0.0, 0.0)


def test_ops_kept_in_float_run_in_float_and_the_edgetpu_check_names_the_first(trained, bundle_dir, tmp_path):
    """``keep_float``: the named op computes in float (quantised again after it), the model still
    matches Keras, and the EdgeTPU check stops where the float island starts (its DEQUANTIZE) and
    lists the kept op."""
    from ai_edge_litert.interpreter import Interpreter

    from converters.convert import _to_tflite

    model, _, (x, _), (xt, _) = trained
    shipped = Interpreter(model_path=str(bundle_dir / "model_int8.tflite"))
    names = {t["index"]: t["name"] for t in shipped.get_tensor_details()}
    first_conv = next(op for op in shipped._get_ops_details() if op["op_name"] == "CONV_2D")
    kept = names[first_conv["outputs"][0]]
    saved = tmp_path / "saved"
    model.export(str(saved), verbose=False, input_signature=[tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)])
    path = tmp_path / "mixed.tflite"
    path.write_bytes(_to_tflite(saved, "int8", x[:100], "int8", "mse", keep_float=(kept,)))
    report = check_edgetpu(path)
    assert not report.mappable and report.first_unmapped["op"] == "DEQUANTIZE"
    assert any(p.startswith(f"op #{first_conv['index'] + 1} CONV_2D") and "float32" in p for p in report.problems)
    keras_emb = model.predict(xt[:50].astype(np.float32), verbose=0)
    assert np.mean(np.sum(keras_emb * Embedder(path).embed(xt[:50]), axis=1)) >= 0.995


def test_float_ops_run_the_first_ops_in_float(trained, bundle_dir, tmp_path):
    """``ConvertOptions.float_ops``: the int8 model starts in float (its input dequantised), the
    first N ops of the all-int8 conversion compute in float32 and the rest in int8; bundle.json
    records N, the EdgeTPU check names the first op (no EdgeTPU maps a float first op), and the
    device runs it as close to Keras as the all-int8 model."""
    from ai_edge_litert.interpreter import Interpreter

    model, _, (x, _), (xt, _) = trained

    def ops(path: Path) -> list[tuple[str, str, str]]:
        interpreter = Interpreter(model_path=str(path))
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        return [
            (op["op_name"], tensors[op["outputs"][0]]["name"], np.dtype(tensors[op["outputs"][0]]["dtype"]).name)
            for op in interpreter._get_ops_details()
        ]

    meta = convert(model, x[:400], tmp_path / "b", ConvertOptions(name="fm-float", variants=("int8",), float_ops=3))
    plain, mixed = ops(bundle_dir / "model_int8.tflite"), ops(tmp_path / "b" / "model_int8.tflite")
    assert mixed[0][0] == "DEQUANTIZE" and mixed[4][0] == "QUANTIZE"
    assert [(kind, name) for kind, name, _ in mixed[1:4]] == [(kind, name) for kind, name, _ in plain[:3]]
    assert all(dtype == "float32" for _, _, dtype in mixed[1:4])
    assert all(dtype == "int8" for _, _, dtype in mixed[5:]) and len(mixed) == len(plain) + 2
    assert meta["report"]["float_ops"] == 3
    edgetpu = meta["report"]["edgetpu"]
    assert not edgetpu["mappable"] and edgetpu["first_unmapped"] == {
        "index": 0,
        "op": "DEQUANTIZE",
        "reason": "op not supported by the EdgeTPU",
    }
    keras_emb = model.predict(xt[:100].astype(np.float32), verbose=0)
    cosine = {
        name: np.mean(np.sum(keras_emb * Embedder(path).embed(xt[:100]), axis=1))
        for name, path in (("plain", bundle_dir / "model_int8.tflite"), ("mixed", tmp_path / "b" / "model_int8.tflite"))
    }
    assert cosine["mixed"] >= cosine["plain"] - 1e-3 and cosine["mixed"] >= 0.995, cosine
