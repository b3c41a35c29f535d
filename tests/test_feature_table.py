"""One table of features: a feature registered in one place is indexed, searched and mapped."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from imrec_widgets import ImageIndex, features
from imrec_widgets.cli import main
from imrec_widgets.errors import IndexConfigError
from imrec_widgets.features import FeatureBase
from imrec_widgets.settings import default_settings
from imrec_widgets.widgets.search_widget import SearchWidget


class BrightnessFeature(FeatureBase):
    """A toy feature: the share of pixels in each of ``brightness_levels`` grey levels."""

    name = "brightness"
    metrics = ("manhattan", "euclidean")
    default_metric = "manhattan"
    settings: ClassVar[Mapping[str, Any]] = {"brightness_levels": 4}
    dtype = np.dtype("float32")

    def __init__(self, brightness_levels: int = 4) -> None:
        self.levels = int(brightness_levels)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.levels,)

    def config(self) -> dict[str, Any]:
        return {"levels": self.levels}

    def extract_one(self, image: Image.Image) -> np.ndarray:
        grey = np.asarray(image.convert("L"), dtype=np.uint16).reshape(-1)
        counts = np.bincount((grey * self.levels) >> 8, minlength=self.levels)
        return (counts / counts.sum()).astype(np.float32)


@pytest.fixture
def toy() -> Iterator[type[BrightnessFeature]]:
    """The toy feature in the table for one test, taken out after it (even when it fails)."""
    features.register(BrightnessFeature)
    try:
        yield BrightnessFeature
    finally:
        features.unregister("brightness")


def _cli_json(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> Any:
    assert main(list(argv)) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_every_view_of_the_table_follows_register_and_unregister(
    toy: type[BrightnessFeature],
) -> None:
    assert features.FEATURE_NAMES[-1] == "brightness"
    assert "brightness" in features.SEARCH_MODES
    assert "brightness" in features.MODEL_FREE_FEATURES
    assert features.MODE_METRICS["brightness"] == ("manhattan", "euclidean")
    assert features.check_mode_metric("brightness", None) == "manhattan"
    assert "brightness" in features.mappable_features()
    assert default_settings()["brightness_levels"] == 4
    assert "brightness" in default_settings()["features"]
    assert features.setting_features()["brightness_levels"] == ("brightness",)
    from imrec_widgets import settings

    assert settings.SETTING_FEATURES["brightness_levels"] == ("brightness",)
    features.unregister("brightness")
    try:
        assert "brightness" not in features.FEATURE_NAMES
        assert "brightness_levels" not in default_settings()
        with pytest.raises(ValueError, match="unknown mode 'brightness'"):
            features.check_mode_metric("brightness", None)
    finally:
        features.register(toy)


def test_the_built_in_table_is_what_it_always_was() -> None:
    assert features.FEATURE_NAMES == ("embedding", "rgb", "ahash", "dhash", "thumb")
    assert features.SEARCH_MODES == ("embedding", "rgb", "ahash", "dhash")
    assert features.MODEL_FREE_FEATURES == ("rgb", "ahash", "dhash", "thumb")
    assert features.MODE_METRICS == {
        "embedding": ("cosine", "euclidean", "manhattan"),
        "rgb": ("euclidean", "manhattan", "cosine"),
        "ahash": ("hamming",),
        "dhash": ("hamming",),
    }
    assert default_settings() == {
        "features": ["embedding", "rgb", "ahash", "dhash", "thumb"],
        "backbone": "efficientnet_lite0",
        "model_precision": "float32",
        "weights": None,
        "bins": 8,
        "hash_size": 8,
        "thumb_size": 256,
        "thumb_format": "jpeg",
        "vector_dtype": "float32",
    }
    assert features.setting_features() == {
        "backbone": ("embedding",),
        "model_precision": ("embedding",),
        "bins": ("rgb",),
        "hash_size": ("ahash", "dhash"),
        "thumb_size": ("thumb",),
        "thumb_format": ("thumb",),
    }


def test_a_feature_registered_after_import_is_a_mode_of_the_search_widget(
    toy: type[BrightnessFeature], photos: Path, tmp_path: Path
) -> None:
    # the widget's module was imported (at the top of this file) before the feature was registered
    index = ImageIndex.open(photos, index_dir=tmp_path / "index", features=["rgb", "brightness"])
    index.update(progress=False, workers=0)
    widget = SearchWidget(index)
    assert "brightness" in widget.modes
    widget.mode = "brightness"
    assert widget.metric == "manhattan" and widget.metrics == ["manhattan", "euclidean"]
    first = int(index.ids()[0])
    widget.search(first)
    assert widget.error == "" and len(widget.results) == 10
    expected = index.search(first, mode="brightness", k=10)
    assert [hit["id"] for hit in widget.results] == [hit.id for hit in expected]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"name": "rgb"}, "registered already"),
        ({"name": "hybrid"}, "identifier"),
        ({"name": "no space"}, "identifier"),
        ({"metrics": ("chebyshev",), "default_metric": "chebyshev"}, "unknown metric"),
        ({"metrics": ("euclidean",), "default_metric": "cosine"}, "default_metric"),
        ({"metrics": ("euclidean",), "default_metric": None}, "default_metric"),
        ({"map_metric": "cosine"}, "map_metric"),
        ({"settings": {"bins": 16}}, "setting 'bins'"),
        ({"settings": {"vector_dtype": "float32"}}, "setting 'vector_dtype'"),
    ],
)
def test_a_class_that_does_not_fit_the_table_is_refused(
    attributes: dict[str, Any], message: str
) -> None:
    broken = type("Broken", (BrightnessFeature,), {"name": "broken", **attributes})
    with pytest.raises(ValueError, match=message):
        features.register(broken)
    assert features.FEATURE_NAMES == ("embedding", "rgb", "ahash", "dhash", "thumb")


@pytest.mark.slow  # fits a UMAP map
def test_a_registered_feature_is_indexed_searched_and_mapped(
    toy: type[BrightnessFeature],
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index_dir = tmp_path / "index"
    index = ImageIndex.open(photos, index_dir=index_dir, features=["rgb", "brightness"])
    report = index.update(progress=False, workers=0)
    assert report.new == len(index) == 18
    rows = index.features("brightness", index.ids())
    assert rows.shape == (18, 4) and rows.dtype == np.float32
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=1e-5)

    # searchable from the API, by an image file and by an id, with its default metric
    query = sorted(photos.rglob("*.jpg"))[0]
    by_file = index.search(query, mode="brightness", k=3)
    assert (by_file.mode, by_file.metric, len(by_file)) == ("brightness", "manhattan", 3)
    assert by_file[0].path == query.resolve()
    assert by_file[0].distance == pytest.approx(0.0, abs=1e-6)
    by_id = index.search(by_file[1].id, mode="brightness", metric="euclidean", k=2)
    assert by_id.metric == "euclidean" and by_file[1].id not in [hit.id for hit in by_id]

    # ... and from the CLI, whose --mode choices come from the same table
    argv = ["search", str(query), "--root", str(photos), "--index-dir", str(index_dir)]
    found = _cli_json([*argv, "--mode", "brightness", "-k", "3", "--json"], capsys)
    assert (found["mode"], found["metric"]) == ("brightness", "manhattan")
    assert [hit["id"] for hit in found["hits"]] == [hit.id for hit in by_file]

    # mappable: a UMAP map of it, and a TensorBoard projector run
    projection = index.umap("brightness", sample_size=18, clusters=2, n_neighbors=5)
    assert projection.xy.shape == (18, 2) and np.isfinite(projection.xy).all()
    run = index.export_tensorboard(tmp_path / "logs", feature="brightness", sprite=False)
    assert (run / "tensor.bytes").stat().st_size == 18 * 4 * 4

    # its setting is an index setting: changing it on a stored index needs a rebuild
    with pytest.raises(IndexConfigError, match=r"rebuild=\['brightness'\]"):
        ImageIndex.open(photos, index_dir=index_dir, brightness_levels=8)
    rebuilt = ImageIndex.open(
        photos,
        index_dir=index_dir,
        brightness_levels=8,
        rebuild=["brightness"],
    )
    rebuilt.update(progress=False, workers=0)
    assert rebuilt.features("brightness", rebuilt.ids()).shape == (18, 8)
