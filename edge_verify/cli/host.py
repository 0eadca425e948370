"""Host commands (TensorFlow, imported lazily): train, convert, evaluate, import-dlib."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edge_verify.cli.common import emit, progress, require_host, verifier_for
from edge_verify.cli.site import labelled_scores
from edge_verify.errors import InputError, UsageError


def cmd_train(args: argparse.Namespace) -> int:
    require_host()
    from training.data import load_dataset
    from training.fit import TrainOptions, train

    images, labels = load_dataset(args.data, "train", (args.size, args.size), args.channels)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    options = TrainOptions(
        architecture=args.architecture,
        embedding_size=args.embedding_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        p=args.p,
        k=args.k,
        loss=args.loss,
        margin=args.margin,
        learning_rate=args.lr,
        seed=args.seed,
    )
    _, history = train(images, labels, options, args.out, progress=not args.json)
    emit(args, {"model": args.out, "loss_per_epoch": history}, f"saved {args.out} (final loss {history[-1]:.4f})")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    require_host()
    if args.float_ops < 0:
        raise UsageError(f"--float-ops {args.float_ops}: give a count of ops, 0 or more")
    import keras

    from converters.convert import ConvertOptions, convert, face_preprocess, format_fidelity, preprocess_for_model
    from edge_verify.bundle import sha256_file
    from training.data import FASHION_MNIST, load_dataset, load_face_chips

    model = _load_keras(args.model, keras)
    pre = face_preprocess(model) if args.align == "face5" else preprocess_for_model(model)

    def load(spec: str, split: str):
        if pre.alignment == "face5":
            if spec == FASHION_MNIST:
                raise UsageError("--align face5 needs folders of face photos, not fashion-mnist")
            return load_face_chips(spec, pre)
        return load_dataset(spec, split, pre.size, pre.channels)

    calib, _ = load(args.calibration, "train")
    validation = load(args.validation, "t10k") if args.validation else None
    if validation is not None and args.max_validation:
        validation = (validation[0][: args.max_validation], validation[1][: args.max_validation])
    options = ConvertOptions(
        name=args.name or Path(args.model).stem,
        version=args.version,
        io_dtype=args.io,
        target_far=args.far,
        max_calibration=args.num_calibration,
        ranges=args.ranges,
        bias_correction=args.bias_correction,
        float_ops=args.float_ops,
    )
    meta = convert(
        model,
        calib,
        args.out,
        options,
        validation=validation,
        preprocess=pre,
        source_hash=sha256_file(Path(args.model)),
        progress=None if args.json else (lambda m: print(m, file=sys.stderr)),
    )
    emit(args, meta, format_fidelity(meta) + f"\nwrote {args.out}")
    return 0


def _load_keras(path: str, keras):
    import training.layers  # noqa: F401 - registers L2Normalize
    import training.losses  # noqa: F401 - registers TripletLoss

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such Keras model file")
    try:
        return keras.models.load_model(str(p), compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise InputError(f"{p}: not a loadable .keras model ({str(exc).splitlines()[0][:200]})") from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Bundle on a folder/pairs (device pipeline) or on Fashion-MNIST; .keras models on arrays (host)."""
    from edge_verify.metrics import format_report, pair_scores, recall_at_1, verification_report
    from training.data import FASHION_MNIST

    if not args.data and not args.pairs:
        raise UsageError("give --data (fashion-mnist or a folder per identity) or --pairs FILE")
    target = Path(args.target)
    title = f"{target.name} on {Path(args.pairs or args.data).name}"
    if target.is_dir() and args.data != FASHION_MNIST:
        verifier = verifier_for(args, bundle=str(target))
        genuine, impostor, recall, *_ = labelled_scores(args, verifier, args.data, args.pairs)
    else:
        from training.data import load_dataset

        if target.is_dir():
            from edge_verify.bundle import load_bundle
            from edge_verify.embedder import Embedder

            bundle = load_bundle(target)
            embedder = Embedder.for_bundle(bundle, variant=args.variant, backend=args.backend, use_edgetpu=False)
            size, channels = bundle.preprocess.size, bundle.preprocess.channels

            def embed(x):
                return np.concatenate(
                    [embedder.embed(x[i : i + 256]) for i in progress(args, range(0, len(x), 256), desc="embed")]
                )
        else:
            require_host()
            import keras

            model = _load_keras(str(target), keras)
            size, channels = tuple(int(d) for d in model.input_shape[1:3]), int(model.input_shape[3])

            def embed(x):
                return model.predict(x.astype(np.float32), batch_size=256, verbose=0)

        images, labels = load_dataset(args.data, args.split, size, channels)
        if args.limit:
            images, labels = images[: args.limit], labels[: args.limit]
        embeddings = embed(images)
        genuine, impostor = pair_scores(embeddings, labels)
        recall = recall_at_1(embeddings, labels)
        title += f" ({len(images)} images)"
    report = verification_report(genuine, impostor, recall)
    emit(args, report.as_dict(), format_report(report, title))
    return 0


def cmd_import_dlib(args: argparse.Namespace) -> int:
    require_host()
    from converters.dlib_import import find_dlib_face_model, import_dlib_face_model

    src = Path(args.dat) if args.dat else find_dlib_face_model()
    if src is None:
        raise InputError("dlib model not found: pip install face-recognition-models, or pass the .dat path")
    model = import_dlib_face_model(src)
    model.save(args.out)
    emit(
        args,
        {"model": args.out, "params": model.count_params()},
        f"saved {args.out} ({model.count_params():,} parameters)",
    )
    return 0


def register(add) -> None:
    """Add this group's commands; ``add(name, function, help)`` returns the sub-parser."""
    p = add("train", cmd_train, "[host] train an embedding model with a triplet loss")
    p.add_argument("--data", required=True, help="fashion-mnist, or a folder per identity")
    p.add_argument("--out", required=True, help="output .keras file")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, help="batches per epoch (default: one pass)")
    p.add_argument("--architecture", choices=["small_cnn", "mobile"], default="small_cnn")
    p.add_argument("--embedding-size", type=int, default=256)
    p.add_argument("--loss", choices=["semi_hard", "batch_hard"], default="semi_hard")
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--p", type=int, default=8, help="identities per batch")
    p.add_argument("--k", type=int, default=4, help="images per identity per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=28, help="image size for folder data")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3])
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0)

    p = add("convert", cmd_convert, "[host] Keras model -> TFLite fp32/fp16/dynamic/int8 bundle")
    p.add_argument("model", help=".keras embedding model (ending in L2Normalize)")
    p.add_argument("--calibration", required=True, help="fashion-mnist, or a folder of images (sub-folders ok)")
    p.add_argument("--validation", help="labelled data for the fidelity report and threshold")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--name")
    p.add_argument("--version", default="1")
    p.add_argument("--io", choices=["int8", "uint8"], default="int8", help="int8 model input/output type")
    p.add_argument(
        "--align",
        choices=["resize", "face5"],
        default="resize",
        help="face5: a face model; images are detected and aligned like on the device",
    )
    p.add_argument("--far", type=float, default=1e-3, help="FAR for the bundle threshold")
    p.add_argument("--num-calibration", type=int, default=300)
    p.add_argument(
        "--ranges",
        choices=["minmax", "mse"],
        default="minmax",
        help="int8 activation ranges: TFLite's min..max, or clipped for least quantisation error (mse)",
    )
    p.add_argument(
        "--bias-correction",
        action="store_true",
        help="int8: correct each convolution's bias for the shift its weights' int8 rounding causes on the calibration",
    )
    p.add_argument(
        "--float-ops",
        type=int,
        default=0,
        metavar="N",
        help="int8: run the first N ops in float (closer to fp32, slower; no EdgeTPU maps a float first op)",
    )
    p.add_argument("--max-validation", type=int, default=2000)

    p = add("evaluate", cmd_evaluate, "ROC AUC, EER, TAR@FAR, recall@1 of a bundle or .keras model")
    p.add_argument("target", help="bundle directory or .keras model")
    p.add_argument("--data", help="fashion-mnist, or a folder per identity")
    p.add_argument("--pairs", help="pairs file `IMAGE_A IMAGE_B 1|0` (bundles only)")
    p.add_argument("--split", default="t10k")
    p.add_argument("--variant", choices=["int8", "fp32"], default="int8")
    p.add_argument("--limit", type=int, default=2000, help="first N images (pairs grow as N^2)")

    p = add("import-dlib", cmd_import_dlib, "[host] dlib face ResNet .dat -> Keras model")
    p.add_argument("--dat", help="path to dlib_face_recognition_resnet_model_v1.dat")
    p.add_argument("--out", required=True)
