"""TFLite interpreter backends: ai-edge-litert, then tflite_runtime, then tensorflow.lite."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edge_verify.errors import BackendError, BundleError

BACKENDS = ("litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow",
}
EDGETPU_LIBRARY = "libedgetpu.so.1"
log = logging.getLogger(__name__)


@dataclass
class LoadedInterpreter:
    interpreter: object
    backend: str
    model_path: Path
    edgetpu: bool  # the EdgeTPU delegate is in use


@contextlib.contextmanager
def _quiet_stderr():
    """Hide the native runtime's one-line INFO banners (e.g. the XNNPACK notice) on fd 2."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _backend_module(name: str):
    """A module with ``Interpreter`` (and a delegate loader) for backend ``name``."""
    if name == "tensorflow":
        import tensorflow as tf  # only when forced, or when no lighter backend is installed

        return tf.lite
    return importlib.import_module(_MODULES[name])


def available_backends() -> list[str]:
    """Backends importable here (tensorflow is only probed, never imported, unless already loaded)."""
    found = []
    for name in BACKENDS:
        spec_name = _MODULES[name].split(".")[0]
        if importlib.util.find_spec(spec_name) is not None:
            found.append(name)
    return found


def load_delegate(backend: str, library: str = EDGETPU_LIBRARY):
    """Load the EdgeTPU delegate; raise OSError/ValueError if the library or device is missing."""
    # Probe first: when the library is absent the backends raise from inside Delegate.__init__,
    # and the half-built Delegate's finalizer then prints a traceback on every run.
    ctypes.CDLL(library)
    module = _backend_module(backend)
    loader = module.experimental.load_delegate if backend == "tensorflow" else module.load_delegate
    return loader(library)


def make_interpreter(
    model_path: Path,
    backend: str | None = None,
    threads: int | None = None,
    edgetpu_model: Path | None = None,
) -> LoadedInterpreter:
    """Create an interpreter for ``model_path`` with the first backend that loads.

    If ``edgetpu_model`` is given, try it with the EdgeTPU delegate first and fall back to the
    CPU model (logging once) when the delegate library or the device is absent.
    """
    names = [backend] if backend else [b for b in BACKENDS if b != "tensorflow"] + ["tensorflow"]
    if backend and backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    threads = threads or os.cpu_count() or 1
    errors = []
    for name in names:
        try:
            module = _backend_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
            continue
        Interpreter = module.Interpreter
        if edgetpu_model is not None:
            try:
                delegate = load_delegate(name)
                interp = Interpreter(model_path=str(edgetpu_model), experimental_delegates=[delegate])
                interp.allocate_tensors()
                return LoadedInterpreter(interp, name, edgetpu_model, edgetpu=True)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("EdgeTPU unavailable (%s); using the CPU int8 model", str(exc).splitlines()[0])
        try:
            with _quiet_stderr():
                interp = Interpreter(model_path=str(model_path), num_threads=threads)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{model_path}: not a loadable TFLite model ({str(exc).splitlines()[0]})") from None
        return LoadedInterpreter(interp, name, model_path, edgetpu=False)
    raise BackendError("no TFLite backend could be imported (" + "; ".join(errors) + "); pip install ai-edge-litert")
