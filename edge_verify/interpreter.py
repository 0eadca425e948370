"""TFLite interpreter backends: ai-edge-litert, then tflite_runtime, then tensorflow.lite."""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
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


# The one native line hidden from users; anything else the runtime prints reaches stderr.
_BANNERS = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def _native_stderr_filtered():
    """Hold back the native runtime's INFO banner on fd 2 while a model loads, and pass on
    everything else it prints. Should the runtime crash the process meanwhile, faulthandler
    reports it on the real stderr, so a broken CPU or library never fails silently."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    was_enabled = faulthandler.is_enabled()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        faulthandler.enable(file=saved)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            if was_enabled:
                faulthandler.enable(file=sys.stderr)
            else:
                faulthandler.disable()
            os.close(saved)
            captured.seek(0)
            rest = [ln for ln in captured.read().splitlines(keepends=True) if ln.rstrip() not in _BANNERS]
            if rest:
                os.write(fd, b"".join(rest))


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
    content: bytes | None = None,
    edgetpu_content: bytes | None = None,
) -> LoadedInterpreter:
    """Create an interpreter for ``model_path`` with the first backend that loads.

    ``content``/``edgetpu_content``: the models' bytes, already read and checked (the path then only
    names them). If ``edgetpu_model`` is given, try it with the EdgeTPU delegate first and fall back
    to the CPU model (logging once) when the delegate library or the device is absent.
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
                interp = Interpreter(**_source(edgetpu_model, edgetpu_content), experimental_delegates=[delegate])
                interp.allocate_tensors()
                return LoadedInterpreter(interp, name, edgetpu_model, edgetpu=True)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("EdgeTPU unavailable (%s); using the CPU int8 model", str(exc).splitlines()[0])
        try:
            with _native_stderr_filtered():
                interp = Interpreter(**_source(model_path, content), num_threads=threads)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"{model_path}: not a loadable TFLite model ({str(exc).splitlines()[0]})") from None
        return LoadedInterpreter(interp, name, model_path, edgetpu=False)
    raise BackendError("no TFLite backend could be imported (" + "; ".join(errors) + "); pip install ai-edge-litert")


def _source(path: Path, content: bytes | None) -> dict:
    return {"model_content": content} if content is not None else {"model_path": str(path)}
