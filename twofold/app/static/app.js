// Twofold search page: plain JS, no build step. Text is inserted with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
let collections = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem("twofold-key");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function api(path, body) {
  const resp = await fetch(path, body === undefined
    ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (resp.status === 401) $("auth").hidden = false;
  if (!resp.ok) throw new Error(data.detail || resp.statusText);
  return data;
}

// Text with [start, end) spans wrapped in <mark>.
function marked(text, spans) {
  const frag = document.createDocumentFragment();
  let at = 0;
  for (const [s, e] of spans) {
    if (s > at) frag.append(text.slice(at, s));
    const m = document.createElement("mark");
    m.textContent = text.slice(s, e);
    frag.append(m);
    at = e;
  }
  frag.append(text.slice(at));
  return frag;
}

function fillPipelines() {
  const c = collections.find((x) => x.name === $("collection").value) || collections[0];
  const sel = $("pipeline");
  sel.replaceChildren();
  for (const p of c.pipelines) {
    const o = new Option(p.name, p.name, false, p.name === c.default_pipeline);
    o.title = p.description + (p.fusion ? " — " + p.fusion : "");
    sel.append(o);
  }
}

async function loadCollections() {
  const data = await api("/v1/collections");
  collections = data.collections;
  const sel = $("collection");
  sel.replaceChildren(...collections.map((c) => new Option(c.name, c.name)));
  sel.hidden = collections.length < 2;
  fillPipelines();
}

function render(data) {
  const list = $("results");
  list.replaceChildren();
  for (const hit of data.hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.docId = hit.doc_id;
    const title = document.createElement("div");
    title.className = "title";
    title.append(marked(hit.title || hit.doc_id, hit.title ? hit.title_highlights : []));
    const id = document.createElement("span");
    id.className = "docid";
    id.textContent = hit.doc_id + " · " + hit.score.toFixed(4)
      + (hit.interest === undefined ? "" : " · interest " + hit.interest);
    title.append(id);
    const snip = document.createElement("div");
    snip.className = "snippet";
    snip.append(marked(hit.snippet, hit.highlights));
    const src = document.createElement("div");
    src.className = "sources";
    for (const [name, s] of Object.entries(hit.sources)) {
      const b = document.createElement("span");
      b.className = "source";
      b.textContent = name + " #" + s.rank;
      b.title = name + " score " + s.score.toFixed(4);
      src.append(b);
    }
    li.append(title, snip, src);
    list.append(li);
  }
  const status = $("status");
  status.className = data.degraded ? "degraded" : "";
  status.textContent = `${data.hits.length} results · ${data.pipeline} · ${data.took_ms.toFixed(1)} ms`
    + (data.degraded ? " · degraded: " + data.degraded_reasons.join("; ") : "");
}

async function search(ev) {
  ev.preventDefault();
  const key = $("api-key").value;
  if (key) sessionStorage.setItem("twofold-key", key);
  const status = $("status");
  status.className = "";
  status.textContent = "searching…";
  try {
    if (!collections.length) await loadCollections();
    render(await api("/v1/search", {
      query: $("q").value,
      k: Number($("k").value),
      collection: $("collection").value || null,
      pipeline: $("pipeline").value || null,
      diversify: $("diversify").checked,
    }));
  } catch (err) {
    status.className = "error";
    status.textContent = err.message;
    $("results").replaceChildren();
  }
}

$("search-form").addEventListener("submit", search);
$("collection").addEventListener("change", fillPipelines);
loadCollections().catch((err) => {
  $("status").className = "error";
  $("status").textContent = err.message;
});
