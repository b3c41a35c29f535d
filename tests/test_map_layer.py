"""MapLayer with no browser: what it sends, and every front-end message treated as untrusted."""

from __future__ import annotations

import numpy as np
import pytest
from bqplot import Figure, LinearScale

from imrec_widgets.errors import MapMessageError
from imrec_widgets.widgets.map_layer import MAX_VERTICES, MapLayer, parse_message


@pytest.fixture
def layer() -> MapLayer:
    x_scale, y_scale = LinearScale(min=0.0, max=1.0), LinearScale(min=0.0, max=1.0)
    return MapLayer(figure=Figure(), x_scale=x_scale, y_scale=y_scale)


def _from_front_end(layer: MapLayer, content, buffers=()) -> None:
    """Deliver ``content`` as the browser would: a comm message of method "custom"."""
    layer._handle_msg(
        {"content": {"data": {"method": "custom", "content": content}}, "buffers": list(buffers)}
    )


def test_points_cross_as_binary_arrays(layer: MapLayer) -> None:
    xy = np.array([[0.5, -1.0], [2.0, 3.25]], dtype=np.float32)
    layer.set_points(xy, np.array([1, 0]), ["#112233", "#445566"])
    assert np.frombuffer(layer.x, np.float32).tolist() == [0.5, 2.0]
    assert np.frombuffer(layer.y, np.float32).tolist() == [-1.0, 3.25]
    assert np.frombuffer(layer.codes, np.uint8).tolist() == [1, 0]
    assert layer.palette == ["#112233", "#445566"] and layer.mask == b""
    layer.set_selection(np.array([False, True]))
    assert np.frombuffer(layer.mask, np.uint8).tolist() == [0, 1]
    layer.set_selection(np.array([False, False]))  # nothing selected: the plain look, no mask
    assert layer.mask == b""
    with pytest.raises(ValueError, match="2 points but 1 colour codes"):
        layer.set_points(xy, np.array([1]), ["#112233"])


def test_valid_messages_reach_the_handler(layer: MapLayer) -> None:
    seen = []
    layer.on_event(lambda message, buffers: seen.append(message))
    _from_front_end(layer, {"event": "lasso", "polygon": [[0, 0], [1, 0], [0, 1]], "add": True})
    _from_front_end(layer, {"event": "brush", "x": [0.1, 0.5], "y": [0.9, 0.2], "add": False})
    _from_front_end(
        layer, {"event": "hover", "x": 0.5, "y": 0.5, "dx": 0.01, "dy": 0.02, "radius": 8}
    )
    assert [m["event"] for m in seen] == ["lasso", "brush", "hover"]
    assert seen[0]["polygon"].shape == (3, 2) and seen[0]["add"] is True
    assert seen[1]["x"] == (0.1, 0.5) and seen[1]["y"] == (0.9, 0.2)
    assert seen[2]["dy"] == 0.02 and layer.rejected == 0


@pytest.mark.parametrize(
    "content",
    [
        "lasso",
        {"event": "explode"},
        {"event": "lasso", "polygon": "everything"},
        {"event": "lasso", "polygon": [[0, 0], [1, "a"], [0, 1]]},
        {"event": "lasso", "polygon": [[0, 0], [1, float("nan")], [0, 1]]},
        {"event": "lasso", "polygon": [[0, 0, 0], [1, 1, 1], [0, 1, 1]]},
        {"event": "lasso", "polygon": [[0, 0]] * (MAX_VERTICES + 1)},
        {"event": "lasso", "polygon": [[0, 0], [1, 0], [0, 1]], "add": "yes"},
        {"event": "brush", "x": [0, 1], "y": [0]},
        {"event": "brush", "x": [0, 1e999], "y": [0, 1]},
        {"event": "hover", "x": True, "y": 0, "dx": 1, "dy": 1},
        {"event": "click", "x": 0, "y": 0, "dx": 1},
        # ints past float's range (JSON has no limit): refused, never an OverflowError
        {"event": "click", "x": 10**400, "y": 0, "dx": 1, "dy": 1},
        {"event": "hover", "x": 0, "y": 0, "dx": 1, "dy": 1, "radius": -(10**400)},
        {"event": "brush", "x": [0, 10**400], "y": [0, 1]},
        {"event": "lasso", "polygon": [[0, 0], [10**400, 0], [0, 1]]},
    ],
)
def test_malformed_messages_are_refused(layer: MapLayer, content) -> None:
    seen = []
    layer.on_event(lambda message, buffers: seen.append(message))
    _from_front_end(layer, content)
    assert seen == [] and layer.rejected == 1
    with pytest.raises(MapMessageError):
        parse_message(content)


def test_the_front_end_cannot_write_python_owned_state(layer: MapLayer) -> None:
    layer.set_points(np.zeros((3, 2), np.float32), np.zeros(3), ["#000000"])
    before = {
        name: getattr(layer, name)
        for name in ("x", "codes", "palette", "mask", "tool", "point_size")
    }
    layer._handle_msg(
        {
            "content": {
                "data": {
                    "method": "update",
                    "state": {"tool": "click", "palette": ["#ffffff"], "point_size": 1e9},
                    "buffer_paths": [],
                }
            },
            "buffers": [],
        }
    )
    assert {name: getattr(layer, name) for name in before} == before


def test_status_messages_are_short_strings() -> None:
    assert parse_message({"event": "webgl", "message": "x" * 10_000})["message"] == "x" * 500
    assert parse_message({"event": "error", "message": {"nested": 1}})["message"] == ""
    assert (
        parse_message({"event": "click", "x": 1, "y": 2, "dx": 1, "dy": 1, "radius": 1e6})["radius"]
        == 50.0
    )
