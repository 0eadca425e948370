"""Datasets for training and evaluation: Fashion-MNIST (Debian package) and labelled image folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edge_verify.errors import InputError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST = "fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train", root: Path = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28, 1) uint8 and labels (N,) of the ``train`` or ``t10k`` split."""
    images = root / f"{split}-images-idx3-ubyte.gz"
    labels = root / f"{split}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise InputError(f"{images}: Fashion-MNIST not installed; run `sudo apt-get install dataset-fashion-mnist`")
    return _read_idx(images)[..., None], _read_idx(labels).astype(np.int64)


def load_image_folder(
    root: str | Path, size: tuple[int, int], channels: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A folder per identity -> (images (N, H, W, C) uint8 resized, labels (N,), class names)."""
    import cv2

    from edge_verify.sources import list_images, read_image

    images, labels = [], []
    classes, folders = _identity_folders(root)
    for label, folder in enumerate(folders):
        for path in list_images(folder):
            img = read_image(path)
            img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            img = (
                cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None]
                if channels == 1
                else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            )
            images.append(img)
            labels.append(label)
    if not images:
        raise InputError(f"{root}: no images found in identity sub-folders")
    return np.stack(images), np.array(labels), classes


def _identity_folders(root: str | Path) -> tuple[list[str], list[Path]]:
    """Sub-folders as identities; a folder of images without sub-folders is one unlabelled class."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected images, or one sub-folder of images per identity)")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    return ([p.name for p in folders], folders) if folders else ([root.name], [root])


def load_face_chips(root: str | Path, preprocess) -> tuple[np.ndarray, np.ndarray]:
    """Detect and align the largest face of every image, exactly as the device does.

    Images without a usable face are skipped; InputError if none is left."""
    from edge_verify.align import align_face
    from edge_verify.detect import FaceDetector
    from edge_verify.sources import list_images, read_image

    detector = FaceDetector()
    chips, labels = [], []
    _, folders = _identity_folders(root)
    for label, folder in enumerate(folders):
        for path in list_images(folder):
            image = read_image(path)
            faces = [f for f in detector.detect(image) if f.size >= 40]
            if faces:
                chips.append(align_face(image, faces[0], preprocess))
                labels.append(label)
    if not chips:
        raise InputError(f"{root}: no face found in any image")
    return np.stack(chips), np.array(labels)


def load_dataset(spec: str, split: str, size: tuple[int, int] = (28, 28), channels: int = 1):
    """``fashion-mnist`` (split ``train`` or ``t10k``) or a folder-per-identity directory."""
    if spec == FASHION_MNIST:
        return load_fashion_mnist(split)
    images, labels, _ = load_image_folder(spec, size, channels)
    return images, labels
