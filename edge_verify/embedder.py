"""Embed prepared chips with a TFLite model: quantise input, invoke, dequantise, L2-renormalise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_verify.bundle import Bundle
from edge_verify.errors import BundleError
from edge_verify.interpreter import LoadedInterpreter, make_interpreter


def quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float -> the input tensor's dtype using its scale/zero point (identity for float inputs)."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(q.dtype, np.integer):
        return q.astype(np.float32)
    scale, zero = detail["quantization"]
    return (q.astype(np.float32) - zero) * scale


def l2_normalize(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(norm, 1e-12)).astype(np.float32)


class Embedder:
    """One TFLite model, fed one chip at a time (static shapes, as the EdgeTPU needs)."""

    def __init__(
        self,
        model_path: Path,
        backend: str | None = None,
        threads: int | None = None,
        edgetpu_model: Path | None = None,
        content: bytes | None = None,
        edgetpu_content: bytes | None = None,
    ):
        self.loaded: LoadedInterpreter = make_interpreter(
            model_path, backend, threads, edgetpu_model, content, edgetpu_content
        )
        interp = self.loaded.interpreter
        self._input = interp.get_input_details()[0]
        self._output = interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])

    @classmethod
    def for_bundle(
        cls,
        bundle: Bundle,
        variant: str = "int8",
        backend: str | None = None,
        threads: int | None = None,
        use_edgetpu: bool = True,
    ) -> Embedder:
        """The bundle's model; its EdgeTPU variant first when present and ``use_edgetpu``. The bytes
        checked against bundle.json are the bytes the interpreter runs; the model's input and output
        must fit the bundle's preprocessing and embedding size."""
        edgetpu, edgetpu_content = None, None
        if use_edgetpu and variant == "int8" and bundle.has_model("edgetpu"):
            edgetpu, edgetpu_content = bundle.model_path("edgetpu"), bundle.read_model("edgetpu")
        path = bundle.model_path(variant)
        embedder = cls(path, backend, threads, edgetpu, bundle.read_model(variant), edgetpu_content)
        pre = bundle.preprocess
        expected = (*pre.size, pre.channels)
        got_out = int(np.prod(embedder._output["shape"][1:]))
        if embedder.input_shape != expected or got_out != bundle.embedding_size:
            raise BundleError(
                f"{path}: the model takes {'x'.join(map(str, embedder.input_shape))} and gives {got_out} values, "
                f"but bundle.json says {'x'.join(map(str, expected))} and embedding_size {bundle.embedding_size}"
            )
        return embedder

    @property
    def backend(self) -> str:
        return self.loaded.backend + ("+edgetpu" if self.loaded.edgetpu else "")

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, H, W, C) pixel values 0..255 -> (N, D) unit vectors."""
        chips = np.asarray(chips)
        if chips.ndim == len(self.input_shape):
            chips = chips[None]
        interp = self.loaded.interpreter
        out = []
        for chip in chips:
            x = chip.reshape(self.input_shape).astype(np.float32)
            interp.set_tensor(self._input["index"], quantize(x[None], self._input))
            interp.invoke()
            out.append(dequantize(interp.get_tensor(self._output["index"])[0], self._output))
        return l2_normalize(np.stack(out))
