"""Model bundles: a directory with TFLite models and ``bundle.json`` (the host/device contract)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from edge_verify.errors import BundleError, UsageError
from edge_verify.operating import DEFAULT_MARGIN, OperatingPoint, check_far, check_threshold

BUNDLE_FORMAT = 1
DEFAULT_BUNDLE_NAME = "face-fused-v1"  # chosen by benchmarks/bundles.py (docs/measurements.md)
MODEL_INT8 = "model_int8.tflite"
MODEL_FP32 = "model_fp32.tflite"
MODEL_EDGETPU = "model_int8_edgetpu.tflite"
MAX_METADATA_BYTES = 1 << 20
MAX_MODEL_BYTES = 256 << 20
MAX_FILES = 16
# a bundle file is a plain name inside the bundle directory: no path, no leading dot
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SHA256 = re.compile(r"[0-9a-f]{64}")
COLOR_ORDERS = {"RGB": 3, "BGR": 3, "GRAY": 1}
ALIGNMENTS = ("face5", "resize")


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
        """Validated preprocessing; ValueError names the first field out of its type or range."""
        _require(isinstance(d, dict), "preprocess must be an object")
        size = d.get("size")
        _require(
            isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 8 <= v <= 2048 for v in size),
            f"preprocess.size must be [height, width] of 8..2048 pixels, got {_short(size)}",
        )
        channels, color_order, alignment = d.get("channels"), d.get("color_order"), d.get("alignment")
        _require(color_order in COLOR_ORDERS, f"preprocess.color_order must be one of {sorted(COLOR_ORDERS)}")
        _require(
            _is_int(channels) and channels == COLOR_ORDERS[color_order],
            f"preprocess.channels must be {COLOR_ORDERS[color_order]} for {color_order}, got {_short(channels)}",
        )
        _require(alignment in ALIGNMENTS, f"preprocess.alignment must be one of {list(ALIGNMENTS)}")
        template = d.get("template", [])
        _require(isinstance(template, list), "preprocess.template must be a list of [x, y] points")
        if alignment == "face5":
            _require(
                len(template) == 5
                and all(
                    isinstance(p, list) and len(p) == 2 and all(_is_number(v) and 0 <= v <= max(size) for v in p)
                    for p in template
                ),
                "preprocess.template must hold 5 [x, y] points inside the chip for face5 alignment",
            )
        else:
            _require(not template, "preprocess.template is only for face5 alignment")
        return cls(
            size=(int(size[0]), int(size[1])),
            channels=int(channels),
            color_order=str(color_order),
            alignment=str(alignment),
            template=tuple((float(x), float(y)) for x, y in template),
        )


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


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
    # a fused bundle: (member bundle, weight) pairs whose models all embed each face (see fused_fingerprint)
    members: tuple[tuple[Bundle, float], ...] = ()
    metadata: dict = field(default_factory=dict, compare=False, repr=False)
    # device models already read and checked by verify_bundle, handed over once by read_model
    _checked: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def models(self) -> tuple[tuple[Bundle, float], ...]:
        """(bundle, weight) of each model that embeds a face: itself, or a fused bundle's members."""
        return self.members or ((self, 1.0),)

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
        if self.members:
            raise BundleError(f"{self.path}: a fused bundle has no model of its own; its members' models run")
        name = {"int8": MODEL_INT8, "fp32": MODEL_FP32, "edgetpu": MODEL_EDGETPU}[variant]
        path = self.path / name
        if name not in self.files or not os.path.lexists(path):
            raise BundleError(f"{self.path}: bundle has no {variant} model ({name})")
        return path

    def read_model(self, variant: str = "int8") -> bytes:
        """The model's bytes, read once and checked against bundle.json (what is checked is what runs)."""
        path = self.model_path(variant)
        return self._checked.pop(path.name, None) or read_checked(path, self.files[path.name])

    def has_model(self, variant: str) -> bool:
        try:
            self.model_path(variant)
        except BundleError:
            return False
        return True


def read_bundle_file(path: Path, limit: int) -> bytes:
    """A bundle file's bytes: a regular file (no symlink, FIFO or device) of at most ``limit`` bytes.
    Opened without blocking and without following a link, so a hostile bundle can neither hang
    the runtime nor point it at another file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; the bundle is incomplete") from None
    except OSError as exc:
        reason = "a symbolic link (bundle files must be regular files)" if os.path.islink(path) else exc.strerror
        raise BundleError(f"{path}: cannot be read: {reason}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{path}: not a regular file (bundle files must be regular files)")
        if info.st_size > limit:
            raise BundleError(f"{path}: {info.st_size} bytes, more than the {limit} a bundle file may have")
        content = f.read(limit + 1)
    if len(content) > limit:
        raise BundleError(f"{path}: more than the {limit} bytes a bundle file may have")
    return content


def read_checked(path: Path, digest: str) -> bytes:
    """A bundle file's bytes, refused unless their sha256 is ``digest``."""
    content = read_bundle_file(path, MAX_MODEL_BYTES)
    if hashlib.sha256(content).hexdigest() != digest:
        raise BundleError(f"{path}: sha256 does not match bundle.json (corrupt or tampered model)")
    return content


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fused_fingerprint(members: list[tuple[str, float]]) -> str:
    """Identity of a fused embedding: its members' fingerprints and weights, in order."""
    canonical = json.dumps({"members": [[fp, round(float(w), 6)] for fp, w in members]})
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def compute_fingerprint(int8_sha256: str, preprocess: Preprocess) -> str:
    """Identity of what an embedding means: the int8 model plus the preprocessing that feeds it."""
    canonical = json.dumps({"model": int8_sha256, "preprocess": preprocess.as_dict()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# Bundles shipped in the package, by the short names --bundle accepts (their full names work too).
PACKAGED_BUNDLES = {
    "default": DEFAULT_BUNDLE_NAME,
    "resnet29": "face-resnet29-v1",
    "sface": "face-sface-v1",
    "fused": "face-fused-v1",
}


def default_bundle_path() -> Path:
    return Path(str(resources.files("edge_verify") / "models" / DEFAULT_BUNDLE_NAME))


def bundle_path(bundle: str | Path | None = None) -> Path:
    """The directory of ``bundle``: a path, or the name of a packaged bundle (``PACKAGED_BUNDLES``).
    An existing directory of that name wins over a packaged bundle; None is the default bundle."""
    if bundle is None:
        return default_bundle_path()
    path = Path(bundle)
    name = PACKAGED_BUNDLES.get(str(bundle), str(bundle))
    if path.is_dir() or name not in PACKAGED_BUNDLES.values():
        return path
    return Path(str(resources.files("edge_verify") / "models" / name))


def load_bundle(path: str | Path | None = None, verify: bool = True, _member: bool = False) -> Bundle:
    """Load a bundle directory, or a packaged bundle by name (``bundle_path``; None: the default).

    With ``verify`` the sha256 of every listed model file present is checked, so a truncated or
    tampered model is refused before an interpreter ever sees it.
    """
    root = bundle_path(path)
    meta_path = root / "bundle.json"
    if not root.is_dir():
        raise BundleError(f"{root}: model bundle not found (expected a directory with bundle.json)")
    try:
        raw = read_bundle_file(meta_path, MAX_METADATA_BYTES)
    except BundleError as exc:
        if not os.path.lexists(meta_path):
            raise BundleError(f"{meta_path}: missing; rebuild the bundle with `edge-verify convert`") from None
        raise exc from None
    try:
        meta = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:120]
        raise BundleError(f"{meta_path}: unreadable bundle metadata ({reason})") from None
    try:
        bundle = _parse(root, meta)
    except UsageError as exc:
        raise BundleError(f"{meta_path}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        raise BundleError(f"{meta_path}: malformed bundle metadata ({detail[:200]})") from None
    if "members" in meta:
        if _member:
            raise BundleError(f"{meta_path}: a fused bundle cannot be the member of another")
        bundle = _load_members(bundle, meta["members"], verify)
    if verify:
        verify_bundle(bundle)
    return bundle


def _load_members(bundle: Bundle, entries: list[dict], verify: bool) -> Bundle:
    """A fused bundle with its members loaded: sibling bundle directories, each with the
    fingerprint bundle.json records, together as wide as ``embedding_size``."""
    members = []
    for entry in entries:
        member = load_bundle(bundle.path.parent / entry["bundle"], verify=verify, _member=True)
        if member.fingerprint != entry["fingerprint"]:
            raise BundleError(
                f"{bundle.path / 'bundle.json'}: member {entry['bundle']} has fingerprint {member.fingerprint}, "
                f"not the {entry['fingerprint']} this fused bundle was calibrated with"
            )
        members.append((member, float(entry["weight"])))
    if sum(m.embedding_size for m, _ in members) != bundle.embedding_size:
        raise BundleError(f"{bundle.path / 'bundle.json'}: embedding_size is not the sum of its members' sizes")
    if members[0][0].preprocess != bundle.preprocess:
        raise BundleError(f"{bundle.path / 'bundle.json'}: preprocess must be that of its first member")
    return replace(bundle, members=tuple(members))


def _check_self_test(entry, embedding_size: int, files: dict) -> None:
    """The optional ``self_test`` entry (see selftest.py): known inputs and their embeddings."""
    if entry is None:
        return
    _require(isinstance(entry, dict), "self_test must be an object")
    inputs, embeddings, bound = entry.get("inputs"), entry.get("embeddings"), entry.get("min_cosine")
    _require(
        isinstance(embeddings, list)
        and 0 < len(embeddings) <= 16
        and all(isinstance(v, list) and len(v) == embedding_size and all(_is_number(x) for x in v) for v in embeddings),
        f"self_test.embeddings must be 1..16 lists of {embedding_size} numbers",
    )
    _require(_is_number(bound) and 0 < bound <= 1, "self_test.min_cosine must be in (0, 1]")
    if isinstance(inputs, list):
        _require(
            len(inputs) == len(embeddings) and all(isinstance(n, str) and FILE_NAME.fullmatch(n) for n in inputs),
            "self_test.inputs must name one packaged sample image per embedding",
        )
    else:
        _require(isinstance(inputs, str) and inputs in files, "self_test.inputs must be a file listed in files")


def _check_members(entries) -> None:
    """A fused bundle's ``members``: 2..4 sibling bundles by plain name, fingerprint and weight
    (weights in (0, 1], summing to 1)."""
    _require(isinstance(entries, list) and 2 <= len(entries) <= 4, "members must list 2..4 bundles")
    for entry in entries:
        _require(isinstance(entry, dict), "each member must be an object")
        name, fp, weight = entry.get("bundle"), entry.get("fingerprint"), entry.get("weight")
        _require(
            isinstance(name, str) and FILE_NAME.fullmatch(name) is not None,
            f"members: {_short(name)} is not a bundle directory name beside this bundle",
        )
        _require(isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{32}", fp) is not None, "members: bad fingerprint")
        _require(_is_number(weight) and 0 < weight <= 1, f"members: weight must be in (0, 1], got {_short(weight)}")
    _require(abs(sum(e["weight"] for e in entries) - 1) < 1e-6, "members: weights must sum to 1")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number a bundle may hold")


def _parse(root: Path, meta) -> Bundle:
    """bundle.json's fields with their types and ranges checked (ValueError on the first bad one)."""
    _require(isinstance(meta, dict), "bundle.json must hold an object")
    _require(meta.get("format") == BUNDLE_FORMAT, f"bundle format {_short(meta.get('format'))}, this runtime reads 1")
    name, version = meta["name"], meta["version"]
    _require(isinstance(name, str) and 0 < len(name) <= 128 and name.isprintable(), "name must be printable text")
    _require(isinstance(version, (str, int)) and len(str(version)) <= 64, "version must be short text")
    size = meta["embedding_size"]
    _require(_is_int(size) and 1 <= size <= 4096, f"embedding_size must be 1..4096, got {_short(size)}")
    fused = "members" in meta
    if fused:
        _check_members(meta["members"])
    files = meta["files"]
    _require(
        isinstance(files, dict) and (fused or len(files) > 0) and len(files) <= MAX_FILES,
        f"files must map 1..{MAX_FILES} names to sha256",
    )
    for file_name, digest in files.items():
        _require(
            FILE_NAME.fullmatch(file_name) is not None and file_name != "bundle.json",
            f"files: {_short(file_name)} is not a plain file name inside the bundle",
        )
        _require(isinstance(digest, str) and SHA256.fullmatch(digest) is not None, f"files: bad sha256 for {file_name}")
    _require(fused or MODEL_INT8 in files, f"bundle lists no {MODEL_INT8}")
    fingerprint = meta["fingerprint"]
    _require(isinstance(fingerprint, str) and re.fullmatch(r"[0-9a-f]{32}", fingerprint), "fingerprint must be 32 hex")
    curve = meta.get("far_curve", [])
    _require(
        isinstance(curve, list) and all(isinstance(p, list) and len(p) in (2, 3) for p in curve),
        "far_curve must be a list of [far, threshold(, resolved)]",
    )
    margin = meta.get("margin_1n", DEFAULT_MARGIN)
    _require(_is_number(margin) and 0 <= margin < 1, f"margin_1n must be in [0, 1), got {_short(margin)}")
    points, default_point = _operating_points(meta)
    _check_self_test(meta.get("self_test"), size, files)
    return Bundle(
        path=root,
        name=name,
        version=str(version),
        embedding_size=size,
        preprocess=Preprocess.from_dict(meta["preprocess"]),
        operating_points=points,
        default_point=default_point,
        files=dict(files),
        fingerprint=fingerprint,
        far_curve=tuple(
            (check_far(p[0], "far_curve"), check_threshold(p[1], "far_curve"), bool(p[2]) if len(p) > 2 else True)
            for p in curve
        ),
        margin_1n=float(margin),
        metadata=meta,
    )


def _operating_points(meta: dict) -> tuple[dict[str, OperatingPoint], str]:
    """Named operating points; a bundle with only the older single ``threshold`` has one, "default"."""
    if "operating_points" in meta:
        raw = meta["operating_points"]
        _require(isinstance(raw, dict) and 0 < len(raw) <= 16, "operating_points must map 1..16 names to points")
        _require(all(isinstance(d, dict) for d in raw.values()), "each operating point must be an object")
        points = {str(n): OperatingPoint.from_dict(str(n), d) for n, d in raw.items()}
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
        if not os.path.lexists(path) and name != MODEL_INT8:
            continue  # optional variants (fp32, EdgeTPU) may be left out of a device install
        content = read_checked(path, digest)
        if name in (MODEL_INT8, MODEL_EDGETPU):  # kept for the interpreter: each file read and hashed once
            bundle._checked[name] = content
    if bundle.members:
        expected = fused_fingerprint([(m.fingerprint, w) for m, w in bundle.members])
    else:
        expected = compute_fingerprint(bundle.files[MODEL_INT8], bundle.preprocess)
    if expected != bundle.fingerprint:
        raise BundleError(f"{bundle.path / 'bundle.json'}: fingerprint does not match the model and preprocessing")
