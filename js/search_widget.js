// SearchWidget front end: renders the Python-side state and sends user intent back.
// The Python side inlines ./search_logic.js into this module (see imrec_widgets/widgets/_base.py).
import {
  HYBRID_MODE,
  K_MAX,
  K_MIN,
  WEIGHT_DEBOUNCE_MS,
  WEIGHT_MAX,
  WEIGHT_MIN,
  WEIGHT_STEP,
  baseName,
  cellSize,
  chunkRanges,
  clampK,
  debounce,
  filesFromItems,
  fitName,
  formatDistance,
  formatElapsed,
  metricOptions,
  nameChars,
  nameParts,
  resultTitle,
  summaryText,
  validateFiles,
  weightSliders,
  withWeight,
} from "./search_logic.js";

function h(tag, className, props = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  return node;
}

function jpegUrl(part) {
  // Binary traits arrive as DataView (ipywidgets buffers); accept any buffer view.
  const bytes = part instanceof DataView
    ? new Uint8Array(part.buffer, part.byteOffset, part.byteLength)
    : part;
  return URL.createObjectURL(new Blob([bytes], { type: "image/jpeg" }));
}

// A file name that wraps at its "_", "-" and extension rather than mid-word.
function nameSpan(className, name) {
  const span = h("span", className);
  for (const [i, part] of nameParts(name).entries()) {
    if (i) span.append(document.createElement("wbr"));
    span.append(part);
  }
  return span;
}

function labelled(text, control) {
  const label = h("label", "imrec-control");
  label.append(h("span", "imrec-control-label", { text }), control);
  return label;
}

let uploadCounter = 0;

async function sendFiles(model, fileList, setPending) {
  const { files, error } = validateFiles(fileList, model.get("max_upload_bytes"));
  if (error) {
    model.set("error", error);
    model.save_changes();
    return;
  }
  setPending(true);
  try {
    const upload = `${Date.now().toString(36)}-${++uploadCounter}`;
    const meta = [];
    for (const [index, file] of files.entries()) {
      const buffer = await file.arrayBuffer();
      for (const [start, end] of chunkRanges(buffer.byteLength)) {
        model.send({ type: "chunk", upload, file: index, offset: start }, undefined, [
          buffer.slice(start, end),
        ]);
      }
      meta.push({ name: file.name || "pasted image", size: buffer.byteLength, type: file.type });
    }
    model.send({ type: "query", upload, files: meta });
  } catch (err) {
    setPending(false);
    model.set("error", `could not read the file: ${err?.message ?? err}`);
    model.save_changes();
  }
}

function render({ model, el }) {
  const root = h("div", "imrec-search");
  let urls = [];

  // -- controls
  // Keys typed into the controls are theirs, not JupyterLab's notebook shortcuts (arrows,
  // Enter). Lumino matches a shortcut's selector against the focused element itself before
  // looking for this attribute on its ancestors, so each control carries it.
  const own = { "data-lm-suppress-shortcuts": "true" };
  const mode = h("select", "imrec-mode", { ...own, title: "what to compare: features of the images" });
  const metric = h("select", "imrec-metric", { ...own, title: "how to measure the distance" });
  const k = h("input", "imrec-k", {
    ...own, type: "number", min: String(K_MIN), max: String(K_MAX), step: "1",
    title: `number of results (${K_MIN}–${K_MAX})`,
  });
  const busy = h("span", "imrec-busy", { title: "searching…", "aria-hidden": "true" });
  const toolbar = h("div", "imrec-toolbar", own);
  const metricLabel = labelled("Metric", metric);
  toolbar.append(labelled("Mode", mode), metricLabel, labelled("k", k), busy);

  // -- hybrid weights: one slider per search mode, shown in the hybrid mode only
  const weights = h("div", "imrec-weights", {
    ...own, role: "group", "aria-label": "hybrid weights",
    title: "hybrid: how much each mode counts in the fused distance (shares in brackets)",
  });

  // -- drop zone: query thumbnails, hint, file button
  const fileInput = h("input", "imrec-file-input", {
    type: "file", accept: "image/*", multiple: true, tabIndex: -1,
  });
  const fileButton = h("label", "imrec-file-button", { text: "Choose images…" });
  fileButton.append(fileInput);
  const query = h("div", "imrec-query");
  const hint = h("span", "imrec-hint", {
    text: "Drop images here, paste one, or choose files. Click a result for more like it.",
  });
  const dropzone = h("div", "imrec-dropzone", { tabIndex: 0, title: "drop or paste images here" });
  dropzone.append(query, hint, fileButton);

  // -- messages and results
  const errorText = h("span", "imrec-error-text");
  const dismiss = h("button", "imrec-error-dismiss", { type: "button", text: "×", title: "dismiss" });
  const error = h("div", "imrec-error", { role: "alert" });
  error.append(errorText, dismiss);
  const summary = h("span", "imrec-summary");
  const elapsed = h("span", "imrec-elapsed");
  const status = h("div", "imrec-status");
  status.append(summary, elapsed);
  const grid = h("div", "imrec-results");

  root.append(toolbar, weights, dropzone, error, status, grid);
  el.append(root);

  let pending = false;
  const setPending = (value) => {
    pending = value;
    root.classList.toggle("imrec-is-busy", pending || model.get("busy"));
  };
  const submit = (files) => {
    if (files.length) sendFiles(model, files, setPending);
  };

  // -- rendering state
  function renderControls() {
    const modes = model.get("modes") || [];
    mode.replaceChildren(...modes.map((m) => h("option", "", { value: m, text: m })));
    mode.value = model.get("mode");
    metric.replaceChildren(
      ...metricOptions(model.get("metrics"), model.get("metric")).map((o) =>
        h("option", "", { value: o.value, text: o.label, selected: o.selected })
      ),
    );
    k.value = String(model.get("k"));
    metricLabel.hidden = (model.get("metrics") || []).length === 0; // none in the hybrid mode
  }

  // Weights being edited (slider moved, not yet sent), else null: shown instead of the model's.
  let draft = null;
  function renderWeights() {
    weights.hidden = model.get("mode") !== HYBRID_MODE;
    const sliders = weightSliders(model.get("modes"), draft ?? model.get("weights"));
    const shown = Array.from(weights.querySelectorAll(".imrec-weight-slider"), (s) => s.dataset.mode);
    if (shown.join() !== sliders.map((s) => s.mode).join()) {
      weights.replaceChildren(
        h("span", "imrec-control-label", { text: "Weights" }),
        ...sliders.map(({ mode: name }) => {
          const row = h("label", "imrec-weight");
          const slider = h("input", "imrec-weight-slider", {
            ...own, type: "range", min: String(WEIGHT_MIN), max: String(WEIGHT_MAX), step: String(WEIGHT_STEP),
            "aria-label": `weight of ${name}`,
          });
          slider.dataset.mode = name;
          row.append(
            h("span", "imrec-weight-name", { text: name }), slider,
            h("span", "imrec-weight-value"), h("span", "imrec-weight-share"),
          );
          return row;
        }),
      );
    }
    for (const [i, row] of Array.from(weights.querySelectorAll(".imrec-weight")).entries()) {
      const { value, label, share } = sliders[i];
      const slider = row.querySelector(".imrec-weight-slider");
      if (Number(slider.value) !== value) slider.value = String(value);
      row.querySelector(".imrec-weight-value").textContent = label;
      row.querySelector(".imrec-weight-share").textContent = `(${share})`;
      row.classList.toggle("imrec-weight-off", value === 0);
    }
  }

  function renderError() {
    const message = model.get("error");
    errorText.textContent = message;
    error.hidden = !message;
  }

  function renderBusy() {
    if (!model.get("busy")) pending = false;
    root.classList.toggle("imrec-is-busy", pending || model.get("busy"));
  }

  function renderImages() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    const track = (url) => (urls.push(url), url);

    const names = model.get("query_names") || [];
    query.replaceChildren(
      ...(model.get("query_thumbnails") || []).map((bytes, i) => {
        const figure = h("figure", "imrec-query-image", { title: names[i] ?? "" });
        figure.append(
          h("img", "", { src: track(jpegUrl(bytes)), alt: names[i] ?? "query image" }),
          h("figcaption", "", { text: baseName(names[i] ?? "") }),
        );
        return figure;
      }),
    );
    dropzone.classList.toggle("imrec-has-query", query.childElementCount > 0);

    const hits = model.get("results") || [];
    const thumbs = model.get("thumbnails") || [];
    const metricName = model.get("result_metric");
    const cell = cellSize(hits.length);
    const maxChars = nameChars(cell);
    grid.style.setProperty("--imrec-cell", `${cell}px`);
    grid.replaceChildren(
      ...hits.map((hit, i) => {
        const title = resultTitle(hit, metricName, model.get("result_mode"));
        const cell = h("button", "imrec-result", { type: "button", title });
        cell.dataset.id = String(hit.id);
        const img = h("img", "imrec-result-image", { alt: baseName(hit.path), draggable: false });
        if (thumbs[i]) img.src = track(jpegUrl(thumbs[i]));
        const caption = h("span", "imrec-result-caption");
        caption.append(
          nameSpan("imrec-result-name", fitName(baseName(hit.path), maxChars)),
          h("span", "imrec-distance", { text: formatDistance(hit.distance, metricName) }),
        );
        cell.append(img, caption);
        return cell;
      }),
    );
    const scope = model.get("scope_size");
    summary.textContent =
      summaryText(hits.length, model.get("result_mode"), metricName) +
      (scope >= 0 ? ` · within ${scope} selected` : "");
    elapsed.textContent = hits.length ? formatElapsed(model.get("elapsed_ms")) : "";
  }

  renderControls();
  renderWeights();
  renderError();
  renderBusy();
  renderImages();

  // -- intents
  const setControl = (name, value) => {
    model.set(name, value);
    model.save_changes();
  };
  mode.addEventListener("change", () => setControl("mode", mode.value));
  metric.addEventListener("change", () => setControl("metric", metric.value));
  const commitK = () => {
    const clamped = clampK(k.value);
    k.value = String(clamped ?? model.get("k"));
    if (clamped !== null && clamped !== model.get("k")) setControl("k", clamped);
  };
  k.addEventListener("change", commitK);
  const sendWeights = debounce(() => {
    const next = draft;
    draft = null;
    if (next) setControl("weights", next);
  }, WEIGHT_DEBOUNCE_MS);
  weights.addEventListener("input", (event) => {
    const slider = event.target.closest(".imrec-weight-slider");
    if (!slider) return;
    draft = withWeight(draft ?? model.get("weights"), slider.dataset.mode, slider.value);
    renderWeights();
    sendWeights();
  });
  weights.addEventListener("change", () => sendWeights.flush()); // released: send now
  k.addEventListener("keydown", (event) => {
    if (event.key === "Enter") commitK();
  });
  fileInput.addEventListener("change", () => {
    const files = Array.from(fileInput.files ?? []);
    fileInput.value = ""; // choosing the same file again must fire "change" again
    submit(files);
  });
  grid.addEventListener("click", (event) => {
    const cell = event.target.closest(".imrec-result");
    if (cell && grid.contains(cell)) {
      setPending(true);
      model.send({ type: "more_like", id: Number(cell.dataset.id) });
    }
  });
  dismiss.addEventListener("click", () => setControl("error", ""));

  const onDragOver = (event) => {
    if (!Array.from(event.dataTransfer?.types ?? []).includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    dropzone.classList.add("imrec-dragover");
  };
  dropzone.addEventListener("dragenter", onDragOver);
  dropzone.addEventListener("dragover", onDragOver);
  dropzone.addEventListener("dragleave", (event) => {
    if (!dropzone.contains(event.relatedTarget)) dropzone.classList.remove("imrec-dragover");
  });
  dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    event.stopPropagation(); // JupyterLab would otherwise try to open the file
    dropzone.classList.remove("imrec-dragover");
    submit(Array.from(event.dataTransfer?.files ?? []));
  });
  root.addEventListener("paste", (event) => {
    const files = filesFromItems(event.clipboardData?.items);
    if (files.length) {
      event.preventDefault();
      event.stopPropagation();
      submit(files);
    }
  });

  const listeners = [
    ...["modes", "mode", "metrics", "metric", "k"].map((name) => [name, renderControls]),
    ...["modes", "mode", "weights"].map((name) => [name, renderWeights]),
    ["error", renderError],
    ["busy", renderBusy],
    ...["results", "thumbnails", "query_thumbnails", "query_names", "elapsed_ms", "scope_size"].map(
      (name) => [name, renderImages],
    ),
  ];
  // One model update changes several traits; render each part once per update.
  const queued = new Set();
  const later = (fn) => () => {
    if (queued.has(fn)) return;
    queued.add(fn);
    queueMicrotask(() => {
      queued.delete(fn);
      if (!disposed) fn();
    });
  };
  let disposed = false;
  const handlers = listeners.map(([name, fn]) => [`change:${name}`, later(fn)]);
  for (const [event, fn] of handlers) model.on(event, fn);

  return () => {
    disposed = true;
    sendWeights.cancel();
    for (const [event, fn] of handlers) model.off(event, fn);
    for (const url of urls) URL.revokeObjectURL(url);
  };
}

export default { render };
