from __future__ import annotations

import inspect
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from index_cache import IndexOf
from PIL import Image, ImageOps
from scipy.spatial.distance import cdist
from skimage import data

from imrec_widgets import EmptyIndexError, ImageIndex
from imrec_widgets import searcher as searcher_module
from imrec_widgets.cli import main
from imrec_widgets.errors import ImageDecodeError
from imrec_widgets.features import MODE_METRICS
from imrec_widgets.features.thumbnails import fitted_size, row_jpeg
from imrec_widgets.imageio import THUMBNAIL_SIDE
from imrec_widgets.protocols import IndexView
from imrec_widgets.request import Scope, SearchOptions
from imrec_widgets.results import short_name

SCIPY_METRIC = {"cosine": "cosine", "euclidean": "euclidean", "manhattan": "cityblock"}


@pytest.fixture(scope="module")
def index(
    variant_folder: Path, tmp_path_factory: pytest.TempPathFactory, index_of: IndexOf
) -> ImageIndex:
    """The 90 variant photos with every feature (the CNN's index of them is shared with
    test_tensorboard's), plus a black and a white picture."""
    root = tmp_path_factory.mktemp("search") / "photos"
    shutil.copytree(variant_folder, root)
    idx = index_of(root)
    Image.new("RGB", (64, 48), (0, 0, 0)).save(root / "black.png")
    Image.new("RGB", (64, 48), (255, 255, 255)).save(root / "white.png")
    idx.update(progress=False)
    return idx


@pytest.fixture(scope="module")
def query_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo that is not in the index: the astronaut, flipped upside down and darkened."""
    path = tmp_path_factory.mktemp("query") / "query.jpg"
    ImageOps.flip(Image.fromarray(data.astronaut())).point(lambda v: int(v * 0.8)).save(path)
    return path


def reference(
    index: ImageIndex, mode: str, metric: str, vector: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    ids = index.ids()
    stored = index.features(mode, ids)
    if metric == "hamming":
        bits = np.unpackbits(stored, axis=1).astype(bool)
        query = np.unpackbits(vector[None], axis=1).astype(bool)
        distances = cdist(query, bits, "hamming")[0] * bits.shape[1]
    else:
        distances = cdist(
            vector[None].astype(np.float64), stored.astype(np.float64), SCIPY_METRIC[metric]
        )[0]
    order = np.lexsort((ids, distances))
    return ids[order], distances[order]


@pytest.mark.parametrize(
    ("mode", "metric"), [(m, x) for m, metrics in MODE_METRICS.items() for x in metrics]
)
def test_matches_brute_force_for_every_mode_and_metric(
    index: ImageIndex, query_file: Path, mode: str, metric: str
) -> None:
    vector, _ = index.searcher.vectors(query_file, mode)
    ref_ids, ref_dist = reference(index, mode, metric, vector[0])
    for k in (1, 7, len(index) + 5):
        hits = index.search(query_file, mode=mode, metric=metric, k=k)
        assert len(hits) == min(k, len(index))
        got = np.array(hits.distances)
        np.testing.assert_allclose(got, ref_dist[: len(hits)], rtol=1e-4, atol=1e-4)
        assert got.tolist() == sorted(got.tolist())
        # Ids agree wherever the reference distance is not tied with a neighbour's.
        for rank, hit in enumerate(hits):
            tied = np.isclose(ref_dist, ref_dist[rank], rtol=1e-4, atol=1e-5).sum() > 1
            if not tied:
                assert hit.id == ref_ids[rank], (mode, metric, rank)
        assert [h.rank for h in hits] == list(range(len(hits)))
        assert all(h.path.is_file() for h in hits)


def test_default_metrics_and_wrong_pairs(index: ImageIndex, query_file: Path) -> None:
    assert index.search(query_file, mode="embedding", k=1).metric == "cosine"
    assert index.search(query_file, mode="rgb", k=1).metric == "euclidean"
    assert index.search(query_file, mode="dhash", k=1).metric == "hamming"
    with pytest.raises(ValueError, match="choose from euclidean, manhattan, cosine"):
        index.search(query_file, mode="rgb", metric="hamming")
    with pytest.raises(ValueError, match="choose from hamming"):
        index.search(query_file, mode="ahash", metric="cosine")
    with pytest.raises(
        ValueError, match="unknown mode 'colour'; choose from embedding, rgb, ahash, dhash"
    ):
        index.search(query_file, mode="colour")
    for bad_k in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(query_file, mode="rgb", k=bad_k)


def test_every_query_form_gives_the_same_answer(index: ImageIndex, query_file: Path) -> None:
    expected = index.search(query_file, mode="rgb", k=5)
    image = Image.open(query_file)
    forms = [str(query_file), query_file.read_bytes(), image, np.asarray(image)]
    for form in forms:
        hits = index.search(form, mode="rgb", k=5)
        assert hits.ids == expected.ids, type(form)
    with pytest.raises(ImageDecodeError):
        index.search(b"%PDF-1.4 not an image", mode="rgb")
    with pytest.raises(FileNotFoundError):
        index.search(query_file.parent / "missing.jpg", mode="rgb")


def test_query_by_id_excludes_itself(index: ImageIndex) -> None:
    coffee = next(r.id for r in index.records() if r.path == "objects/coffee.jpg")
    hits = index.search(coffee, mode="embedding", k=4)
    assert coffee not in hits.ids
    assert {h.path.name for h in hits[:3]} == {
        "coffee_warm.jpg",
        "coffee_mirror.jpg",
        "coffee_small.jpg",
    }
    kept = index.search(coffee, mode="embedding", k=4, exclude_self=False)
    assert kept[0].id == coffee and kept[0].distance == pytest.approx(0, abs=1e-5)
    with pytest.raises(ValueError, match="no searchable image with id 99999"):
        index.search(99999, mode="rgb")


def test_several_images_are_one_query(index: ImageIndex) -> None:
    rocket = next(r.id for r in index.records() if r.path == "objects/rocket.jpg")
    crop = next(r.id for r in index.records() if r.path == "objects/rocket_crop.jpg")
    both = index.search([rocket, crop], mode="embedding", k=3)
    assert rocket not in both.ids and crop not in both.ids
    assert all("rocket" in h.path.name for h in both)
    vectors = index.features("embedding", [rocket, crop])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    direct = index.search(unit.mean(axis=0), mode="embedding", k=5)
    assert [i for i in direct.ids if i not in (rocket, crop)][:3] == both.ids
    hashes = index.search([rocket, crop], mode="dhash", k=3)
    assert len(hashes) == 3


def test_search_many_is_search_for_each(index: ImageIndex, query_file: Path) -> None:
    ids = index.ids()[:3].tolist()
    batch = index.search_many([query_file, *ids], mode="embedding", k=4)
    assert len(batch) == 4
    for query, hits in zip([query_file, *ids], batch, strict=True):
        assert hits.ids == index.search(query, mode="embedding", k=4).ids


def test_restrictions_ids_and_where(index: ImageIndex, query_file: Path) -> None:
    animals = [r.id for r in index.records() if r.path.startswith("animals/")]
    hits = index.search(query_file, mode="rgb", k=100, ids=animals)
    assert sorted(hits.ids) == sorted(animals)
    where = index.search(query_file, mode="rgb", k=100, where="path LIKE 'animals/%'")
    assert where.ids == hits.ids
    assert index.search(query_file, mode="rgb", ids=[]) == []
    with pytest.raises(ValueError, match="bad where= condition"):
        index.search(query_file, mode="rgb", where="no_such_column = 1")


def test_the_filters_are_one_scope_given_as_keywords_or_whole(
    index: ImageIndex, query_file: Path
) -> None:
    as_keywords = index.search(query_file, mode="rgb", k=50, folder="animals", where="width > 0")
    scope = Scope(folder="animals", where="width > 0")
    assert index.search(query_file, mode="rgb", k=50, scope=scope).ids == as_keywords.ids
    assert [r.path.split("/")[0] for r in index.records(as_keywords.ids)] == ["animals"] * len(
        as_keywords
    )
    assert scope.resolve(index).tolist() == sorted(as_keywords.ids)
    assert Scope().everything and Scope().resolve(index) is None
    assert Scope(ids=[]).resolve(index).tolist() == []  # a filter that keeps nothing is not "all"
    with pytest.raises(ValueError, match="not both"):
        index.search(query_file, mode="rgb", ids=[1], scope=scope)
    with pytest.raises(TypeError, match="takes a Scope"):
        index.search(query_file, mode="rgb", scope={"folder": "animals"})


@dataclass(frozen=True)
class _FormatScope(Scope):
    """A filter the package does not have, added the one way a filter is added."""

    file_format: str | None = None

    def resolve(self, index: IndexView) -> np.ndarray | None:
        allowed = super().resolve(index)
        if self.file_format is None:
            return allowed
        kept = index.catalog.ids_where("format = ?", [self.file_format])
        return np.intersect1d(index.searcher.ok_ids() if allowed is None else allowed, kept)


def test_a_new_filter_is_a_scope_field_and_nothing_else(
    index: ImageIndex, query_file: Path
) -> None:
    pngs = sorted(r.id for r in index.records() if r.format == "PNG")
    assert len(pngs) >= 2
    found = index.search(query_file, mode="rgb", k=50, scope=_FormatScope(file_format="PNG"))
    assert sorted(found.ids) == pngs
    batch = index.search_many(
        [query_file, pngs[0]], mode="dhash", k=50, scope=_FormatScope(file_format="PNG")
    )
    assert sorted(batch[0].ids) == pngs and sorted(batch[1].ids) == pngs[1:]
    hybrid = index.search(query_file, mode="hybrid", k=50, scope=_FormatScope(file_format="PNG"))
    assert sorted(hybrid.ids) == pngs
    # below the facade no filter is named: the searcher gets the options and the scope's ids
    for method in (searcher_module.Searcher.search_many, searcher_module.Searcher.search_hybrid):
        assert list(inspect.signature(method).parameters) == [
            "self",
            "queries",
            "options",
            "allowed",
        ]


def test_search_options_refuse_what_cannot_go_together_before_any_index_is_read() -> None:
    assert SearchOptions().modes(["embedding", "rgb"]) == ["embedding"]
    assert SearchOptions("hybrid").modes(["embedding", "rgb"]) == ["embedding", "rgb"]
    for bad, message in (
        ({"k": 0}, "k must be a positive integer"),
        ({"k": True}, "k must be a positive integer"),
        ({"exact": "yes"}, "exact= takes True, False or None"),
        ({"weights": {"rgb": 1.0}}, "weights= is for mode='hybrid'"),
        ({"exact": False, "client": object()}, "leave out client="),
        ({"mode": "hybrid", "negatives": [1]}, "negatives= refines a single-mode search"),
        ({"mode": "hybrid", "client": object()}, "not mode='hybrid'"),
        ({"mode": "hybrid", "exact": False}, "exact=False \\(ANN\\)"),
        ({"mode": "hybrid", "metric": "cosine"}, "leave metric=None"),
    ):
        with pytest.raises(ValueError, match=message):
            SearchOptions(**bad)


def test_cli_search_filters_are_the_scope(
    index: ImageIndex, query_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index.tag([r.id for r in index.records() if r.path.startswith("animals/")][:3], "cli-pick")
    try:
        argv = ["search", str(query_file), "--root", str(index.root), "--mode", "rgb", "--json"]
        assert main([*argv, "-k", "50", "--folder", "animals", "--glob", "*.jpg"]) == 0
        hits = [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]
        scoped = Scope(folder="animals", path_glob="*.jpg")
        assert hits == index.search(query_file, mode="rgb", k=50, scope=scoped).ids
        assert hits and sorted(hits) == scoped.resolve(index).tolist()
        assert main([*argv, "--tag", "cli-pick", "--where", "width > 0"]) == 0
        hits = [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]
        assert sorted(hits) == index.tagged("cli-pick").tolist()
        assert main([*argv, "-k", "200", "--exclude-tag", "cli-pick"]) == 0
        hits = [h["id"] for h in json.loads(capsys.readouterr().out)["hits"]]
        assert len(hits) == len(index) - 3 and not set(hits) & set(index.tagged("cli-pick"))
        assert main([*argv, "--tag", "no-such-tag"]) == 1
        assert "no searchable image is tagged 'no-such-tag'" in capsys.readouterr().err
    finally:
        index.untag(index.tagged("cli-pick"), "cli-pick")


def test_streamed_search_equals_in_memory(index: ImageIndex, query_file: Path) -> None:
    in_memory = {mode: index.search(query_file, mode=mode, k=12) for mode in MODE_METRICS}
    restricted = index.search(query_file, mode="rgb", k=5, ids=index.ids()[::2])
    budget = index.searcher.memory_budget
    index.searcher.memory_budget = 0
    try:
        for mode, expected in in_memory.items():
            streamed = index.search(query_file, mode=mode, k=12)
            assert streamed.ids == expected.ids, mode
            np.testing.assert_allclose(streamed.distances, expected.distances, rtol=1e-5, atol=1e-6)
        assert index.search(query_file, mode="rgb", k=5, ids=index.ids()[::2]).ids == restricted.ids
    finally:
        index.searcher.memory_budget = budget


def test_black_and_white_images_give_finite_distances(index: ImageIndex) -> None:
    black = next(r.id for r in index.records() if r.path == "black.png")
    for mode, metrics in MODE_METRICS.items():
        for metric in metrics:
            for query in (black, Image.new("RGB", (30, 30), (255, 255, 255))):
                hits = index.search(query, mode=mode, metric=metric, k=len(index))
                assert np.isfinite(hits.distances).all(), (mode, metric)


def test_removed_and_errored_images_never_appear(
    variant_folder: Path, tmp_path: Path, index_of: IndexOf
) -> None:
    root = tmp_path / "photos"
    shutil.copytree(variant_folder, root)
    idx = index_of(root, features=["rgb", "dhash", "thumb"])  # as test_umap_explorer's
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    idx.update(progress=False, workers=0)
    before = idx.search(root / "objects" / "coffee.jpg", mode="rgb", k=1000)
    removed = before[0].path
    removed.unlink()
    idx.update(progress=False, workers=0)
    after = idx.search(root / "objects" / "coffee_warm.jpg", mode="rgb", k=1000)
    assert removed not in after.paths and len(after) == len(before) - 1
    assert all(p.name != "broken.jpg" for p in after.paths)


def test_empty_index_is_a_clear_error(tmp_path: Path) -> None:
    empty = ImageIndex.open(tmp_path)
    with pytest.raises(EmptyIndexError, match="no searchable images"):
        empty.search(Image.new("RGB", (8, 8)), mode="rgb")
    empty.update(progress=False)
    with pytest.raises(EmptyIndexError):
        empty.search(Image.new("RGB", (8, 8)), mode="rgb")


def test_results_html_grid(index: ImageIndex, query_file: Path) -> None:
    hits = index.search(query_file, mode="rgb", k=3)
    page = hits._repr_html_()
    assert page.count("<img") == 3 and "data:image/jpeg;base64,/9j/" in page
    assert hits[0].path.name in page and "rgb" in page
    assert "3 hits" in repr(hits)
    # The SearchWidget's stylesheet is global to the page: the repr shares none of its classes.
    static = Path(__file__).resolve().parents[1] / "imrec_widgets" / "static"
    widget_css = (static / "search_widget.css").read_text()
    widget_classes = set(re.findall(r"\.(imrec-[\w-]+)", widget_css))
    repr_classes = {
        name for value in re.findall(r'class="([^"]*)"', page) for name in value.split()
    }
    assert repr_classes and not repr_classes & widget_classes, repr_classes & widget_classes


def test_long_names_in_the_html_grid_keep_their_end() -> None:
    assert short_name("coffee.jpg") == "coffee.jpg"
    name = short_name("immunohistochemistry_mirror.jpg")
    assert (
        len(name) == 26
        and name.endswith("_mirror.jpg")
        and name.startswith("immuno")
        and "…" in name
    )


def test_cli_search(
    index: ImageIndex, query_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "search",
                str(query_file),
                "--root",
                str(index.root),
                "--mode",
                "rgb",
                "-k",
                "3",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in out["hits"]] == index.search(query_file, mode="rgb", k=3).ids
    assert (
        main(
            [
                "search",
                str(query_file),
                "--root",
                str(index.root),
                "--mode",
                "rgb",
                "--metric",
                "hamming",
            ]
        )
        == 1
    )
    assert "not allowed for mode 'rgb'" in capsys.readouterr().err
    coffee = next(r.id for r in index.records() if r.path == "objects/coffee.jpg")
    assert main(["search", str(coffee), "--root", str(index.root), "-k", "2"]) == 0
    assert "coffee_" in capsys.readouterr().out


def test_bytes_query_from_upload(index: ImageIndex) -> None:
    buffer = io.BytesIO()
    Image.fromarray(data.coffee()).save(buffer, format="PNG")
    hits = index.search(buffer.getvalue(), mode="embedding", k=1)
    assert hits[0].path.name.startswith("coffee")


# -- thumbnails: stored ones, else made from the files; the query's come with the results --------


def _image_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_thumbnail_bytes_are_the_stored_ones_else_made_from_the_files(
    photos: Path, tmp_path: Path
) -> None:
    stored = ImageIndex.open(photos, index_dir=tmp_path / "a", features=["dhash", "thumb"])
    made = ImageIndex.open(photos, index_dir=tmp_path / "b", features=["dhash"])
    for index in (stored, made):
        index.update(progress=False, workers=0)
    ids = [int(i) for i in stored.ids()[:3]]
    assert [int(i) for i in made.ids()[:3]] == ids and stored.paths(ids) == made.paths(ids)

    jpegs = stored.thumbnail_bytes(ids)
    assert all(jpeg[:3] == b"\xff\xd8\xff" for jpeg in jpegs)
    for id_, jpeg in zip(ids, jpegs, strict=True):  # the stored files, aspect kept, unpadded
        width, height = Image.open(stored.path(id_)).size
        assert _image_size(jpeg) == fitted_size(width, height, 256)
        assert jpeg == row_jpeg(stored.features("thumb", [id_])[0])

    for id_, jpeg in zip(ids, made.thumbnail_bytes(np.asarray(ids)), strict=True):
        width, height = Image.open(made.path(id_)).size
        size = _image_size(jpeg)
        assert max(size) == THUMBNAIL_SIDE
        assert abs(size[0] / size[1] - width / height) < 0.05  # the file's shape, not a square
    (png,) = made.thumbnail_bytes(ids[:1], format="PNG", side=40)
    assert png[:4] == b"\x89PNG" and max(_image_size(png)) == 40
    assert made.thumbnail_bytes([]) == stored.thumbnail_bytes([]) == []

    made.path(ids[1]).unlink()  # gone since indexing: an empty cell, the others still shown
    first, gone, third = made.thumbnail_bytes(ids)
    assert gone == b"" and first[:3] == third[:3] == b"\xff\xd8\xff"


def test_results_carry_the_query_thumbnails(index: ImageIndex, query_file: Path) -> None:
    first = int(index.ids()[0])
    vector = index.features("rgb", [first])[0]
    hits = index.search([query_file, first, vector], mode="rgb", k=3)
    made, indexed, none = hits.query_thumbnails
    assert none is None  # a feature vector has nothing to show
    assert made[:3] == b"\xff\xd8\xff" and max(_image_size(made)) == THUMBNAIL_SIDE
    assert _image_size(made) == (THUMBNAIL_SIDE, THUMBNAIL_SIDE)  # the astronaut is square
    assert indexed == index.thumbnail_bytes([first])[0]
    assert hits.query_thumbnails == [made, indexed, None]  # made once, kept

    (alone,) = index.search(query_file, mode="hybrid", k=2).query_thumbnails
    assert alone == made
    within_nothing = index.search(query_file, mode="dhash", ids=[])
    assert within_nothing == [] and within_nothing.query_thumbnails == [made]
    many = index.search_many([query_file, first], mode="ahash", k=2)
    assert [r.query_thumbnails for r in many] == [[made], [indexed]]


@pytest.mark.parametrize("mode", ["rgb", "hybrid"])
def test_a_query_image_that_cannot_be_decoded_is_pointed_at(
    index: ImageIndex, query_file: Path, tmp_path: Path, mode: str
) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        index.search([query_file, b"not an image at all"], mode=mode)
    assert caught.value.query_position == 1
    with pytest.raises(ImageDecodeError, match=r"/notes\.txt: ") as caught:
        index.search(_text_file(tmp_path), mode=mode)
    assert caught.value.query_position == 0


def _text_file(folder: Path) -> Path:
    path = folder / "notes.txt"
    path.write_text("a shopping list, not a picture\n")
    return path
