"""EdgeTPU readiness: our static op-compatibility check, and ``edgetpu_compiler`` when installed."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Coral's supported-operations table (coral.ai/docs/edgetpu/models-intro), TFLite builtin names.
EDGETPU_OPS = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAXIMUM", "MAX_POOL_2D", "MEAN",
    "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU",
    "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
}  # fmt: skip
INSTALL_HINT = (
    "edgetpu_compiler not found: on an x86-64 Debian/Ubuntu host add Coral's apt source "
    "(packages.cloud.google.com/apt coral-edgetpu-stable) and `apt install edgetpu-compiler`, "
    "then run `edgetpu_compiler -s model_int8.tflite`"
)


@dataclass
class EdgeTpuReport:
    mappable: bool
    op_counts: dict[str, int]
    first_unmapped: dict | None  # {"index", "op", "reason"}: where the graph would split
    problems: list[str] = field(default_factory=list)
    compiler: str = "absent"  # "absent", "ok", "failed"
    compiler_log: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def op_counts(model_path: Path) -> dict[str, int]:
    """How many times each TFLite op occurs in a model."""
    from ai_edge_litert.interpreter import Interpreter

    counts: dict[str, int] = {}
    for op in Interpreter(model_path=str(model_path))._get_ops_details():  # noqa: SLF001
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def check_edgetpu(model_path: Path) -> EdgeTpuReport:
    """Statically check an int8 TFLite model against the EdgeTPU's op and type rules."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only public route to the op list
    problems: list[str] = []
    first = None
    for op in ops:
        name = op["op_name"]
        reason = None
        if name not in EDGETPU_OPS:
            reason = "op not supported by the EdgeTPU"
        else:
            for idx in list(op["inputs"]) + list(op["outputs"]):
                if idx < 0:
                    continue
                t = tensors[idx]
                if t["dtype"] not in (np.int8, np.uint8, np.int32):
                    reason = f"tensor {t['name']} is {np.dtype(t['dtype']).name}, not quantised"
                    break
                if any(int(d) < 0 for d in t.get("shape_signature", t["shape"])[1:]):
                    reason = f"tensor {t['name']} has a dynamic shape"
                    break
            if reason is None and name == "MEAN":
                reason = _mean_rule(op, tensors)
        if reason:
            problems.append(f"op #{op['index']} {name}: {reason}")
            if first is None:
                first = {"index": int(op["index"]), "op": name, "reason": reason}
    return EdgeTpuReport(
        mappable=first is None, op_counts=op_counts(model_path), first_unmapped=first, problems=problems
    )


def _mean_rule(op: dict, tensors: dict) -> str | None:
    src = tensors[op["inputs"][0]]
    out = tensors[op["outputs"][0]]
    if len(src["shape"]) and len(out["shape"]) and src["shape"][0] != out["shape"][0]:
        return "MEAN reduces the batch dimension"
    return None


def compile_edgetpu(model_path: Path, out_dir: Path, report: EdgeTpuReport) -> Path | None:
    """Run ``edgetpu_compiler`` when on PATH; record its log in ``report``. Returns the compiled model."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        report.compiler = "absent"
        report.compiler_log = INSTALL_HINT
        return None
    proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(model_path)], capture_output=True, text=True)
    report.compiler_log = proc.stdout + proc.stderr
    compiled = out_dir / (model_path.stem + "_edgetpu.tflite")
    report.compiler = "ok" if proc.returncode == 0 and compiled.exists() else "failed"
    return compiled if report.compiler == "ok" else None
