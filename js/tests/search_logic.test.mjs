// Unit tests of js/search_logic.js: `node --test js/tests/` (run by tests/test_js.py).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  K_MAX,
  K_MIN,
  MAX_FILES,
  UPLOAD_CHUNK_BYTES,
  baseName,
  cellSize,
  chunkRanges,
  clampK,
  filesFromItems,
  formatBytes,
  formatDistance,
  formatElapsed,
  metricOptions,
  resultTitle,
  summaryText,
  validateFile,
  validateFiles,
} from "../search_logic.js";

const MB = 1_000_000;
const file = (name, size, type) => ({ name, size, type });

describe("validateFile", () => {
  test("accepts images by MIME type", () => {
    assert.equal(validateFile(file("beach.jpg", 2 * MB, "image/jpeg"), 20 * MB), null);
    assert.equal(validateFile(file("x.webp", 10, "image/webp"), 20 * MB), null);
  });

  test("accepts an untyped file with an image extension (the Python decoder has the last word)", () => {
    assert.equal(validateFile(file("scan.TIF", 10, ""), 20 * MB), null);
    assert.equal(validateFile(file("noextension", 10, ""), 20 * MB), null);
  });

  test("refuses PDFs and text files, naming the file and its type", () => {
    const pdf = validateFile(file("paper.pdf", 1000, "application/pdf"), 20 * MB);
    assert.match(pdf, /paper\.pdf is not an image \(application\/pdf\)/);
    const txt = validateFile(file("notes.txt", 12, "text/plain"), 20 * MB);
    assert.match(txt, /notes\.txt is not an image/);
    assert.match(validateFile(file("data.csv", 12, ""), 20 * MB), /not an image file/);
  });

  test("refuses files over the cap, with both sizes readable", () => {
    const msg = validateFile(file("huge.jpg", 25 * MB, "image/jpeg"), 20 * MB);
    assert.equal(msg, "huge.jpg is 25 MB, over the upload limit of 20 MB");
    assert.equal(validateFile(file("edge.jpg", 20 * MB, "image/jpeg"), 20 * MB), null);
    assert.match(validateFile(file("edge.jpg", 20 * MB + 1, "image/jpeg"), 20 * MB), /over the upload limit/);
  });

  test("refuses empty files; a pasted image without a name is described", () => {
    assert.equal(validateFile(file("a.png", 0, "image/png"), 20 * MB), "a.png is empty (0 bytes)");
    assert.match(validateFile({ size: 0, type: "image/png" }, 20 * MB), /^pasted image is empty/);
  });
});

describe("validateFiles", () => {
  test("all or nothing: one bad file refuses the query with its reason", () => {
    const good = file("a.jpg", 10, "image/jpeg");
    assert.deepEqual(validateFiles([good, good], 100), { files: [good, good], error: null });
    const result = validateFiles([good, file("b.pdf", 10, "application/pdf")], 100);
    assert.deepEqual(result.files, []);
    assert.match(result.error, /b\.pdf is not an image/);
  });

  test("an empty selection and too many files are errors", () => {
    assert.equal(validateFiles([], 100).error, "no file was given");
    assert.equal(validateFiles(undefined, 100).error, "no file was given");
    const many = Array.from({ length: MAX_FILES + 1 }, () => file("a.jpg", 1, "image/jpeg"));
    assert.match(validateFiles(many, 100).error, new RegExp(`at most ${MAX_FILES}`));
    assert.equal(validateFiles(many.slice(1), 100).error, null);
  });
});

test("filesFromItems keeps only file items that yield a file", () => {
  const png = { name: "image.png" };
  const items = [
    { kind: "string", type: "text/plain", getAsFile: () => assert.fail("not a file") },
    { kind: "file", type: "image/png", getAsFile: () => png },
    { kind: "file", type: "image/png", getAsFile: () => null },
  ];
  assert.deepEqual(filesFromItems(items), [png]);
  assert.deepEqual(filesFromItems(undefined), []);
});

describe("chunkRanges", () => {
  test("covers every byte exactly once, in order, within the chunk size", () => {
    for (const size of [1, 9, 10, 11, 95]) {
      const ranges = chunkRanges(size, 10);
      assert.equal(ranges[0][0], 0);
      assert.equal(ranges.at(-1)[1], size);
      for (let i = 1; i < ranges.length; i++) assert.equal(ranges[i][0], ranges[i - 1][1]);
      assert.ok(ranges.every(([a, b]) => b > a && b - a <= 10));
    }
    assert.deepEqual(chunkRanges(0, 10), []);
  });

  test("the default chunk keeps a 20 MB upload under the server's 10 MiB message limit", () => {
    assert.ok(UPLOAD_CHUNK_BYTES < 10 * 1024 * 1024);
    assert.equal(chunkRanges(20 * MB).length, Math.ceil((20 * MB) / UPLOAD_CHUNK_BYTES));
    assert.throws(() => chunkRanges(10, 0), RangeError);
  });
});

test("clampK keeps k within bounds and rejects non-numbers", () => {
  assert.equal(clampK("7"), 7);
  assert.equal(clampK(0), K_MIN);
  assert.equal(clampK("-3"), K_MIN);
  assert.equal(clampK(1000), K_MAX);
  assert.equal(clampK("12.6"), 13);
  assert.equal(clampK(""), null);
  assert.equal(clampK("abc"), null);
  assert.equal(clampK(undefined), null);
  assert.deepEqual([K_MIN, K_MAX], [1, 100]);
});

describe("formatting", () => {
  test("formatDistance: hamming as a bit count, others with 4 significant digits", () => {
    assert.equal(formatDistance(12, "hamming"), "12");
    assert.equal(formatDistance(0.123456, "cosine"), "0.1235");
    assert.equal(formatDistance(1234.567, "euclidean"), "1235");
    assert.equal(formatDistance(0, "euclidean"), "0");
    assert.equal(formatDistance(0.00001234, "cosine"), "1.2e-5");
    assert.equal(formatDistance(null, "cosine"), "–");
    assert.equal(formatDistance(Number.NaN, "cosine"), "–");
  });

  test("formatElapsed picks a readable unit", () => {
    assert.equal(formatElapsed(0.2), "<1 ms");
    assert.equal(formatElapsed(3.14159), "3.1 ms");
    assert.equal(formatElapsed(42.4), "42 ms");
    assert.equal(formatElapsed(1234), "1.23 s");
    assert.equal(formatElapsed(65_000), "65.0 s");
    assert.equal(formatElapsed(undefined), "");
  });

  test("formatBytes uses decimal units", () => {
    assert.equal(formatBytes(999), "999 B");
    assert.equal(formatBytes(1500), "1.5 kB");
    assert.equal(formatBytes(20_000_000), "20 MB");
    assert.equal(formatBytes(25_300_000), "25 MB");
    assert.equal(formatBytes(-1), "?");
  });

  test("baseName handles POSIX and Windows paths", () => {
    assert.equal(baseName("/home/a/photos/beach.jpg"), "beach.jpg");
    assert.equal(baseName("C:\\Users\\a\\cat.png"), "cat.png");
    assert.equal(baseName("plain.jpg"), "plain.jpg");
    assert.equal(baseName(undefined), "");
  });

  test("summaryText and resultTitle", () => {
    assert.equal(summaryText(0, "rgb", "euclidean"), "");
    assert.equal(summaryText(1, "rgb", "euclidean"), "1 result · rgb · euclidean");
    assert.equal(summaryText(10, "ahash", "hamming"), "10 results · ahash · hamming");
    const title = resultTitle({ path: "/p/cat.jpg", rank: 0, distance: 3 }, "hamming");
    assert.match(title, /^\/p\/cat\.jpg\n#1 · hamming distance 3/);
  });
});

describe("metricOptions", () => {
  test("lists the allowed metrics in order, marking the default and the selection", () => {
    const options = metricOptions(["cosine", "euclidean", "manhattan"], "euclidean");
    assert.deepEqual(options.map((o) => o.value), ["cosine", "euclidean", "manhattan"]);
    assert.equal(options[0].label, "cosine (default)");
    assert.deepEqual(options.filter((o) => o.selected).map((o) => o.value), ["euclidean"]);
  });

  test("a metric not allowed for the mode falls back to the default", () => {
    const options = metricOptions(["hamming"], "cosine");
    assert.deepEqual(options, [{ value: "hamming", label: "hamming", selected: true }]);
    assert.deepEqual(metricOptions([], "cosine"), []);
  });
});

test("cellSize: fewer results get bigger cells, never growing with the count", () => {
  const sizes = [1, 4, 5, 12, 13, 40, 41, 100].map(cellSize);
  for (let i = 1; i < sizes.length; i++) assert.ok(sizes[i] <= sizes[i - 1]);
  assert.ok(cellSize(1) > cellSize(100));
});
