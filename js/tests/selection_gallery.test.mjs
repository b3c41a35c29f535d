// Unit tests of the pure helpers exported by imrec_widgets/static/selection_gallery.js (run by tests/test_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { cellTitle, fileName } from "../../imrec_widgets/static/selection_gallery.js";

test("cellTitle says what a click does", () => {
  assert.equal(
    cellTitle({ id: 3, path: "a/cat.jpg", out: false }),
    "a/cat.jpg: click to leave it out of the selection",
  );
  assert.equal(
    cellTitle({ id: 3, path: "a/cat.jpg", out: true }),
    "a/cat.jpg: left out of the selection; click to take it back",
  );
});

test("fileName is the last part of a path", () => {
  assert.deepEqual(["a/b/c.jpg", "c.jpg", "a/"].map(fileName), ["c.jpg", "c.jpg", ""]);
});
