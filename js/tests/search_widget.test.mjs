// Unit tests of the pure helpers exported by imrec_widgets/static/search_widget.js: `node --test js/tests/` (run by tests/test_js.py).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  CONTROLS,
  DISMISS_MESSAGE,
  MARKS,
  MAX_PICK,
  REFINE_MESSAGE,
  markMessage,
  markOf,
  marksText,
  nextMark,
  pickMessage,
  pickRange,
  pickedText,
  tagMessage,
  withinOptions,
  HYBRID_MODE,
  K_MAX,
  K_MIN,
  MAX_FILES,
  UPLOAD_CHUNK_BYTES,
  WEIGHT_STEP,
  baseName,
  cellSize,
  chunkRanges,
  clampK,
  controlMessage,
  sameWeights,
  debounce,
  fileErrorMessage,
  filesFromItems,
  fitName,
  formatBytes,
  formatDistance,
  formatElapsed,
  formatShare,
  metricOptions,
  nameChars,
  nameParts,
  resultTitle,
  summaryText,
  validateFile,
  validateFiles,
  sliderModes,
  snapWeight,
  weightShares,
  weightSliders,
  withWeight,
} from "../../imrec_widgets/static/search_widget.js";

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
    const fused = resultTitle({ path: "/p/cat.jpg", rank: 1, distance: 0.25 }, "1 rgb/euclidean", "hybrid");
    assert.match(fused, /\n#2 · fused distance 0\.25\n/);
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

test("fitName keeps short names and the end of long ones", () => {
  assert.equal(fitName("coffee.jpg", 20), "coffee.jpg");
  assert.equal(fitName("hubble_deep_field.jpg", 21), "hubble_deep_field.jpg");
  const short = fitName("immunohistochemistry_mirror.jpg", 20);
  assert.equal(Array.from(short).length, 20);
  assert.ok(short.endsWith("_mirror.jpg") && short.startsWith("immuno") && short.includes("…"), short);
  assert.equal(fitName("😀".repeat(30), 10), "😀".repeat(3) + "…" + "😀".repeat(6));
  assert.equal(fitName(undefined, 5), "");
});

test("nameParts: wrap points after _ and - and before the extension", () => {
  assert.deepEqual(nameParts("hubble_deep_field.jpg"), ["hubble_", "deep_", "field", ".jpg"]);
  assert.deepEqual(nameParts("a-b.tar.gz"), ["a-", "b.tar", ".gz"]);
  assert.deepEqual(nameParts("coffee"), ["coffee"]);
  assert.deepEqual(nameParts(".hidden"), [".hidden"]);
  assert.deepEqual(nameParts(""), []);
  const name = "immuno…try_mirror.jpg";
  assert.equal(nameParts(name).join(""), name);
});

test("nameChars: two lines' worth, more in wider cells", () => {
  assert.ok(nameChars(cellSize(1)) > nameChars(cellSize(100)));
  assert.ok(nameChars(cellSize(18)) >= "immunohistochemistry.jpg".length);
  assert.ok(nameChars(0) >= 8);
});

describe("hybrid weights", () => {
  const modes = ["embedding", "rgb", "ahash", HYBRID_MODE];

  test("one slider per search mode, hybrid itself excluded, in the modes' order", () => {
    assert.deepEqual(sliderModes(modes), ["embedding", "rgb", "ahash"]);
    assert.deepEqual(sliderModes(["rgb"]), ["rgb"]);
    assert.deepEqual(sliderModes(undefined), []);
  });

  test("snapWeight keeps a slider's value: steps of 0.05 within [0, 1]", () => {
    assert.equal(WEIGHT_STEP, 0.05);
    assert.equal(snapWeight("0.3"), 0.3);
    assert.equal(snapWeight(0.33), 0.35);
    assert.equal(snapWeight(0.1 + 0.2), 0.3); // no 0.30000000000000004
    assert.equal(snapWeight(-2), 0);
    assert.equal(snapWeight(7), 1);
    assert.equal(snapWeight("x"), 0);
    assert.equal(snapWeight(undefined), 0);
  });

  test("shares are the weights scaled to sum to 1, as the Python side does", () => {
    const shares = weightShares({ embedding: 0.7, rgb: 0.3 }, modes);
    assert.deepEqual(Object.keys(shares), ["embedding", "rgb", "ahash"]);
    assert.ok(Math.abs(shares.embedding - 0.7) < 1e-12 && Math.abs(shares.rgb - 0.3) < 1e-12);
    assert.equal(shares.ahash, 0); // missing counts as 0
    assert.deepEqual(weightShares({ rgb: 0.3 }, ["rgb", "dhash", HYBRID_MODE]), { rgb: 1, dhash: 0 });
    assert.deepEqual(weightShares({ rgb: 5, dhash: 5 }, ["rgb", "dhash"]), { rgb: 0.5, dhash: 0.5 });
    assert.deepEqual(weightShares({ rgb: 0, dhash: -1 }, ["rgb", "dhash"]), { rgb: 0, dhash: 0 });
    assert.deepEqual(weightShares(null, ["rgb"]), { rgb: 0 });
  });

  test("formatShare", () => {
    assert.equal(formatShare(0.7), "70%");
    assert.equal(formatShare(1), "100%");
    assert.equal(formatShare(1 / 3), "33%");
    assert.equal(formatShare(0.004), "<1%");
    assert.equal(formatShare(0), "0%");
    assert.equal(formatShare(NaN), "0%");
  });

  test("weightSliders: position, label and share of each slider", () => {
    assert.deepEqual(weightSliders(["rgb", "ahash", "dhash", HYBRID_MODE], { rgb: 0.3 }), [
      { mode: "rgb", value: 0.3, label: "0.30", share: "100%" },
      { mode: "ahash", value: 0, label: "0.00", share: "0%" },
      { mode: "dhash", value: 0, label: "0.00", share: "0%" },
    ]);
    // a weight over 1 (set from Python) pins its slider at 1 but keeps its true share
    const [big, small] = weightSliders(["rgb", "dhash"], { rgb: 3, dhash: 1 });
    assert.deepEqual([big.value, big.share, small.value, small.share], [1, "75%", 1, "25%"]);
    assert.deepEqual(weightSliders([HYBRID_MODE], {}), []);
  });

  test("withWeight returns new weights with one mode changed, others kept", () => {
    const before = { embedding: 0.7, rgb: 0.3 };
    const after = withWeight(before, "ahash", "0.52");
    assert.deepEqual(after, { embedding: 0.7, rgb: 0.3, ahash: 0.5 });
    assert.deepEqual(before, { embedding: 0.7, rgb: 0.3 }); // not mutated
    assert.deepEqual(withWeight(undefined, "rgb", 0), { rgb: 0 });
  });
});

describe("debounce", () => {
  function fakeTimers() {
    const timers = { now: 0, queue: new Map(), next: 1 };
    timers.setTimeout = (fn, ms) => {
      const id = timers.next++;
      timers.queue.set(id, { fn, at: timers.now + ms });
      return id;
    };
    timers.clearTimeout = (id) => timers.queue.delete(id);
    timers.advance = (ms) => {
      timers.now += ms;
      for (const [id, { fn, at }] of [...timers.queue]) {
        if (at <= timers.now) {
          timers.queue.delete(id);
          fn();
        }
      }
    };
    return timers;
  }

  test("calls once, with the last arguments, after calls stop", () => {
    const timers = fakeTimers();
    const calls = [];
    const send = debounce((x) => calls.push(x), 200, timers);
    send(1);
    timers.advance(150);
    send(2);
    timers.advance(150);
    assert.deepEqual(calls, []);
    assert.ok(send.pending());
    timers.advance(60);
    assert.deepEqual(calls, [2]);
    assert.ok(!send.pending());
  });

  test("flush sends now (a released slider), cancel drops the pending call", () => {
    const timers = fakeTimers();
    const calls = [];
    const send = debounce((x) => calls.push(x), 200, timers);
    send.flush(); // nothing pending: nothing sent
    send("a");
    send.flush();
    assert.deepEqual(calls, ["a"]);
    timers.advance(500);
    assert.deepEqual(calls, ["a"]); // not sent twice
    send("b");
    send.cancel();
    timers.advance(500);
    assert.deepEqual(calls, ["a"]);
  });
});

describe("messages to Python (the front end writes no trait)", () => {
  test("a control change is a set message naming one of the controls", () => {
    assert.deepEqual(CONTROLS, ["mode", "metric", "k", "weights", "within_tag"]);
    assert.deepEqual(controlMessage("within_tag", "cats"), {
      type: "set", name: "within_tag", value: "cats",
    });
    assert.deepEqual(controlMessage("k", 20), { type: "set", name: "k", value: 20 });
    assert.deepEqual(controlMessage("weights", { rgb: 0.5 }), {
      type: "set", name: "weights", value: { rgb: 0.5 },
    });
    for (const name of ["max_upload_bytes", "error", "results", ""]) {
      assert.throws(() => controlMessage(name, 1), RangeError);
    }
  });

  test("a file the browser refuses is shown by Python; dismissing is a message too", () => {
    assert.deepEqual(fileErrorMessage("a.pdf is not an image"), {
      type: "file_error", message: "a.pdf is not an image",
    });
    assert.deepEqual(fileErrorMessage(undefined), { type: "file_error", message: "" });
    assert.deepEqual(DISMISS_MESSAGE, { type: "dismiss" });
    assert.ok(Object.isFrozen(DISMISS_MESSAGE));
  });
});

test("sameWeights: the same number for every mode, a missing mode as 0", () => {
  assert.ok(sameWeights({ rgb: 0.3, ahash: 0.5 }, { ahash: 0.5, rgb: 0.3 }));
  assert.ok(sameWeights({ rgb: 0.3, dhash: 0 }, { rgb: 0.3 }));
  assert.ok(!sameWeights({ rgb: 0.3, dhash: 0.05 }, { rgb: 0.3, dhash: 0.2 }));
  assert.ok(!sameWeights(null, { rgb: 0.3 }));
  assert.ok(sameWeights(null, {}));
});

describe("curation messages: pick, mark, tag, refine", () => {
  const ids = [11, 12, 13, 14, 15];

  test("a click picks one result; a shift-click the range from the last one, either way", () => {
    assert.deepEqual(pickRange(ids, null, 2, false), [13]);
    assert.deepEqual(pickRange(ids, null, 2, true), [13]); // no anchor yet: just that one
    assert.deepEqual(pickRange(ids, 1, 3, true), [12, 13, 14]);
    assert.deepEqual(pickRange(ids, 4, 0, true), [11, 12, 13, 14, 15]);
    assert.deepEqual(pickRange(ids, 1, 3, false), [14]);
    assert.deepEqual(pickRange(ids, 9, 3, true), [14]); // a stale anchor (fewer results now)
  });

  test("a pick message names 1 to MAX_PICK ids and whether they are picked", () => {
    assert.deepEqual(pickMessage([12, 13], true), { type: "pick", ids: [12, 13], picked: true });
    assert.deepEqual(pickMessage(new Set([12]), false), { type: "pick", ids: [12], picked: false });
    assert.equal(MAX_PICK, 100);
    assert.throws(() => pickMessage([], true), RangeError);
    assert.throws(() => pickMessage(Array.from({ length: 101 }, (_, i) => i), true), RangeError);
  });

  test("👍 and 👎 toggle: the same button again takes the mark off", () => {
    assert.deepEqual(MARKS, ["relevant", "not_relevant", "none"]);
    assert.equal(nextMark("none", "relevant"), "relevant");
    assert.equal(nextMark("relevant", "relevant"), "none");
    assert.equal(nextMark("relevant", "not_relevant"), "not_relevant");
    assert.equal(nextMark("not_relevant", "not_relevant"), "none");
    assert.deepEqual(markMessage(12, "relevant"), { type: "mark", id: 12, mark: "relevant" });
    assert.deepEqual(markMessage(12, "none"), { type: "mark", id: 12, mark: "none" });
    assert.throws(() => markMessage(12, "maybe"), RangeError);
    assert.equal(markOf(12, [12], [13]), "relevant");
    assert.equal(markOf(13, [12], [13]), "not_relevant");
    assert.equal(markOf(14, [12], null), "none");
  });

  test("tag and refine messages", () => {
    assert.deepEqual(tagMessage(" cats ", true), { type: "tag", name: " cats ", add: true });
    assert.deepEqual(tagMessage(undefined, false), { type: "tag", name: "", add: false });
    assert.deepEqual(REFINE_MESSAGE, { type: "refine" });
    assert.ok(Object.isFrozen(REFINE_MESSAGE));
  });

  test("search within a tag offers every image first, then each tag with its count", () => {
    const tags = [{ name: "cats", count: 3 }, { name: "dogs", count: 1 }];
    assert.deepEqual(withinOptions(tags, "dogs"), [
      { value: "", label: "all images", selected: false },
      { value: "cats", label: "cats (3)", selected: false },
      { value: "dogs", label: "dogs (1)", selected: true },
    ]);
    assert.deepEqual(withinOptions(tags, "gone").map((o) => o.selected), [true, false, false]);
    assert.deepEqual(withinOptions(null, ""), [{ value: "", label: "all images", selected: true }]);
  });

  test("the lines beside the tag box and refine", () => {
    assert.equal(pickedText([1, 2, 3]), "3 picked");
    assert.equal(pickedText([]), "");
    assert.equal(marksText([1, 2], [3]), "2 relevant · 1 not");
    assert.equal(marksText([], [3]), "0 relevant · 1 not");
    assert.equal(marksText(null, []), "");
  });
});
