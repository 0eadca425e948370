"""Model bundles: a directory with TFLite models and ``bundle.json`` (the host/device contract)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge_verify.errors import BundleError, UsageError
from edge_verify.operating import DEFAULT_MARGIN, OperatingPoint, check_far, check_threshold

BUNDLE_FORMAT = 1
DEFAULT_BUNDLE_NAME = "face-resnet29-v1"
MODEL_INT8 = "model_int8.tflite"
MODEL_FP32 = "model_fp32.tflite"
MODEL_EDGETPU = "model_int8_edgetpu.tflite"


@dataclass(frozen=True)
class Preprocess:
    """How a frame becomes the model's input."""

    size: tuple[int, int]  # (height, width)
    channels: int  # 3 (colour) or 1 (grey)
    color_order: str  # "RGB", "BGR" or "GRAY"
    alignment: str  # "face5": similarity transform of 5 landmarks; "resize": whole frame
    template: tuple[tuple[float, float], ...] = ()  # 5 landmark positions in the chip (face5)

    def as_dict(self) -> dict:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "color_order": self.color_order,
            "alignment": self.alignment,
            "template": [list(p) for p in self.template],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            channels=int(d["channels"]),
            color_order=str(d["color_order"]),
            alignment=str(d["alignment"]),
            template=tuple((float(x), float(y)) for x, y in d.get("template", [])),
        )


@dataclass(frozen=True)
class Threshold:
    """A cosine-similarity threshold and where it came from."""

    value: float
    far: float | None = None
    source: str = ""


# bundle.json fields a decision depends on besides the model: pinned in the store (see store.pin_bundle).
DECISION_FIELDS = ("operating_points", "default_operating_point", "far_curve", "margin_1n", "threshold")


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    version: str
    embedding_size: int
    preprocess: Preprocess
    operating_points: dict[str, OperatingPoint]
    default_point: str
    files: dict[str, str]  # file name -> sha256
    fingerprint: str
    far_curve: tuple[tuple[float, float, bool], ...] = ()  # (FAR, threshold, resolved by every set) for 1:N
    margin_1n: float = DEFAULT_MARGIN
    metadata: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_face(self) -> bool:
        return self.preprocess.alignment == "face5"

    @property
    def threshold(self) -> Threshold:
        """The default operating point's threshold."""
        point = self.operating_points[self.default_point]
        return Threshold(point.threshold, point.far, point.source)

    def operating_point(self, name: str | None = None) -> OperatingPoint:
        """A named operating point (the default one when ``name`` is None)."""
        name = name or self.default_point
        if name not in self.operating_points:
            raise UsageError(
                f"bundle {self.name} has no operating point {name!r} (has: {', '.join(self.operating_points)})"
            )
        return self.operating_points[name]

    def decision_digest(self) -> str:
        """Hash of every bundle.json field a decision depends on (thresholds, 1:N rules)."""
        fields = {k: self.metadata.get(k) for k in DECISION_FIELDS}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()

    def model_path(self, variant: str = "int8") -> Path:
        """Path of the ``int8``, ``fp32`` or ``edgetpu`` model; BundleError if the bundle lacks it."""
        name = {"int8": MODEL_INT8, "fp32": MODEL_FP32, "edgetpu": MODEL_EDGETPU}[variant]
        path = self.path / name
        if name not in self.files or not path.exists():
            raise BundleError(f"{self.path}: bundle has no {variant} model ({name})")
        return path

    def has_model(self, variant: str) -> bool:
        try:
            self.model_path(variant)
        except BundleError:
            return False
        return True


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compute_fingerprint(int8_sha256: str, preprocess: Preprocess) -> str:
    """Identity of what an embedding means: the int8 model plus the preprocessing that feeds it."""
    canonical = json.dumps({"model": int8_sha256, "preprocess": preprocess.as_dict()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def default_bundle_path() -> Path:
    return Path(str(resources.files("edge_verify") / "models" / DEFAULT_BUNDLE_NAME))


def load_bundle(path: str | Path | None = None, verify: bool = True) -> Bundle:
    """Load a bundle directory (the packaged default face bundle when ``path`` is None).

    With ``verify`` the sha256 of every listed model file present is checked, so a truncated or
    tampered model is refused before an interpreter ever sees it.
    """
    root = Path(path) if path is not None else default_bundle_path()
    meta_path = root / "bundle.json"
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle not found (expected a directory with bundle.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{meta_path}: missing; rebuild the bundle with `edge-verify convert`") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{meta_path}: unreadable bundle metadata ({exc})") from None
    try:
        if meta.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{meta_path}: bundle format {meta.get('format')!r}, this runtime reads {BUNDLE_FORMAT}")
        preprocess = Preprocess.from_dict(meta["preprocess"])
        points, default_point = _operating_points(meta)
        bundle = Bundle(
            path=root,
            name=str(meta["name"]),
            version=str(meta["version"]),
            embedding_size=int(meta["embedding_size"]),
            preprocess=preprocess,
            operating_points=points,
            default_point=default_point,
            files={str(k): str(v) for k, v in meta["files"].items()},
            fingerprint=str(meta["fingerprint"]),
            far_curve=tuple(
                (check_far(p[0], "far_curve"), check_threshold(p[1], "far_curve"), bool(p[2]) if len(p) > 2 else True)
                for p in meta.get("far_curve", [])
            ),
            margin_1n=float(meta.get("margin_1n", DEFAULT_MARGIN)),
            metadata=meta,
        )
    except UsageError as exc:
        raise BundleError(f"{meta_path}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{meta_path}: malformed bundle metadata ({exc!r})") from None
    if MODEL_INT8 not in bundle.files:
        raise BundleError(f"{meta_path}: bundle lists no {MODEL_INT8}")
    if verify:
        verify_bundle(bundle)
    return bundle


def _operating_points(meta: dict) -> tuple[dict[str, OperatingPoint], str]:
    """Named operating points; a bundle with only the older single ``threshold`` has one, "default"."""
    if "operating_points" in meta:
        points = {str(n): OperatingPoint.from_dict(str(n), d) for n, d in meta["operating_points"].items()}
        default = str(meta.get("default_operating_point", "default"))
    else:
        thr = meta["threshold"]
        points = {"default": OperatingPoint.from_dict("default", {**thr, "threshold": thr["value"]})}
        default = "default"
    if default not in points:
        raise ValueError(f"default operating point {default!r} is not among {sorted(points)}")
    return points, default


def verify_bundle(bundle: Bundle) -> None:
    """Check the hash of each model file present and the fingerprint; raise BundleError on mismatch."""
    for name, digest in bundle.files.items():
        path = bundle.path / name
        if not path.exists():
            if name == MODEL_INT8:
                raise BundleError(f"{path}: missing; the bundle is incomplete")
            continue
        if sha256_file(path) != digest:
            raise BundleError(f"{path}: sha256 does not match bundle.json (corrupt or tampered model)")
    if compute_fingerprint(bundle.files[MODEL_INT8], bundle.preprocess) != bundle.fingerprint:
        raise BundleError(f"{bundle.path / 'bundle.json'}: fingerprint does not match the model and preprocessing")
