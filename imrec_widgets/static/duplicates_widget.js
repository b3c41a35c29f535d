// @ts-check
// DuplicatesWidget's front end, one ES module: it draws the Python side's groups and sends
// intent as messages (keep, move, undo, refresh); it never writes a trait.
// The named exports are pure helpers (no DOM, no model) that `node --test js/tests/` imports.

/**
 * One image of a group as the Python side sends it.
 * @typedef {{id: number, path: string, width: number, height: number, bytes: number,
 *   modified: number, distance: number}} Item
 * @typedef {{keep: number, identical: boolean, items: Item[]}} Group
 */

/**
 * A file size in words: "812 B", "45 KB", "2.4 MB".
 * @param {number} bytes
 * @returns {string}
 */
export function formatSize(bytes) {
  if (!(bytes >= 0)) return "";
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${Math.round(bytes / 1e3)} KB`;
  if (bytes < 1e9) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${(bytes / 1e9).toFixed(1)} GB`;
}

/**
 * A modification time (seconds since the epoch) as an ISO day, "2026-12-03".
 * @param {number} seconds
 * @returns {string}
 */
export function formatDay(seconds) {
  if (!Number.isFinite(seconds)) return "";
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

/**
 * The facts under a thumbnail: "640×480 · 45 KB · 2026-12-03".
 * @param {Item} item
 * @returns {string}
 */
export function itemFacts(item) {
  const pixels = item.width && item.height ? `${item.width}×${item.height}` : "";
  return [pixels, formatSize(item.bytes), formatDay(item.modified)].filter(Boolean).join(" · ");
}

/**
 * The offset of each group's first thumbnail in the flat `thumbnails` list.
 * @param {Group[]} groups
 * @returns {number[]}
 */
export function thumbnailOffsets(groups) {
  const offsets = [];
  let at = 0;
  for (const group of groups) {
    offsets.push(at);
    at += group.items.length;
  }
  return offsets;
}

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} className
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
function h(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** @param {DataView | ArrayBuffer | Uint8Array} part */
function jpegUrl(part) {
  const bytes = part instanceof DataView
    ? new Uint8Array(part.buffer, part.byteOffset, part.byteLength)
    : part;
  return URL.createObjectURL(new Blob([/** @type {BlobPart} */ (bytes)], { type: "image/jpeg" }));
}

/** @param {{ model: any, el: HTMLElement }} context */
function render({ model, el }) {
  el.classList.add("imrec-dups");
  const header = h("div", "imrec-dups-header");
  const summary = h("span", "imrec-dups-summary");
  const again = h("button", "imrec-dups-refresh", "Find again");
  again.type = "button";
  header.append(summary, again);
  const error = h("div", "imrec-dups-error");
  error.setAttribute("role", "alert");
  const list = h("div", "imrec-dups-groups");
  const footer = h("div", "imrec-dups-footer");
  const label = h("label", "imrec-dups-label", "Move the others to ");
  const destination = h("input", "imrec-dups-destination");
  destination.type = "text";
  destination.spellcheck = false;
  label.append(destination);
  const move = h("button", "imrec-dups-move", "Move the others");
  move.type = "button";
  const undo = h("button", "imrec-dups-undo", "Undo");
  undo.type = "button";
  footer.append(label, move, undo);
  el.replaceChildren(header, error, list, footer);

  /** @type {string[]} */
  let urls = [];

  function renderGroups() {
    for (const url of urls) URL.revokeObjectURL(url);
    urls = [];
    /** @type {Group[]} */
    const groups = model.get("groups") || [];
    /** @type {DataView[]} */
    const thumbs = model.get("thumbnails") || [];
    const offsets = thumbnailOffsets(groups);
    list.replaceChildren(
      ...groups.map((group, g) => {
        const row = h("section", "imrec-dups-group");
        row.dataset.group = String(g);
        const kind = group.identical ? "identical files" : "near-duplicates";
        row.append(h("div", "imrec-dups-group-title", `${group.items.length} ${kind}`));
        const items = h("div", "imrec-dups-items");
        group.items.forEach((item, i) => {
          const kept = item.id === group.keep;
          const card = h("button", kept ? "imrec-dups-item imrec-dups-keep" : "imrec-dups-item");
          card.type = "button";
          card.dataset.id = String(item.id);
          card.title = kept ? `${item.path}: kept` : `${item.path}: click to keep this one instead`;
          card.setAttribute("aria-pressed", String(kept));
          const img = h("img", "imrec-dups-image");
          img.alt = item.path;
          const part = thumbs[offsets[g] + i];
          if (part?.byteLength) {
            const url = jpegUrl(part);
            urls.push(url);
            img.src = url;
          }
          card.append(
            img,
            h("span", "imrec-dups-badge", kept ? "keep" : "move"),
            h("span", "imrec-dups-name", item.path),
            h("span", "imrec-dups-facts", itemFacts(item)),
          );
          card.addEventListener("click", () => {
            if (!kept) model.send({ method: "keep", group: g, id: item.id });
          });
          items.append(card);
        });
        row.append(items);
        return row;
      }),
    );
    move.disabled = groups.length === 0;
  }

  function renderStatus() {
    summary.textContent = model.get("summary") || "";
    error.textContent = model.get("error") || "";
    error.hidden = !model.get("error");
    undo.disabled = !model.get("can_undo");
    if (document.activeElement !== destination) destination.value = model.get("destination") || "";
  }

  again.addEventListener("click", () => model.send({ method: "refresh" }));
  move.addEventListener("click", () => {
    model.send({ method: "move", destination: destination.value });
  });
  undo.addEventListener("click", () => model.send({ method: "undo" }));
  // Enter and Space (Shift too) press a focused card or button: the key is the widget's, not
  // JupyterLab's (Shift+Enter would rerun the cell as well, replacing this widget); Notebook 7
  // sees keys before the widget does, so they are stopped on their way down, at the window.
  /** @param {KeyboardEvent} event */
  const ownKeys = (event) => {
    const target = event.target;
    if (
      (event.key === "Enter" || event.key === " ") &&
      !(event.ctrlKey || event.altKey || event.metaKey) &&
      target instanceof HTMLButtonElement &&
      el.contains(target)
    ) {
      event.stopPropagation();
    }
  };
  window.addEventListener("keydown", ownKeys, true);

  renderGroups();
  renderStatus();
  const onGroups = () => renderGroups();
  const onStatus = () => renderStatus();
  model.on("change:groups", onGroups);
  model.on("change:thumbnails", onGroups);
  for (const name of ["summary", "error", "can_undo", "destination"]) {
    model.on(`change:${name}`, onStatus);
  }
  return () => {
    window.removeEventListener("keydown", ownKeys, true);
    model.off("change:groups", onGroups);
    model.off("change:thumbnails", onGroups);
    for (const name of ["summary", "error", "can_undo", "destination"]) {
      model.off(`change:${name}`, onStatus);
    }
    for (const url of urls) URL.revokeObjectURL(url);
  };
}

export default { render };
