"""Change a TFLite model's weights in place and re-seal its bundle: the attack (or the silent
corruption) that hashes cannot catch, because the hashes are updated to match."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from edge_verify.bundle import MODEL_INT8, Preprocess, compute_fingerprint


def weight_offsets(model: bytes) -> dict[str, tuple[int, np.ndarray]]:
    """Constant int8 conv weights of ``model`` that occur exactly once in the file: name -> (offset, values)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    found = {}
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] != np.int8 or len(detail["shape"]) != 4 or "conv" not in detail["name"]:
            continue
        try:
            values = interpreter.get_tensor(detail["index"])
        except ValueError:
            continue
        head = values.tobytes()[:256]
        if model.count(head) == 1:
            found[detail["name"]] = (model.find(head), values)
    return found


def alter_layer(model: bytes, index: int, change) -> bytes:
    """``model`` with the ``index``-th unique conv weight tensor replaced by ``change(values)``."""
    offset, values = list(weight_offsets(model).values())[index]
    new = np.asarray(change(values.astype(np.int16)), np.int16).clip(-127, 127).astype(np.int8).tobytes()
    return model[:offset] + new + model[offset + len(new) :]


def reseal_copy(bundle_dir: Path, out: Path, model: bytes) -> Path:
    """A copy of ``bundle_dir`` whose int8 model is ``model``, with its hash and fingerprint updated."""
    shutil.copytree(bundle_dir, out)
    (out / MODEL_INT8).write_bytes(model)
    meta = json.loads((out / "bundle.json").read_text())
    meta["files"][MODEL_INT8] = hashlib.sha256(model).hexdigest()
    meta["fingerprint"] = compute_fingerprint(meta["files"][MODEL_INT8], Preprocess.from_dict(meta["preprocess"]))
    (out / "bundle.json").write_text(json.dumps(meta, indent=2))
    return out
