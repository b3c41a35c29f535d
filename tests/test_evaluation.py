from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import bqplot
import numpy as np
import pytest
from PIL import Image

from imrec_widgets import ImageIndex
from imrec_widgets.cli import main
from imrec_widgets.evaluation import COLUMNS, EvaluationReport, _relevance, _row, folder_labels
from imrec_widgets.features import MODE_METRICS


@pytest.fixture(scope="module")
def report(labeled_index: ImageIndex) -> EvaluationReport:
    return labeled_index.evaluate(k=5)


def test_every_mode_metric_hybrid_and_random(report: EvaluationReport) -> None:
    expected = [(mode, metric) for mode, metrics in MODE_METRICS.items() for metric in metrics]
    assert [(row["mode"], row["metric"]) for row in report[: len(expected)]] == expected
    assert [row["mode"] for row in report[len(expected) :]] == ["hybrid", "random"]
    assert report[-2]["metric"] == "0.7 embedding/cosine + 0.3 rgb/euclidean"
    for row in report:
        assert tuple(row) == COLUMNS
        assert row["k"] == 5 and row["queries"] == 72
        for measure in ("precision", "recall", "mAP"):
            assert 0.0 <= row[measure] <= 1.0
        assert (row["ms_per_query"] is None) == (row["mode"] == "random")
    assert (report.images, report.labels, report.k) == (72, 12, 5)


def test_embedding_beats_the_random_baseline_by_far(report: EvaluationReport) -> None:
    rows = {(row["mode"], row["metric"]): row for row in report}
    embedding, random = rows[("embedding", "cosine")], rows[("random", "-")]
    # Measured on this set: embedding mAP@5 1.000, P@5 1.000; random mAP@5 0.030, P@5 0.058.
    assert embedding["mAP"] >= 0.9
    assert embedding["mAP"] >= 10 * random["mAP"]
    assert embedding["precision"] >= 10 * random["precision"]
    # 5 relevant of 71 others: a random ranking is expected to reach precision 5/71.
    assert report.expected_random_precision == pytest.approx(5 / 71)
    assert abs(random["precision"] - 5 / 71) < 0.04
    # With 5 relevant images and k=5, precision equals recall.
    assert embedding["precision"] == pytest.approx(embedding["recall"])
    assert report.best()["mode"] in ("embedding", "hybrid")


def test_measures_on_a_known_ranking() -> None:
    hits = _relevance([[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1]], np.array([1, 1, 1]), 5)
    assert hits.tolist()[2] == [True, True, False, False, False]
    row = _row("m", "x", 5, hits, np.array([2, 4, 2]), 1.5)
    assert row["precision"] == pytest.approx((2 / 5 + 1 / 5 + 2 / 5) / 3)
    assert row["recall"] == pytest.approx((1 + 1 / 4 + 1) / 3)
    # AP@5: (1/1 + 2/3) / 2, (1/5) / 4, (1 + 1) / 2
    assert row["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 5) / 4 + 1.0) / 3)
    assert row["ms_per_query"] == 1.5


def test_labels_from_csv_and_mapping_match_folder_labels(
    labeled_index: ImageIndex, tmp_path: Path
) -> None:
    ids = labeled_index.ids()
    records = labeled_index.records(ids)
    by_path = tmp_path / "by_path.csv"
    with by_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for i, record in enumerate(records):
            name = (
                record.path if i % 2 else str(labeled_index.root / record.path)
            )  # relative or absolute
            writer.writerow([name, record.path.split("/")[0]])
        writer.writerow(["not/indexed.jpg", "ghost"])
    by_id = tmp_path / "by_id.csv"
    by_id.write_text("id,label\n" + "".join(f"{r.id},{r.path.split('/')[0]}\n" for r in records))
    modes = ["dhash", "rgb:cosine"]
    reference = labeled_index.evaluate(k=5, modes=modes)
    mapping = {r.id: r.path.split("/")[0] for r in records}
    assert folder_labels(labeled_index) == mapping
    for labels in (by_path, by_id, mapping):
        got = labeled_index.evaluate(labels=labels, k=5, modes=modes)
        assert [row["mAP"] for row in got] == [row["mAP"] for row in reference]

    # Coarser labels (by copy kind) change the answer: the labels really are used.
    kinds = {r.id: r.path.split("/")[1] for r in records}
    assert labeled_index.evaluate(labels=kinds, k=5, modes=modes)[0]["mAP"] < reference[0]["mAP"]


def test_only_labelled_images_are_searched_and_scored(labeled_index: ImageIndex) -> None:
    # Two labels of six images each; the other 60 images are not searched at all.
    records = labeled_index.records(labeled_index.ids())
    labels = {
        r.id: r.path.split("/")[0] for r in records if r.path.startswith(("brick/", "camera/"))
    }
    labels[records[0].id] = "alone"  # a label of one image: searchable, never a query
    report = labeled_index.evaluate(labels=labels, k=3, modes=["embedding:cosine"])
    assert (report.images, report.labels, report[0]["queries"]) == (13, 3, 12)
    assert report[0]["precision"] == pytest.approx(1.0)
    assert report.expected_random_precision == pytest.approx(5 / 12)


def test_save_html_and_chart(report: EvaluationReport, tmp_path: Path) -> None:
    rows = list(csv.DictReader(report.save(tmp_path / "out.csv").open()))
    assert [row["mode"] for row in rows] == [row["mode"] for row in report]
    assert float(rows[0]["mAP"]) == pytest.approx(report[0]["mAP"])
    assert rows[-1]["ms_per_query"] == ""
    document = json.loads(report.save(tmp_path / "out.json").read_text())
    assert document["rows"] == list(report) and document["k"] == 5
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        report.save(tmp_path / "out.txt")

    page = report._repr_html_()
    assert page.count("<tr>") == len(report) + 1
    assert "mAP@5" in page and "<b>1.000</b>" in page
    text = report.to_text()
    assert text.splitlines()[0].split() == ["mode", "metric", "P@5", "R@5", "mAP@5", "ms/query"]
    assert len(text.splitlines()) == len(report) + 2

    figure = report.chart()
    assert isinstance(figure, bqplot.Figure)
    bars = figure.marks[0]
    assert isinstance(bars, bqplot.Bars) and bars.type == "grouped"
    assert bars.x[0] == "embedding/cosine" and bars.x[-1] == "random"
    assert np.asarray(bars.y).shape == (3, len(report))
    assert np.asarray(report.chart(["mAP"]).marks[0].y).shape in ((1, len(report)), (len(report),))
    with pytest.raises(ValueError, match="unknown measure"):
        report.chart(["accuracy"])


def test_cli_evaluate(
    labeled_index: ImageIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main(
        [
            "evaluate",
            str(labeled_index.root),
            "-k",
            "5",
            "--modes",
            "dhash",
            "rgb:cosine,hybrid",
            "--weights",
            "rgb=1,dhash=1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["mode", "metric", "P@5"]
    assert [line.split()[0] for line in printed[1:5]] == ["dhash", "rgb", "hybrid", "random"]
    assert "72 labelled images, 12 labels, 72 queries, k=5" in printed[5]
    assert printed[-1] == f"wrote {out}"
    assert [row["mode"] for row in json.loads(out.read_text())["rows"]] == [
        "dhash",
        "rgb",
        "hybrid",
        "random",
    ]

    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\na.jpg,x\n")
    assert main(["evaluate", str(labeled_index.root), "--labels", str(labels)]) == 1
    assert "needs a header row with columns id,label or path,label" in capsys.readouterr().err
    assert main(["evaluate", str(labeled_index.root), "--modes", "colour"]) == 1
    assert "unknown mode 'colour'" in capsys.readouterr().err


def test_bad_arguments(labeled_index: ImageIndex, photos: Path) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        labeled_index.evaluate(k=0)
    with pytest.raises(ValueError, match="no label has two searchable images"):
        labeled_index.evaluate(labels={int(i): str(i) for i in labeled_index.ids()})
    with pytest.raises(ValueError, match="choose from euclidean, manhattan, cosine"):
        labeled_index.evaluate(modes=["rgb:hamming"])

    # Images directly in the root folder have no label; an index without embeddings skips hybrid.
    shutil.copy(next(photos.rglob("*.jpg")), photos / "loose.jpg")
    Image.new("RGB", (40, 30), (10, 200, 30)).save(photos / "people" / "green.png")
    cheap = ImageIndex.open(photos, features=["rgb", "dhash", "thumb"])
    cheap.update(progress=False)
    labels = folder_labels(cheap)
    assert len(labels) == len(cheap) - 1 and "loose.jpg" not in {
        r.path for r in cheap.records(list(labels))
    }
    report = cheap.evaluate(k=3)
    assert [row["mode"] for row in report] == ["rgb", "rgb", "rgb", "dhash", "random"]
    with pytest.raises(ValueError, match="not in this index"):
        cheap.evaluate(modes=["embedding"])
