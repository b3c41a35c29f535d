from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from imrec_widgets import ImageIndex
from imrec_widgets.projection import ProjectionError, status

FEATURES = ["rgb", "dhash", "thumb"]


@pytest.fixture
def index(variant_folder: Path, tmp_path: Path) -> ImageIndex:
    root = tmp_path / "photos"
    shutil.copytree(variant_folder, root)
    idx = ImageIndex.open(root, features=FEATURES)
    idx.update(progress=False, workers=0)
    return idx


def test_map_is_cached_then_extended_not_refitted(index: ImageIndex) -> None:
    assert status(index, "rgb") == {"state": "missing", "pending": len(index)}
    first = index.umap("rgb", sample_size=40, clusters=4)
    assert first.xy.shape == (len(index), 2) and np.isfinite(first.xy).all()
    assert first.fitted == 40 and first.transformed == len(index) - 40
    assert set(first.clusters.tolist()) == {0, 1, 2, 3}
    assert status(index, "rgb")["state"] == "fresh"
    np.testing.assert_array_equal(index.projection("rgb").xy, first.xy)

    again = index.umap("rgb", sample_size=40, clusters=4)
    assert again.transformed == 0 and again.fitted == 40
    np.testing.assert_array_equal(again.xy, first.xy)

    Image.fromarray(data.astronaut()).save(index.root / "new1.jpg")
    ImageOps.mirror(Image.fromarray(data.rocket())).save(index.root / "new2.jpg")
    index.update(progress=False, workers=0)
    assert status(index, "rgb") == {"state": "stale", "pending": 2}
    with pytest.raises(ProjectionError, match="misses 2 new or changed images"):
        from imrec_widgets.projection import load

        load(index, "rgb", allow_stale=False)
    extended = index.umap("rgb", sample_size=40, clusters=4)
    assert extended.transformed == 2 and extended.fitted == 40
    old = dict(zip(first.ids.tolist(), first.xy.tolist(), strict=True))
    for id_, xy in zip(extended.ids.tolist(), extended.xy.tolist(), strict=True):
        if id_ in old:
            assert xy == old[id_], "existing points keep their place"
    assert np.isfinite(extended.xy).all() and len(extended) == len(index)

    refit = index.umap("rgb", sample_size=40, clusters=4, refit=True)
    assert refit.fitted == 40 and refit.transformed == len(index) - 40


def test_same_settings_give_the_same_map(index: ImageIndex, tmp_path: Path) -> None:
    a = index.umap("dhash", clusters=3).xy
    other = ImageIndex.open(index.root, index_dir=tmp_path / "second", features=FEATURES)
    other.update(progress=False, workers=0)
    np.testing.assert_allclose(other.umap("dhash", clusters=3).xy, a, atol=1e-4)


def test_similar_images_land_close(index: ImageIndex) -> None:
    projection = index.umap("rgb", clusters=6)
    names = {r.id: Path(r.path).stem for r in index.records(projection.ids)}
    xy = dict(zip(projection.ids.tolist(), projection.xy, strict=True))
    spread = np.ptp(projection.xy, axis=0).max()
    coffee = next(i for i, n in names.items() if n == "coffee")
    mirror = next(i for i, n in names.items() if n == "coffee_mirror")
    assert np.linalg.norm(xy[coffee] - xy[mirror]) < 0.25 * spread


def test_hdbscan_is_the_default_clustering(index: ImageIndex) -> None:
    labels = index.umap("rgb", min_cluster_size=5).clusters
    assert labels.min() >= -1 and len(set(labels.tolist()) - {-1}) >= 2


def test_readable_errors(index: ImageIndex, tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match="feature 'embedding' is not in this index"):
        index.umap("embedding")
    with pytest.raises(ProjectionError, match="cannot map 'thumb'"):
        index.umap("thumb")
    with pytest.raises(ProjectionError, match=r"no UMAP map of 'dhash' yet.*imrec umap"):
        index.projection("dhash")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(data.coffee()).save(tiny / f"{name}.jpg")
    small = ImageIndex.open(tiny, features=FEATURES)
    small.update(progress=False, workers=0)
    with pytest.raises(ProjectionError, match="needs at least 5 images; this index has 3"):
        small.umap("rgb")


def test_cli_umap(index: ImageIndex, capsys: pytest.CaptureFixture[str]) -> None:
    from imrec_widgets.cli import main

    assert main(["umap", str(index.root), "--feature", "dhash", "--clusters", "3"]) == 0
    assert f"mapped {len(index)} images by dhash" in capsys.readouterr().out
    assert main(["umap", str(index.root), "--feature", "embedding"]) == 1
    assert "not in this index" in capsys.readouterr().err
