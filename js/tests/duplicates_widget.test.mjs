// Unit tests of the pure helpers exported by imrec_widgets/static/duplicates_widget.js (run by tests/test_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  formatDay,
  formatSize,
  itemFacts,
  thumbnailOffsets,
} from "../../imrec_widgets/static/duplicates_widget.js";

test("formatSize picks a readable unit", () => {
  assert.deepEqual([0, 999, 45_300, 2_400_000, 3e9].map(formatSize), [
    "0 B", "999 B", "45 KB", "2.4 MB", "3.0 GB",
  ]);
  assert.equal(formatSize(Number.NaN), "");
});

test("formatDay is the UTC day of a time in seconds", () => {
  assert.equal(formatDay(1_796_256_000), "2026-12-03");
  assert.equal(formatDay(Number.NaN), "");
});

test("itemFacts joins pixels, size and day and skips what is unknown", () => {
  const item = { id: 1, path: "a.jpg", width: 640, height: 480, bytes: 45_300, modified: 1_796_256_000, distance: 0 };
  assert.equal(itemFacts(item), "640×480 · 45 KB · 2026-12-03");
  assert.equal(itemFacts({ ...item, width: 0 }), "45 KB · 2026-12-03");
});

test("thumbnailOffsets counts the items before each group", () => {
  const group = (n) => ({ keep: 0, identical: false, items: Array.from({ length: n }) });
  assert.deepEqual(thumbnailOffsets([group(3), group(2), group(4)]), [0, 3, 5]);
  assert.deepEqual(thumbnailOffsets([]), []);
});
