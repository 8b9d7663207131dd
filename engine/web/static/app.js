// imgsearch's page: search by upload, drag-and-drop, paste or URL; a random stored image; a page per image
// (with its lineage: what it was made from, above, and what was made from it, below). At /similar the same
// inputs ask for similar images (same kind of thing: /api/similar, the optional 'semantic' extra) instead.
// Plain JavaScript, no build step. Everything shown from the server goes through textContent (URIs and
// metadata are user data); only http(s) URIs become links.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "imgsearch.apiKey";
let queryObjectURL = null;
const SIMILAR = location.pathname === "/similar"; // the "similar" view: /api/similar instead of /api/search

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function authHeaders() {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { Authorization: "Bearer " + key } : {};
}

// fetch JSON from the API; on 401/403 ask once for a key (kept in this browser) and try again
async function api(path, options = {}, retried = false) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if ((response.status === 401 || response.status === 403) && !retried) {
    const key = window.prompt("This server needs an API key to search:");
    if (key) {
      localStorage.setItem(KEY_STORAGE, key.trim());
      return api(path, options, true);
    }
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : "HTTP " + response.status;
    throw new Error(message);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// a box [x0, y0, x1, y1] in fractions, drawn over an image (its parent is positioned and the image's size)
function boxOver(box, cls = "box") {
  const [x0, y0, x1, y1] = box.map((v) => Math.min(Math.max(v, 0), 1));
  const div = el("div", { class: cls });
  div.style.left = x0 * 100 + "%";
  div.style.top = y0 * 100 + "%";
  div.style.width = (x1 - x0) * 100 + "%";
  div.style.height = (y1 - y0) * 100 + "%";
  return div;
}

function boxedImage(src, alt, box, caption, href) {
  // the box is placed in fractions of .frame, which is exactly the image (the caption is outside it)
  const img = el("img", { src, alt, loading: "lazy" });
  const frame = el("span", { class: "frame" }, href ? el("a", { href }, img) : img);
  if (box) frame.append(boxOver(box));
  return el("figure", { class: "boxed" }, frame, caption ? el("figcaption", { text: caption }) : null);
}

function safeLink(uri) {
  if (/^https?:\/\//i.test(uri)) return el("a", { class: "uri", href: uri, rel: "noopener noreferrer", text: uri });
  return el("span", { class: "uri", text: uri });
}

function showResults(result, querySrc) {
  const grid = $("results");
  grid.replaceChildren();
  const matches = result.matches;
  setStatus(matches.length ? `${matches.length} match${matches.length > 1 ? "es" : ""}` +
    ` (fingerprint ${result.timings_ms.fingerprint} ms, search ${result.timings_ms.search} ms)` : "No match.");
  for (const m of matches) {
    const flags = [m.mirrored ? "mirrored" : "", m.rotated ? "rotated" : ""].filter(Boolean).join(", ");
    const card = el("article", { class: "card", "data-id": String(m.id), "data-relation": m.relation,
                                 "data-score": String(m.score) },
      el("div", { class: "pair" },
        boxedImage(querySrc, "query", m.query_box, "query"),
        boxedImage(m.thumbnail, "match " + m.id, m.target_box, `#${m.id} ${m.width}×${m.height}`, m.links.page)),
      el("div", { class: "meta" },
        el("span", { class: "score", text: String(m.score) }),
        el("span", { class: "relation", text: m.relation }),
        flags ? el("span", { class: "flags", text: " " + flags }) : null,
        m.uri ? safeLink(m.uri) : null));
    grid.append(card);
  }
}

function showQuery(src, info) {
  $("query").hidden = false;
  $("query-img").src = src;
  $("query-info").textContent = info;
}

// similar images: a card per stored image, its thumbnail and its cosine similarity to the query
function showSimilar(result) {
  const grid = $("results");
  grid.replaceChildren();
  const found = result.matches;
  setStatus(found.length ? `${found.length} similar image${found.length > 1 ? "s" : ""}` +
    ` (embedding ${result.timings_ms.embedding} ms, search ${result.timings_ms.search} ms)` : "No stored image has an embedding yet.");
  for (const m of found) {
    grid.append(el("article", { class: "card similar-card", "data-id": String(m.id),
                                "data-similarity": String(m.similarity) },
      boxedImage(m.thumbnail, "similar image " + m.id, null, `#${m.id} ${m.width}×${m.height}`, m.links.page),
      el("div", { class: "meta" },
        el("span", { class: "similarity", text: m.similarity.toFixed(3) }),
        el("a", { href: "/similar?image=" + m.id, text: "more like this" }),
        m.uri ? safeLink(m.uri) : null)));
  }
}

async function run(label, querySrc, request) {
  const buttons = document.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  setStatus((SIMILAR ? "Looking for images like " : "Searching ") + label + "…");
  $("results").replaceChildren();
  try {
    const result = await request();
    const size = result.query_image && result.query_image.width
      ? ` ${result.query_image.width}×${result.query_image.height}` : "";
    showQuery(querySrc, label + size);
    if (SIMILAR) showSimilar(result);
    else showResults(result, querySrc);
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function searchFile(file) {
  if (!file) return;
  if (queryObjectURL) URL.revokeObjectURL(queryObjectURL);
  queryObjectURL = URL.createObjectURL(file);
  const form = new FormData();
  form.append("file", file, file.name || "pasted image");
  const endpoint = SIMILAR ? "/api/similar?limit=24" : "/api/search?limit=24";
  run(file.name || "pasted image", queryObjectURL, () => api(endpoint, { method: "POST", body: form }));
}

function searchURL(url) {
  const endpoint = SIMILAR ? "/api/similar" : "/api/search";
  run(url, url, () => api(endpoint + "?limit=24&url=" + encodeURIComponent(url)));
}

function searchStored(id) {
  const request = SIMILAR ? () => api(`/api/similar?limit=24&id=${id}`) : () => api(`/api/images/${id}/matches?limit=24`);
  run("stored image #" + id, `/api/images/${id}/thumbnail`, request);
}

async function searchRandom() {
  try {
    const picked = await api("/api/images/random");
    history.replaceState(null, "", (SIMILAR ? "/similar" : "/") + "?image=" + picked.id);
    searchStored(picked.id);
  } catch (error) {
    setStatus(error.message, true);
  }
}

// --- lineage: the image's ancestors above it, its descendants below ------------------------------
const LINEAGE_SHOWN = 24; // relatives shown per node; the rest are counted
const RELATION_TEXT = { crop: "a crop", near_duplicate: "a copy", composite: "a composite" };

function lineageCard(entry, key, nextTo) {
  const t = entry.transform || {};
  const flags = [t.mirrored ? "mirrored" : "", t.rotated ? "rotated" : ""].filter(Boolean).join(", ");
  const what = (RELATION_TEXT[entry.relation] || entry.relation) + (flags ? ` (${flags})` : "");
  // nextTo: the image this entry hangs under (its child for an ancestor, its parent for a descendant)
  const title = key === "ancestors" ? `${nextTo} is ${what} of #${entry.id}` : `#${entry.id} is ${what} of ${nextTo}`;
  const img = el("img", { src: `/api/images/${entry.id}/thumbnail`, alt: "image " + entry.id, loading: "lazy" });
  const frame = el("span", { class: "frame" }, img);
  if (entry.target_box) frame.append(boxOver(entry.target_box)); // the shared part, in this image
  return el("a", { class: "lcard", href: `/images/${entry.id}`, title },
    el("figure", { class: "boxed lthumb" }, frame),
    el("span", { class: "ltext" },
      el("span", { class: "relation", text: entry.relation.replaceAll("_", " ") }),
      flags ? el("span", { class: "flags", text: " " + flags }) : null,
      el("span", { class: "lscore", text: " score " + entry.score }),
      el("span", { class: "lid", text: " #" + entry.id }),
      entry.uri ? el("span", { class: "uri", text: entry.uri }) : null));
}

// a list of relatives; an ancestor's own ancestors go above it, a descendant's descendants below it
function lineageList(entries, key, nextTo) {
  const list = el("ul", { class: "ltree" });
  for (const entry of entries.slice(0, LINEAGE_SHOWN)) {
    const node = el("li", { class: "lnode", "data-id": String(entry.id), "data-relation": entry.relation,
                            "data-score": String(entry.score) });
    const below = entry[key] && entry[key].length ? lineageList(entry[key], key, "#" + entry.id) : null;
    const card = lineageCard(entry, key, nextTo);
    if (key === "ancestors") node.append(...[below, card].filter(Boolean));
    else node.append(...[card, below].filter(Boolean));
    list.append(node);
  }
  if (entries.length > LINEAGE_SHOWN) {
    list.append(el("li", { class: "lnode lmore", text: `… and ${entries.length - LINEAGE_SHOWN} more` }));
  }
  return list;
}

function showLineage(tree) {
  const up = tree.ancestors, down = tree.descendants;
  const upPart = up.length ? lineageList(up, "ancestors", "this image")
    : el("p", { class: "lineage-note", text: "Nothing stored: an original, as far as we know." });
  const downPart = down.length ? lineageList(down, "descendants", "this image")
    : el("p", { class: "lineage-note", text: "Nothing stored." });
  upPart.id = "lineage-ancestors";
  upPart.classList.add("up");
  downPart.id = "lineage-descendants";
  downPart.classList.add("down");
  const self = el("div", { class: "lself", "data-id": String(tree.image.id) },
    el("figure", { class: "boxed lthumb" }, el("span", { class: "frame" },
      el("img", { src: `/api/images/${tree.image.id}/thumbnail`, alt: "this image" }))),
    el("span", { class: "ltext" }, el("strong", { text: "this image" }),
      el("span", { class: "lid", text: " #" + tree.image.id })));
  $("lineage").replaceChildren(el("h3", { class: "lineage-head", text: "Came from" }), upPart, self,
                               el("h3", { class: "lineage-head", text: "Made from it" }), downPart);
}

async function loadLineage(id) {
  try {
    showLineage(await api(`/api/images/${id}/lineage`));
  } catch (error) {
    $("lineage").replaceChildren(el("p", { class: "lineage-note error", text: "Lineage: " + error.message }));
  }
}

// --- the page of one stored image --------------------------------------------------------------
async function showImagePage(id) {
  $("search-view").hidden = true;
  $("image-view").hidden = false;
  try {
    const image = await api("/api/images/" + id);
    document.title = `imgsearch: image #${image.id}`;
    $("detail-title").textContent = `Image #${image.id}`;
    $("detail-img").src = image.links.thumbnail;
    for (const r of image.regions) $("detail-figure").append(boxOver(r.box, "box region"));
    const rows = [["size", `${image.width}×${image.height} ${image.format}, ${image.file_size.toLocaleString()} bytes`],
                  ["sha256", image.sha256], ["pHash", image.hashes.phash], ["PDQ", image.hashes.pdq],
                  ["regions", image.regions.map((r) => r.kind).join(", ") || "none"],
                  ["keypoints", String(image.keypoints)], ["stored", image.created_at]];
    $("detail-table").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v }))));
    $("detail-uris").replaceChildren(...image.uris.map((u) => el("li", {}, safeLink(u.uri))));
    if (!image.uris.length) $("detail-uris").append(el("li", { text: "no URI recorded" }));
    $("detail-metadata").textContent = JSON.stringify(image.metadata, null, 2);
    $("detail-similar").href = "/similar?image=" + image.id;
    loadLineage(image.id); // alongside the matches; its errors stay in its own section
    const result = await api(image.links.matches + "?limit=24");
    showResults(result, image.links.thumbnail);
  } catch (error) {
    setStatus(error.message, true);
  }
}

// the similar view says at once when the server lacks the optional extra (and how to enable it)
async function checkSimilar() {
  try {
    const stats = await api("/api/stats");
    if (stats.similar && !stats.similar.available) {
      const note = el("p", { class: "notice", id: "similar-unavailable", text: stats.similar.message });
      $("search-view").prepend(note);
    }
  } catch (error) {
    setStatus(error.message, true);
  }
}

// --- wiring ----------------------------------------------------------------------------------------
function init() {
  const page = location.pathname.match(/^\/images\/(\d+)$/);
  if (page) return showImagePage(page[1]);
  $(SIMILAR ? "nav-similar" : "nav-search").classList.add("current");
  if (SIMILAR) {
    document.title = "imgsearch: similar images";
    $("tagline").textContent = "find stored photos of the same kind of thing";
    checkSimilar();
  }

  $("file-input").addEventListener("change", (e) => searchFile(e.target.files[0]));
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    searchURL($("url-input").value.trim());
  });
  $("random-btn").addEventListener("click", searchRandom);

  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith("image/")) || e.dataTransfer.files[0];
    if (file) searchFile(file);
    else {
      const url = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
      if (url) searchURL(url.trim());
    }
  });
  document.addEventListener("paste", (e) => {
    if (e.target === $("url-input")) return;
    const item = [...e.clipboardData.items].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) {
      e.preventDefault();
      searchFile(item.getAsFile());
    } else {
      const text = e.clipboardData.getData("text/plain").trim();
      if (/^https?:\/\//i.test(text)) searchURL(text);
    }
  });
  const shared = new URLSearchParams(location.search);
  if (/^\d+$/.test(shared.get("image") || "")) searchStored(shared.get("image"));
  else if (shared.get("url")) {
    $("url-input").value = shared.get("url");
    searchURL(shared.get("url"));
  }
}

init();
