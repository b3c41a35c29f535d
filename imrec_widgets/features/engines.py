"""Inference engines for the CNN embedding: torch, or the same weights as an ONNX graph run by
ONNX Runtime or OpenVINO.

The graph is exported from the torch model once per (backbone, input size, weights file) and
cached in ``$IMREC_CACHE_DIR/onnx``, else ``$XDG_CACHE_HOME/imrec-widgets/onnx``, else
``~/.cache/imrec-widgets/onnx``; its name carries a hash of the weights file, so another file
never reuses it. Once cached, running it needs neither torch nor timm. The graph takes the
prepared uint8 ``(B, H, W, 3)`` images and does the ImageNet normalisation itself; it returns
the pooled features (``embedding``) and the ImageNet logits (``logits``).

Each cached graph (float and int8) has a sidecar ``<graph>.sha256`` written when it is made:
its SHA-256 and its own file name. A graph is opened only when it matches its sidecar and its
inputs and outputs are this model's (``images`` of the input size, ``embedding`` of the
backbone's dimension, 1000 ``logits``); any other graph (the int8 one copied over the float
one, a foreign graph, a renamed input, a 512-d graph) is made again or not used, with one line,
never a traceback and never other vectors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from imrec_widgets.derived import atomic_write, durable_replace
from imrec_widgets.errors import EngineUnavailableError, UsageError

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
        raise UsageError(f"unknown model_precision {value!r}; choose {' or '.join(PRECISIONS)}")
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
        raise UsageError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
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


def sidecar_path(graph: Path) -> Path:
    """The checksum file beside ``graph``."""
    return graph.with_name(f"{graph.name}.sha256")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _write_sidecar(graph: Path, digest: str) -> None:
    """Record ``digest`` as the checksum of ``graph`` (``derived.atomic_write``)."""
    atomic_write(sidecar_path(graph), json.dumps({"file": graph.name, "sha256": digest}).encode())


def graph_problem(graph: Path) -> str | None:
    """None when ``graph`` matches the checksum written beside it when it was made; else what
    is wrong, in words ("is missing" when there is no graph)."""
    if not graph.is_file():
        return "is missing"
    try:
        recorded = json.loads(sidecar_path(graph).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "has no checksum beside it (not made by this version)"
    if not isinstance(recorded, dict) or recorded.get("file") != graph.name:
        return "has the checksum of another graph beside it"
    try:
        actual = _file_digest(graph)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if actual != recorded.get("sha256"):
        return "does not match the checksum written when it was made (replaced since?)"
    return None


@contextlib.contextmanager
def cache_lock(folder: Path) -> Any:
    """Hold an exclusive lock on the cache folder (one process makes a graph at a time; the
    others then find it made)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish(tmp: str, dest: Path) -> None:
    """Write the checksum of the finished graph ``tmp``, then move it to ``dest``."""
    _write_sidecar(dest, _file_digest(Path(tmp)))
    durable_replace(tmp, dest)


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
        _publish(tmp, dest)
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

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type information
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
        _publish(quantized, dest)
    except Exception as exc:
        raise EngineUnavailableError(
            f"int8 quantization failed ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _signature_problem(
    inputs: list[tuple[str, list[Any]]],
    outputs: list[tuple[str, list[Any]]],
    expect: tuple[int, int] | None,
) -> str | None:
    """What about a graph's (name, shape) inputs and outputs is not this model's, or None.
    Symbolic dimensions (the batch) match anything."""
    if [name for name, _ in inputs] != ["images"] or [n for n, _ in outputs] != [
        "embedding",
        "logits",
    ]:
        return (
            f"its inputs {[n for n, _ in inputs]} and outputs {[n for n, _ in outputs]} are not "
            "['images'] and ['embedding', 'logits']"
        )
    if expect is None:
        return None
    size, dim = expect
    wanted = {"images": [None, size, size, 3], "embedding": [None, dim], "logits": [None, 1000]}
    for name, shape in [*inputs, *outputs]:
        want = wanted[name]
        if len(shape) != len(want) or any(
            isinstance(got, int) and w is not None and got != w
            for got, w in zip(shape, want, strict=True)
        ):
            return f"its {name} have shape {shape}, this model's {want}"
    return None


class OnnxRuntimeSession:
    """The cached graph on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: int | None, expect: tuple[int, int] | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        problem = _signature_problem(
            [(i.name, list(i.shape)) for i in self._session.get_inputs()],
            [(o.name, list(o.shape)) for o in self._session.get_outputs()],
            expect,
        )
        if problem:
            raise EngineUnavailableError(f"{path.name} is not this model's graph: {problem}")
        self._dims = {"embedding": expect[1] if expect else None, "logits": 1000}

    def __call__(self, batch: np.ndarray, logits: bool) -> np.ndarray:
        name = "logits" if logits else "embedding"
        out = self._session.run([name], {"images": batch})[0]
        _check_output(out, len(batch), self._dims[name])
        return np.asarray(out)


def _check_output(out: Any, rows: int, dim: int | None) -> None:
    """Refuse an output that is not ``rows`` float vectors of ``dim`` (never other vectors)."""
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != rows:
        raise EngineUnavailableError(f"the graph returned {getattr(out, 'shape', out)!r}")
    if dim is not None and out.shape[1] != dim:
        raise EngineUnavailableError(
            f"the graph returned {out.shape[1]} values per image, not {dim}"
        )


class OpenVinoSession:
    """The cached graph compiled by OpenVINO for the CPU, in float32 (no bf16 downcast)."""

    def __init__(self, path: Path, threads: int | None, expect: tuple[int, int] | None) -> None:
        import openvino

        core = openvino.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        model = core.read_model(str(path))

        def shape(port: Any) -> list[Any]:
            return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]

        problem = _signature_problem(
            [(port.get_any_name(), shape(port)) for port in model.inputs],
            [(port.get_any_name(), shape(port)) for port in model.outputs],
            expect,
        )
        if problem:
            raise EngineUnavailableError(f"{path.name} is not this model's graph: {problem}")
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()
        self._dims = {False: expect[1] if expect else None, True: 1000}

    def __call__(self, batch: np.ndarray, logits: bool) -> np.ndarray:
        with self._lock:
            result = self._request.infer({"images": batch})
            out = np.array(result[self._compiled.output(1 if logits else 0)])
        _check_output(out, len(batch), self._dims[logits])
        return out


_SESSION_TYPES: dict[str, Callable[[Path, int | None, tuple[int, int] | None], Any]] = {
    "onnxruntime": OnnxRuntimeSession,
    "openvino": OpenVinoSession,
}


def open_session(
    engine: str, path: Path, threads: int | None, expect: tuple[int, int] | None = None
) -> Any:
    """A callable ``(uint8 batch, logits) -> float32`` running the graph at ``path``.

    The graph must match the checksum written beside it when it was made (``graph_problem``)
    and, with ``expect=(input size, dimension)``, take and return this model's shapes; else an
    ``EngineUnavailableError`` saying why.
    """
    problem = graph_problem(path)
    if problem is not None and path.parent.is_dir():
        with cache_lock(path.parent):  # a process making it holds the lock while it publishes
            problem = graph_problem(path)
    if problem is not None:
        raise EngineUnavailableError(f"cached graph {path.name} {problem}")
    try:
        return _SESSION_TYPES[engine](path, threads, expect)
    except EngineUnavailableError:
        raise
    except ImportError as exc:
        raise EngineUnavailableError(
            f"{engine} is not installed or broken ({exc}); `pip install {_PACKAGES[engine]}`"
        ) from exc
    except Exception as exc:
        raise EngineUnavailableError(
            f"{engine} cannot load {path} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
