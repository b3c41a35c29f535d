"""Inference engines for the CNN embedding: torch, or the same weights as an ONNX graph run by
ONNX Runtime or OpenVINO.

The graph is exported from the torch model once per (backbone, input size, weights file) and
cached in ``$IMREC_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/imrec-widgets/onnx``, else
``~/.cache/imrec-widgets/onnx``; its name carries a hash of the weights file, so another file
never reuses it. Once cached, running it needs neither torch nor timm. The graph takes the
prepared uint8 ``(B, H, W, 3)`` images and does the ImageNet normalisation itself; it returns
the pooled features (``embedding``) and the ImageNet logits (``logits``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imrec_widgets.errors import EngineUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The normalisation every backbone expects (applied inside the model, on 0..255 input)."""

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
"""Engine names ``EmbeddingFeature(engine=...)`` accepts."""

CPU_PREFERENCE = ("onnxruntime", "openvino")
"""``auto`` on a CPU takes the first of these that is installed: fastest first, as measured on
2 cores (ONNX Runtime ~1.3x OpenVINO at one thread, and it loads in half the time)."""

CACHE_ENV = "IMREC_CACHE_DIR"
GRAPH_VERSION = 1
"""Bumped when the exported graph's inputs or outputs change, so old cached graphs are not used."""

PRECISIONS = ("float32", "int8")
"""Model precisions: the exported graph as it is, or quantized to int8 (ONNX Runtime only)."""
INT8_RECIPE = 1
"""Bumped when the int8 recipe (calibration images, quantizer options) changes: a new recipe
gives other features, so it is a new cached graph."""

_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def check_model_precision(value: Any) -> str:
    """``value`` if it is one of ``PRECISIONS``, else a ``ValueError`` naming them."""
    if value not in PRECISIONS:
        raise ValueError(f"unknown model_precision {value!r}; choose {' or '.join(PRECISIONS)}")
    return str(value)


def cache_dir() -> Path:
    """Folder of the cached ONNX graphs."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser() / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "imrec-widgets" / "onnx"


def installed(engine: str) -> bool:
    """Whether ``engine``'s package is importable (without importing it)."""
    if engine == "torch":
        return True
    try:
        return importlib.util.find_spec(_PACKAGES[engine]) is not None
    except (ImportError, ValueError):
        return False


def _nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


def choose(engine: str, device: str | None) -> str:
    """The engine to run: ``auto`` is torch on CUDA, else the fastest CPU engine installed.

    torch is imported to ask for CUDA only where an NVIDIA driver is present.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if device is not None and device != "cpu":
        return "torch"
    if device is None and _nvidia_driver():
        import torch

        if torch.cuda.is_available():
            return "torch"
    return next((name for name in CPU_PREFERENCE if installed(name)), "torch")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_digest(path: Path) -> str:
    """sha256 of a weights file (remembered per path, size and mtime)."""
    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def graph_path(backbone: str, input_size: int, weights_file: Path) -> Path:
    """Where the graph of these weights is cached."""
    digest = weights_digest(weights_file)[:20]
    return cache_dir() / f"{backbone}-{input_size}px-{digest}-v{GRAPH_VERSION}.onnx"


def export(body: Any, head: Any, input_size: int, dest: Path) -> None:
    """Export torch ``body`` + ``head`` to ``dest`` atomically: a failed export leaves no file."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = body, head
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mean, std = self.get_buffer("mean"), self.get_buffer("std")
            x = (images.permute(0, 3, 1, 2).float() - mean) / std
            features = self.body(x)
            return features, self.head(features)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".partial")
        os.close(fd)
    except OSError as exc:
        raise EngineUnavailableError(f"cache folder {dest.parent} is not writable ({exc})") from exc
    try:
        graph = Graph().eval().cpu()
        sample = torch.zeros((2, input_size, input_size, 3), dtype=torch.uint8)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph,
                (sample,),
                tmp,
                dynamo=False,
                opset_version=17,
                input_names=["images"],
                output_names=["embedding", "logits"],
                dynamic_axes={
                    "images": {0: "batch"},
                    "embedding": {0: "batch"},
                    "logits": {0: "batch"},
                },
            )
        os.replace(tmp, dest)
    except EngineUnavailableError:
        raise
    except Exception as exc:
        raise EngineUnavailableError(f"ONNX export failed ({type(exc).__name__}: {exc})") from exc
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def int8_graph_path(float_graph: Path) -> Path:
    """Where the int8 graph quantized from ``float_graph`` is cached."""
    return float_graph.with_name(f"{float_graph.stem}-int8-r{INT8_RECIPE}.onnx")


def calibration_batch(prepare: Callable[[Any], np.ndarray]) -> np.ndarray:
    """The fixed calibration inputs of the int8 recipe: every bundled photo, its edited copies
    and a grey copy of each (``prepare``d as indexing does), so every machine quantizes alike."""
    from PIL import ImageOps

    from imrec_widgets.samples import sample_photos, variants

    images = []
    for _name, photo in sample_photos():
        copies = [photo, *(copy for _kind, copy in variants(photo))]
        images += copies + [ImageOps.grayscale(copy).convert("RGB") for copy in copies[:2]]
    return np.stack([prepare(image) for image in images])


def quantize_int8(float_graph: Path, calibration: np.ndarray, dest: Path) -> None:
    """Quantize ``float_graph`` to ``dest`` atomically (a failure leaves no file).

    ONNX Runtime's static QDQ quantization: int8 weights per output channel, uint8 activations
    with ranges calibrated (min/max) on ``calibration``. Measured by
    ``benchmarks/bench_int8_model.py``: 2.0x the float graph's speed on one CPU thread, 2.2x on
    two cores, the same retrieval quality (precision@10 within 0.01), features that differ from
    float32's (mean cosine 0.93-0.99 for the same image).
    """
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise EngineUnavailableError(
            f"onnxruntime's quantization tools are missing ({exc})"
        ) from exc

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = (
                {"images": calibration[start : start + 8]}
                for start in range(0, len(calibration), 8)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = tempfile.mkdtemp(dir=dest.parent, prefix=dest.name, suffix=".partial")
    except OSError as exc:
        raise EngineUnavailableError(f"cache folder {dest.parent} is not writable ({exc})") from exc
    try:
        prepared, quantized = os.path.join(work, "prepared.onnx"), os.path.join(work, "int8.onnx")
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            quant_pre_process(str(float_graph), prepared)
            quantize_static(
                prepared,
                quantized,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        os.replace(quantized, dest)
    except Exception as exc:
        raise EngineUnavailableError(
            f"int8 quantization failed ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


class OnnxRuntimeSession:
    """The cached graph on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, batch: np.ndarray, logits: bool) -> np.ndarray:
        name = "logits" if logits else "embedding"
        return self._session.run([name], {"images": batch})[0]


class OpenVinoSession:
    """The cached graph compiled by OpenVINO for the CPU, in float32 (no bf16 downcast)."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import openvino

        core = openvino.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray, logits: bool) -> np.ndarray:
        with self._lock:
            result = self._request.infer({"images": batch})
            return np.array(result[self._compiled.output(1 if logits else 0)])


_SESSION_TYPES: dict[str, Callable[[Path, int | None], Any]] = {
    "onnxruntime": OnnxRuntimeSession,
    "openvino": OpenVinoSession,
}


def open_session(engine: str, path: Path, threads: int | None) -> Any:
    """A callable ``(uint8 batch, logits) -> float32`` running the graph at ``path``."""
    try:
        return _SESSION_TYPES[engine](path, threads)
    except ImportError as exc:
        raise EngineUnavailableError(
            f"{engine} is not installed or broken ({exc}); `pip install {_PACKAGES[engine]}`"
        ) from exc
    except Exception as exc:
        raise EngineUnavailableError(
            f"{engine} cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
