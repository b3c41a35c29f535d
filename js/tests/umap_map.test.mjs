// Unit tests of the map layer's pure helpers exported by imrec_widgets/static/umap_map.js (run by tests/test_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  axisMap,
  defaultPointSize,
  extendPath,
  paletteBytes,
  pathExtent,
  pixelToData,
  tooltipPosition,
  typedArray,
  zoomDomain,
} from "../../imrec_widgets/static/umap_map.js";

test("axisMap and pixelToData invert each other, reversed ranges included", () => {
  const x = axisMap([-2, 8], [5, 505]);
  assert.equal(x.a * -2 + x.b, 5);
  assert.equal(x.a * 8 + x.b, 505);
  assert.equal(pixelToData(x, 255), 3);
  const y = axisMap([0, 10], [400, 0]); // a y axis: larger values higher up
  assert.equal(y.a * 10 + y.b, 0);
  assert.equal(pixelToData(y, 100), 7.5);
  const flat = axisMap([3, 3], [0, 100]); // an empty domain does not divide by zero
  assert.equal(flat.a, 0);
});

test("defaultPointSize shrinks as the map grows", () => {
  const sizes = [100, 10_000, 100_000, 500_000, 1_000_000].map(defaultPointSize);
  assert.deepEqual(sizes, [8, 6, 4, 3, 2]);
});

test("extendPath drops vertices closer than the step", () => {
  const path = [[0, 0]];
  assert.equal(extendPath(path, [1, 1]), false);
  assert.equal(extendPath(path, [3, 0]), true);
  assert.equal(extendPath(path, [3, 1.5], 2), false);
  assert.deepEqual(path, [[0, 0], [3, 0]]);
});

test("pathExtent measures how far a gesture moved", () => {
  assert.equal(pathExtent([[1, 1], [2, 5], [0, 3]]), 4);
  assert.equal(pathExtent([]), 0);
});

test("paletteBytes turns hex colours into RGBA, unknown ones grey", () => {
  assert.deepEqual(Array.from(paletteBytes(["#ff0080", "#0f0", "red"])), [
    255, 0, 128, 255, 0, 255, 0, 255, 160, 160, 160, 255,
  ]);
  assert.equal(paletteBytes([]).length, 4);
});

test("tooltipPosition keeps the tooltip beside the pointer and inside the figure", () => {
  assert.deepEqual(tooltipPosition([100, 100], [50, 40], [560, 520]), [112, 112]);
  assert.deepEqual(tooltipPosition([540, 500], [50, 40], [560, 520]), [478, 448]); // flips left/up
  assert.deepEqual(tooltipPosition([5, 5], [600, 600], [560, 520]), [0, 0]);
});

test("typedArray reads ipywidgets' DataView buffers, aligned or not", () => {
  const floats = new Float32Array([1.5, -2, 3]);
  assert.deepEqual(Array.from(typedArray(new DataView(floats.buffer), Float32Array)), [1.5, -2, 3]);
  const shifted = new Uint8Array(13);
  shifted.set(new Uint8Array(floats.buffer), 1);
  const view = new DataView(shifted.buffer, 1, 12);
  assert.deepEqual(Array.from(typedArray(view, Float32Array)), [1.5, -2, 3]);
  assert.equal(typedArray(null, Uint8Array).length, 0);
});

test("zoomDomain keeps the point under the pointer where it is", () => {
  assert.deepEqual(zoomDomain([0, 10], 5, 0.5), [2.5, 7.5]);
  assert.deepEqual(zoomDomain([0, 10], 0, 2), [0, 20]);
  const [low, high] = zoomDomain([-3, 9], 1, 0.8);
  assert.ok(Math.abs((1 - low) / (high - low) - (1 - -3) / 12) < 1e-12);
});
