// Unit tests of the map layer's pure helpers exported by imrec_widgets/static/umap_map.js (run by tests/test_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  axisMap,
  cellRange,
  clipTransform,
  cullOrder,
  defaultPointSize,
  drawOrder,
  gridCells,
  lodOrder,
  movingCount,
  refineStep,
  settleDelay,
  viewCenter,
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

test("clipTransform relative to a float32 centre stays exact at a deep zoom", () => {
  // A 1e-5 wide view around (12.3, -9.7), 560 x 520 CSS pixels; float32 points across it land
  // where float64 puts them, computed in float32 as the shader does.
  const f = Math.fround;
  const [x0, y0] = [12.3, -9.7];
  const span = 1e-5;
  const xMap = axisMap([x0 - span / 2, x0 + span / 2], [0, 560]);
  const yMap = axisMap([y0 - span / 2, y0 + span / 2], [520, 0]);
  const center = [viewCenter([x0 - span / 2, x0 + span / 2]), viewCenter([y0 - span / 2, y0 + span / 2])];
  const { scale, offset } = clipTransform(xMap, yMap, 560, 520, center);
  const a = f((2 * xMap.a) / 560);
  const b = f((2 * xMap.b) / 560 - 1);
  let worst = 0;
  let worstOld = 0;
  for (let k = -4; k <= 4; k++) {
    const x = f(x0 + (k * span) / 10);
    const y = f(y0 - (k * span) / 10);
    const exactX = (xMap.a * x + xMap.b) / 280 - 1; // clip x in float64
    const exactY = 1 - (yMap.a * y + yMap.b) / 260;
    const clipX = f(f(f(x - f(center[0])) * f(scale[0])) + f(offset[0]));
    const clipY = f(f(f(y - f(center[1])) * f(scale[1])) + f(offset[1]));
    worst = Math.max(worst, Math.abs(clipX - exactX) * 280, Math.abs(clipY - exactY) * 260);
    worstOld = Math.max(worstOld, Math.abs(f(f(a * x) + b) - exactX) * 280);
  }
  assert.ok(worst < 0.1, `${worst} pixels off`);
  assert.ok(worstOld > 5, `${worstOld}`); // a * x + b in float32: what this transform is for
});

test("lodOrder is a permutation whose prefixes cover the map evenly", () => {
  const count = 20_000;
  const x = new Float32Array(count);
  const y = new Float32Array(count);
  // 19,000 points in one dense corner blob, 1,000 spread over the rest of the square.
  for (let i = 0; i < count; i++) {
    const dense = i < 19_000;
    x[i] = dense ? (i % 137) / 1370 : ((i * 7919) % 1000) / 1000;
    y[i] = dense ? (i % 139) / 1390 : ((i * 104729) % 997) / 997;
  }
  const order = lodOrder(x, y, 16);
  assert.equal(new Set(order).size, count);
  const prefix = order.subarray(0, 2_000);
  const sparse = Array.from(prefix).filter((i) => i >= 19_000).length;
  assert.ok(sparse > 400, `only ${sparse} of the 2,000 first points outside the dense corner`);
  assert.deepEqual(Array.from(lodOrder(x, y, 16)), Array.from(order)); // fixed: no flicker
});

test("drawOrder puts the selected points last, each part keeping its order", () => {
  const lod = Uint32Array.from([4, 1, 3, 0, 2]);
  const mask = Uint8Array.from([0, 1, 0, 0, 1]);
  const { order, selected } = drawOrder(lod, mask);
  assert.deepEqual(Array.from(order), [3, 0, 2, 4, 1]);
  assert.equal(selected, 2);
  assert.deepEqual(drawOrder(lod, new Uint8Array(0)).selected, 0);
});

test("movingCount fits the frame budget, within bounds", () => {
  assert.equal(movingCount(1_000_000, 0), 1_000_000); // nothing measured yet: everything
  assert.equal(movingCount(1_000_000, 0.001, 25), 25_000);
  assert.equal(movingCount(1_000_000, 0.01, 25), 20_000); // never fewer than the minimum
  assert.equal(movingCount(50_000, 0.0001, 25), 50_000); // a small map is always drawn whole
});

test("gridCells and cellRange: every point inside a rectangle is in the cells of its range", () => {
  const n = 5_000;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  let seed = 7;
  const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  for (let i = 0; i < n; i++) [x[i], y[i]] = [random() * 10 - 3, random() * 4 + 100];
  const { cells, bounds, grid } = gridCells(x, y, 16);
  assert.deepEqual(bounds.map((v) => Math.round(v)), [-3, 7, 100, 104]);
  for (const rect of /** @type {[number, number, number, number][]} */ ([
    [0, 1, 101, 102], [-5, -2.9, 99, 100.01], [6.99, 20, 103.5, 103.6], [2, 2, 102, 102],
  ])) {
    const range = cellRange(bounds, grid, rect);
    assert.ok(range);
    const [cx0, cx1, cy0, cy1] = range;
    for (let i = 0; i < n; i++) {
      if (x[i] < rect[0] || x[i] > rect[1] || y[i] < rect[2] || y[i] > rect[3]) continue;
      const [cx, cy] = [cells[i] % grid, Math.floor(cells[i] / grid)];
      assert.ok(cx >= cx0 && cx <= cx1 && cy >= cy0 && cy <= cy1, `point ${i} outside its range`);
    }
  }
  assert.equal(cellRange(bounds, grid, [8, 9, 101, 102]), null); // right of every point
  assert.deepEqual(cellRange(bounds, grid, [-100, 100, 0, 200]), [0, 15, 0, 15]);
});

test("cullOrder keeps the order's entries in the range's cells, in order, each part apart", () => {
  const grid = 4;
  // Entries 0..7 of an order: cells, and which are selected (the last 3).
  const order = Uint32Array.from([10, 11, 12, 13, 14, 15, 16, 17]);
  const orderCells = Uint16Array.from([0, 5, 15, 6, 5, 0, 6, 10]);
  const out = new Uint32Array(order.length);
  const { front, back } = cullOrder(order, orderCells, 5, grid, [1, 2, 1, 2], out);
  assert.deepEqual([front, back], [3, 2]);
  assert.deepEqual(Array.from(out.subarray(0, 5)), [11, 13, 14, 16, 17]);
  assert.deepEqual(cullOrder(order, orderCells, 5, grid, null, out), { front: 0, back: 0 });
  const all = cullOrder(order, orderCells, 8, grid, [0, 3, 0, 3], out);
  assert.deepEqual(all, { front: 8, back: 0 });
  assert.deepEqual(Array.from(out), Array.from(order));
});

test("refineStep completes a picture that ends as one full draw would: selected last, on top", () => {
  for (const [fronts, backs, front, back, budget] of [
    [1000, 0, 20, 0, 300], [1000, 400, 20, 8, 300], [10, 900, 1, 90, 50], [0, 50, 0, 5, 7], [500, 500, 500, 500, 9],
  ]) {
    let state = { front, back, stale: 0 };
    const drawn = [];
    let frames = 0;
    while (state.front < fronts || state.back < backs) {
      const step = refineStep(state, fronts, backs, budget);
      const added = step.ranges.reduce((sum, r) => sum + r.to - r.from, 0);
      assert.ok(added > 0 && added <= budget, `frame ${frames} adds ${added}`);
      // Points never leave the picture: what it shows never shrinks.
      assert.ok(step.state.front + Math.max(step.state.back, step.state.stale) >= state.front + Math.max(state.back, state.stale));
      drawn.push(...step.ranges);
      state = step.state;
      assert.ok(++frames < 10_000);
    }
    assert.equal(state.stale, 0);
    // Every unselected entry after the first frame's once, in order ...
    const fronted = drawn.filter((r) => r.part === "front").flatMap((r) => Array.from({ length: r.to - r.from }, (_, k) => r.from + k));
    assert.deepEqual(fronted, Array.from({ length: fronts - front }, (_, k) => front + k));
    // ... and after the last of them, every selected entry in order: the full draw's ending.
    const lastFront = drawn.map((r) => r.part).lastIndexOf("front");
    const backed = drawn.slice(lastFront + 1).flatMap((r) => Array.from({ length: r.to - r.from }, (_, k) => r.from + k));
    const expected = lastFront < 0 ? Array.from({ length: backs - back }, (_, k) => back + k) : Array.from({ length: backs }, (_, k) => k);
    assert.deepEqual(backed, expected);
  }
});

test("settleDelay waits longer between slow moves, within bounds", () => {
  assert.equal(settleDelay(16), 100);
  assert.equal(settleDelay(120), 180);
  assert.equal(settleDelay(900), 300);
  assert.equal(settleDelay(5_000), 100); // a new gesture
  assert.equal(settleDelay(Infinity), 100);
});
