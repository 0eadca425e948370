"""The passive anti-spoofing model: the torch-free loader, the port against a numpy evaluation of the
upstream weights, the shipped models (sha256, fidelity, rebuild), the crop rule, and the threshold on
the development videos (../shared; skipped when absent)."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_verify.antispoof import AntiSpoof, TrackScore, antispoof_dir, crop, crop_box
from edge_verify.detect import WORKING_SIDE, Face, FaceDetector
from edge_verify.errors import BundleError
from tests.conftest import ROOT, SAMPLES

MODELS = ROOT.parent / "shared" / "models" / "minifasnet"


@pytest.fixture(scope="session")
def minifasnet_models() -> Path:
    if not (MODELS / "2.7_80x80_MiniFASNetV2.pth").is_file():
        pytest.skip(f"{MODELS} absent: the upstream MiniFASNet weights are not part of a user's clone")
    return MODELS


@pytest.fixture(scope="session")
def states(minifasnet_models):
    from converters.minifasnet_import import VARIANTS, load_variant

    return {v.name: load_variant(v, minifasnet_models) for v in VARIANTS}


@pytest.fixture(scope="session")
def antispoof() -> AntiSpoof:
    return AntiSpoof(threads=1)


def sample_crops(scale: float) -> np.ndarray:
    """Crops of the packaged sample photos' faces at ``scale`` (real photos, no shared data needed)."""
    detector = FaceDetector()
    crops = []
    for path in sorted(SAMPLES.glob("astronaut_*.jpg")):
        image = cv2.imread(str(path))
        face = detector.detect(image)[0]
        crops += [crop(image, face, scale), crop(cv2.flip(image, 1), _mirrored(face, image.shape[1]), scale)]
    return np.asarray(crops)


def _mirrored(face: Face, width: int) -> Face:
    x, y, w, h = face.box
    return Face((width - x - w, y, w, h), face.landmarks, face.score)


# ---------------------------------------------------------------- loader


def test_loader_reads_the_real_state_dicts(states):
    from converters.minifasnet_import import Block, network_plan

    v2, se = states["MiniFASNetV2"], states["MiniFASNetV1SE"]
    assert len(v2) == 334 and len(se) == 370
    assert not any(k.startswith("module.") for k in v2)
    assert v2["conv1.conv.weight"].shape == (32, 3, 3, 3) and v2["conv1.conv.weight"].dtype == np.float32
    assert v2["conv_6_dw.conv.weight"].shape == (512, 1, 5, 5)
    assert v2["linear.weight"].shape == (128, 512) and v2["prob.weight"].shape == (3, 128)
    assert v2["conv_4.model.0.conv.conv.weight"].shape == (231, 128, 1, 1)
    assert se["conv_4.model.0.conv.conv.weight"].shape == (154, 128, 1, 1)
    assert se["conv_3.model.3.se_module.fc1.weight"].shape[1:] == (64, 1, 1)
    assert np.isfinite(v2["conv1.bn.running_var"]).all() and (v2["conv1.bn.running_var"] > 0).all()
    for state, with_se in ((v2, 0), (se, 3)):
        blocks = [b for b in network_plan(state).layers if isinstance(b, Block)]
        assert len(blocks) == 15  # 3 downsampling blocks, 4 + 6 + 2 residual ones
        assert sum(b.se is not None for b in blocks) == with_se


def _legacy_file(payload: bytes) -> bytes:
    head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    return head + payload + pickle.dumps([], protocol=2)


def test_loader_refuses_globals_outside_its_allow_list(tmp_path):
    from converters.minifasnet_import import read_state_dict
    from edge_verify.errors import ModelError

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_file(pickle.dumps({"w": Evil()}, protocol=2)))
    with pytest.raises(ModelError, match=r"print is not allowed"):
        read_state_dict(path)
    path.write_bytes(b"PK\x03\x04 a zip-format checkpoint")
    with pytest.raises(ModelError):
        read_state_dict(path)


def test_loader_rebuilds_strided_tensors_from_storages(tmp_path):
    """A hand-written legacy file (what torch.save wrote before 1.6): one storage shared by two
    tensors, one of them a transposed view at an offset."""
    from converters.minifasnet_import import _rebuild_tensor, read_state_dict

    data = np.arange(10, dtype=np.float32)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", "FloatStorage", "0", "cpu", 10, None) if obj is data else None

    class Tensor:
        def __init__(self, offset, size, stride):
            self.args = (data, offset, size, stride, False, {})

        def __reduce__(self):
            return (_rebuild_tensor, self.args)

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"module.a": Tensor(0, (2, 3), (3, 1)), "module.b": Tensor(4, (3, 2), (1, 3))})
    ours, torchs = b"converters.minifasnet_import\n_rebuild_tensor\n", b"torch._utils\n_rebuild_tensor_v2\n"
    body = buf.getvalue().replace(ours, torchs)
    assert torchs in body
    path = tmp_path / "small.pth"
    tail = pickle.dumps(["0"], protocol=2) + np.int64(10).tobytes() + data.tobytes()
    path.write_bytes(_legacy_file(body)[: -len(pickle.dumps([], protocol=2))] + tail)
    state = read_state_dict(path)
    assert list(state) == ["a", "b"]
    np.testing.assert_array_equal(state["a"], data[:6].reshape(2, 3))
    np.testing.assert_array_equal(state["b"], data[4:10].reshape(2, 3).T)


def test_loader_checks_the_checkpoint_sha256(tmp_path, minifasnet_models):
    from converters.minifasnet_import import VARIANTS, load_variant
    from edge_verify.errors import ModelError

    content = bytearray((minifasnet_models / VARIANTS[0].file).read_bytes())
    content[-1] ^= 1
    (tmp_path / VARIANTS[0].file).write_bytes(bytes(content))
    with pytest.raises(ModelError, match="sha256"):
        load_variant(VARIANTS[0], tmp_path)


# ---------------------------------------------------------------- port and shipped models


def test_keras_port_equals_the_numpy_reference(states):
    pytest.importorskip("tensorflow")
    from converters.minifasnet_import import VARIANTS, import_minifasnet, reference_forward

    for v in VARIANTS:
        crops = sample_crops(v.scale)
        reference = np.stack([reference_forward(states[v.name], c) for c in crops])
        for prelu in ("layer", "once", "split"):
            port = import_minifasnet(states[v.name], v.name, prelu).predict(crops.astype(np.float32), verbose=0)
            assert np.abs(port - reference).max() < 1e-5, (v.name, prelu)
        assert np.allclose(reference.sum(1), 1.0)


def test_numpy_reference_separates_nuaa_real_faces_from_prints(states, shared_data):
    """The port and the reference share the layer plan read from the weight names; a wrong plan
    (stride, padding, residual, SE placement) would not tell NUAA's real webcam faces from its prints,
    which the upstream model does on every frame (README of ../shared/models)."""
    import csv

    from converters.minifasnet_import import VARIANTS, reference_forward

    root = shared_data / "antispoof" / "nuaa_train"
    picked: dict[tuple[str, str], list[Path]] = {}
    for row in csv.DictReader(open(root / "labels.csv")):
        picked.setdefault((row["label"], row["subject"]), []).append(root / row["file"])
    detector = FaceDetector()
    for v in VARIANTS:
        scores: dict[str, list[float]] = {"real": [], "spoof": []}
        for (label, _), files in sorted(picked.items()):
            for path in files[:: max(1, len(files) // 2)][:2]:
                image = cv2.imread(str(path))
                faces = detector.detect(image)
                if faces:
                    scores[label].append(float(reference_forward(states[v.name], crop(image, faces[0], v.scale))[1]))
        assert len(scores["real"]) >= 12 and len(scores["spoof"]) >= 12
        assert min(scores["real"]) > max(scores["spoof"]), v.name
        assert np.mean(scores["real"]) > 0.7 and np.mean(scores["spoof"]) < 0.05, v.name


def test_shipped_models_match_model_json_and_a_flipped_byte_is_refused(tmp_path):
    import hashlib

    meta = json.loads((antispoof_dir() / "model.json").read_text())
    assert [m["name"] for m in meta["models"]] == ["MiniFASNetV2", "MiniFASNetV1SE"]
    for m in meta["models"]:
        assert hashlib.sha256((antispoof_dir() / m["file"]).read_bytes()).hexdigest() == m["sha256"]
    assert (antispoof_dir() / "LICENSE").read_text().lstrip().startswith("Apache License")
    folder = tmp_path / "antispoof"
    shutil.copytree(antispoof_dir(), folder)
    AntiSpoof(folder=folder)  # an untouched copy loads
    model = folder / meta["models"][1]["file"]
    content = bytearray(model.read_bytes())
    content[len(content) // 2] ^= 0x01
    model.write_bytes(bytes(content))
    with pytest.raises(BundleError, match="sha256"):
        AntiSpoof(folder=folder)


def test_shipped_models_agree_with_the_numpy_reference_on_real_crops(states, antispoof):
    from converters.minifasnet_import import reference_forward

    by_scale = {2.7: states["MiniFASNetV2"], 4.0: states["MiniFASNetV1SE"]}
    for member in antispoof.members:
        for chip in sample_crops(member.scale):
            ours = member.probabilities(chip)
            assert np.abs(ours - reference_forward(by_scale[member.scale], chip)).max() < 0.01


@pytest.mark.slow
def test_build_reproduces_the_shipped_models(states):
    """The shipped (float16-weight) models are rebuilt byte for byte from the upstream weights."""
    pytest.importorskip("tensorflow")
    import hashlib

    from converters.minifasnet_import import convert_minifasnet, import_minifasnet

    meta = json.loads((antispoof_dir() / "model.json").read_text())
    for m in meta["models"]:
        content = convert_minifasnet(import_minifasnet(states[m["name"]], m["name"]), np.zeros((1, 80, 80, 3)), "fp16")
        assert hashlib.sha256(content).hexdigest() == m["sha256"], m["name"]


@pytest.mark.slow
def test_int8_conversion_agrees_with_float_on_real_crops(states):
    """The int8 build (measured, not shipped: see model.json "variant") keeps each frame's P(real)
    within 0.1 of float on real crops on average; its per-track drift is why float16 ships."""
    pytest.importorskip("tensorflow")
    from converters.minifasnet_import import convert_minifasnet, import_minifasnet
    from edge_verify.antispoof import _Member
    from edge_verify.interpreter import make_interpreter

    crops = sample_crops(2.7).astype(np.float32)
    model = import_minifasnet(states["MiniFASNetV2"], "v2")
    content = convert_minifasnet(model, crops, "int8", ranges="mse")
    interp = make_interpreter(Path("int8.tflite"), "litert", 1, content=content).interpreter
    assert interp.get_input_details()[0]["dtype"] == np.int8
    member = _Member(2.7, interp, interp.get_input_details()[0], interp.get_output_details()[0])
    ours = np.array([member.probabilities(c)[1] for c in crops.astype(np.uint8)])
    assert np.abs(ours - model.predict(crops, verbose=0)[:, 1]).mean() < 0.1


def test_device_module_imports_no_tensorflow():
    code = (
        "import sys, cv2; from edge_verify.antispoof import AntiSpoof; from edge_verify.detect import FaceDetector; "
        f"f = cv2.imread({str(SAMPLES / 'astronaut_check.jpg')!r}); a = AntiSpoof(); "
        "s = a.score(f, FaceDetector().detect(f)[0]); "
        "print(0 <= s <= 1, [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch')])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2:] == ["True", "[]"], r.stdout


# ---------------------------------------------------------------- crop rule and track mean


def test_crop_box_scales_about_the_centre_and_stays_in_the_frame():
    assert crop_box((480, 640), (300, 200, 40, 40), 2.7) == (266, 166, 374, 274)  # 108 px around (320, 220)
    x0, y0, x1, y1 = crop_box((480, 640), (5, 10, 40, 40), 2.7)  # would leave on the left and top
    assert (x0, y0) == (0, 0) and (x1 - x0, y1 - y0) == (108, 108)  # moved inside, not cut
    x0, y0, x1, y1 = crop_box((480, 640), (600, 440, 40, 40), 4.0)  # right and bottom
    assert (x1, y1) == (639, 479) and (x1 - x0, y1 - y0) == (160, 160)
    x0, y0, x1, y1 = crop_box((480, 640), (100, 50, 300, 400), 2.7)  # scale cut so the box fits
    assert (y0, y1) == (0, 479) and x1 - x0 == int(300 * 479 / 400)
    chip = crop(np.zeros((480, 640, 3), np.uint8), Face((5, 10, 40, 40), np.zeros((5, 2), np.float32), 1.0), 2.7)
    assert chip.shape == (80, 80, 3) and chip.dtype == np.uint8


def test_track_score_is_the_running_mean_after_min_frames():
    t = TrackScore(min_frames=3)
    for s in (0.9, 0.1):
        t.add(s)
    assert t.live(0.41) is None
    t.add(0.2)
    assert t.mean == pytest.approx(0.4) and t.live(0.41) is False and t.live(0.39) is True


# ---------------------------------------------------------------- threshold on the development videos


def track_mean(path: Path, antispoof: AntiSpoof, detector: FaceDetector, step: int = 3) -> float | None:
    """Mean score of the largest face on every ``step``-th frame of a video; None without a face."""
    cap, scores, index = cv2.VideoCapture(str(path)), [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % step == 0 and (faces := detector.detect(frame)):
            scores.append(antispoof.score(frame, faces[0]))
        index += 1
    cap.release()
    return float(np.mean(scores)) if scores else None


# A face the crop rule cannot serve: its box is taller than the 720 px frame, the crop scale falls to
# about 0.8 and the models see part of a face without background (0.28; model.json threshold note).
EXCEPTED = {"closeup_blinking"}


@pytest.mark.slow
def test_every_replay_is_below_the_threshold_and_bona_fide_videos_above(shared_data, antispoof):
    detector = FaceDetector(working_side=WORKING_SIDE, threads=1)
    replays = sorted(p for p in (shared_data / "antispoof" / "replay_dev" / "replay").iterdir() if p.suffix != ".csv")
    real = sorted((shared_data / "video" / "liveness").glob("*.mp4"))
    real += sorted(p for p in (shared_data / "antispoof" / "replay_dev" / "real").iterdir() if p.suffix != ".csv")
    assert len(replays) == 5 and len(real) == 24
    for path in replays:
        mean = track_mean(path, antispoof, detector)
        assert mean is not None and mean < antispoof.threshold, (path.name, mean)
    for path in real:
        mean = track_mean(path, antispoof, detector)
        if mean is None:
            continue  # no usable face: nothing for the model to judge
        if path.stem in EXCEPTED:
            assert mean < antispoof.threshold, f"{path.name} now passes ({mean:.3f}): update EXCEPTED"
        else:
            assert mean >= antispoof.threshold, (path.name, mean)
