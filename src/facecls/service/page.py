"""The service's web page: one self-contained HTML document (no CDN, no external file).

Its one script and one style sheet are inline and allowed by hash in a strict Content-Security-
Policy: nothing else runs, and the page can only talk to its own origin. Photos are shown from
``blob:`` URLs made in the browser; they leave it only as uploads to this service.

With a token (``facecls serve --token``) the page loads without it (it holds no data) and sends
``Authorization: Bearer`` on every request. It takes the token from the URL fragment
(``/#token=...``: a browser never sends a fragment to the server, so it reaches no server log),
keeps it in ``sessionStorage`` (this tab only) and removes it from the address bar; after a 401 it
asks for it in a small field.
"""

from __future__ import annotations

import base64
import hashlib

from facecls.colours import KNOWN, TEXT, UNKNOWN, css

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:960px;padding:1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
section{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.drop{border:2px dashed #999;padding:1rem;text-align:center;border-radius:6px}
.drop.over{background:#eef}
.face{width:3.5em}
canvas{width:min(100%,480px);height:auto;display:block;margin:.5rem 0}
.err{color:#b00}.ok{color:#070}
ul#names{columns:3}
#token-box{border-color:#b00}
"""

SCRIPT = r"""
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN = "facecls-token";
// A token in the fragment (#token=...) never reaches the server: keep it for this tab only and
// take it out of the address bar (and so out of history, bookmarks and screen shares).
(() => {
  const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!found) return;
  let token = found[1];
  try { token = decodeURIComponent(token); } catch (e) { /* not %-encoded: use it as it is */ }
  if (token) sessionStorage.setItem(TOKEN, token);
  history.replaceState(null, "", location.pathname + location.search);
})();
function askToken() {
  $("token-box").hidden = false;
  $("token").focus();
}
async function call(path, form) {
  const token = sessionStorage.getItem(TOKEN);
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const response = await fetch(path, {method: form ? "POST" : "GET", body: form, headers});
  if (response.status === 401) { askToken(); throw new Error("This service needs its token"); }
  // every refusal is {"error": {"code", "message"}} (see /openapi.json)
  const body = await response.json().catch(() => ({error: {message: response.statusText}}));
  if (!response.ok) throw new Error((body.error && body.error.message) || ("HTTP " + response.status));
  return body;
}
function show(id, text, bad) { const el = $(id); el.textContent = text; el.className = bad ? "err" : "ok"; }
// Where each face's label goes (facecls.inference.annotate.place_labels, the same rule): above
// its box, below it, inside its top edge, right-aligned likewise, then further off; the first
// spot covering no other label nor face, else the one covering least (a label weighs ten faces).
function placeLabels(boxes, sizes, width, height) {
  const overlap = (a, b) => Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]))
    * Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const faces = boxes.map(([x, y, w, h]) => [x, y, x + w, y + h]);
  const order = boxes.map((_, i) => i)
    .sort((i, j) => boxes[i][1] - boxes[j][1] || boxes[i][0] - boxes[j][0]);
  const labels = [], placed = [];
  for (const i of order) {
    const [x, y, w, h] = boxes[i], [tw, th] = sizes[i], spots = [];
    for (const tx of [x, x + w - tw]) spots.push([tx, y - th], [tx, y + h], [tx, y]);
    for (let step = 1; step < 4; step++) spots.push([x, y - th * (step + 1)], [x, y + h + th * step]);
    let best = [0, 0], least = Infinity;
    for (const [sx, sy] of spots) {
      const tx = Math.max(0, Math.min(sx, width - tw)), ty = Math.max(0, Math.min(sy, height - th));
      const rect = [tx, ty, tx + tw, ty + th];
      let cost = 0;
      for (const other of labels) cost += 10 * overlap(rect, other);
      faces.forEach((face, j) => { if (j !== i) cost += overlap(rect, face); });
      if (cost < least) { least = cost; best = [tx, ty]; }
      if (cost === 0) break;
    }
    placed[i] = best;
    labels.push([best[0], best[1], best[0] + tw, best[1] + th]);
  }
  return placed;
}
function draw(file, result) {
  const img = new Image();
  const url = URL.createObjectURL(file);
  img.onload = () => {
    const canvas = $("canvas");
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const line = Math.max(1, Math.round(canvas.width / 300));
    const size = Math.max(10, 6 * line);
    ctx.lineWidth = line; ctx.font = size + "px sans-serif"; ctx.textBaseline = "top";
    const sizes = result.faces.map((face) =>
      [ctx.measureText(face.label).width + 2 * line, size + 2 * line]);
    for (const face of result.faces) {  // every box first, so no label lies under an outline
      const [x, y, w, h] = face.box;
      ctx.strokeStyle = face.decision === "known" ? "__KNOWN__" : "__UNKNOWN__";
      ctx.strokeRect(x, y, w, h);
    }
    // the name (or "unknown — closest: ...") on a filled tag by its box, inside the photo,
    // covering no other tag
    const spots = placeLabels(result.faces.map((f) => f.box), sizes, canvas.width, canvas.height);
    result.faces.forEach((face, i) => {
      const [left, top] = spots[i], [width, height] = sizes[i];
      ctx.fillStyle = face.decision === "known" ? "__KNOWN__" : "__UNKNOWN__";
      ctx.fillRect(left, top, width, height);
      ctx.fillStyle = "__TEXT__"; ctx.fillText(face.label, left + line, top + line);
    });
    URL.revokeObjectURL(url);
  };
  img.src = url;
}
async function predict(file) {
  if (!file) return;
  const form = new FormData(); form.append("file", file);
  try {
    const result = await call("predict", form);
    draw(file, result);
    const names = result.faces.map((f) => f.label);
    $("names-found").textContent = names.length ? names.join(", ") : (result.message || "no face");
    show("predict-status", result.faces.length + " face(s)", false);
  } catch (e) { show("predict-status", e.message, true); }
}
async function compare() {
  const a = $("a").files[0], b = $("b").files[0];
  if (!a || !b) { show("verify-status", "choose two photos", true); return; }
  const form = new FormData(); form.append("a", a); form.append("b", b);
  // which face of each photo (0 = the main one, /predict's order); the API refuses one beyond it
  form.append("face_a", $("face-a").value || "0"); form.append("face_b", $("face-b").value || "0");
  try {
    const r = await call("verify", form);
    show("verify-status", (r.same ? "same person" : "different people") +
      " (similarity " + r.similarity.toFixed(3) + ", threshold " + r.threshold.toFixed(3) + ")" +
      [["first", r.a], ["second", r.b]].filter((p) => p[1].faces > 1)
        .map((p) => "; " + p[0] + " photo: " + p[1].faces + " faces, face " + p[1].face +
          (p[1].face === 0 ? " (the main one)" : "") + " compared").join(""),
      false);
  } catch (e) { show("verify-status", e.message, true); }
}
async function enroll() {
  const files = $("enroll-files").files, name = $("enroll-name").value;
  if (!name || !files.length) { show("enroll-status", "give a name and photos", true); return; }
  const form = new FormData(); form.append("name", name);
  for (const f of files) form.append("files", f);
  try {
    const r = await call("enroll", form);
    show("enroll-status", "enrolled " + r.name + " from " + r.photos + " photo(s)", false);
    await identities();
  } catch (e) { show("enroll-status", e.message, true); }
}
async function identities() {
  try {
    const r = await call("identities");
    const list = $("names"); list.textContent = "";
    for (const n of r.trained.concat(r.enrolled)) {
      const li = document.createElement("li"); li.textContent = n; list.appendChild(li);
    }
    $("count").textContent = r.trained.length + " trained, " + r.enrolled.length + " enrolled";
  } catch (e) { $("count").textContent = e.message; }
}
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over"); predict(e.dataTransfer.files[0]);
});
$("photo").addEventListener("change", (e) => predict(e.target.files[0]));
$("compare").addEventListener("click", compare);
$("enroll").addEventListener("click", enroll);
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();  // nothing is submitted anywhere: the token stays in this tab
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN, token);
  $("token").value = "";
  $("token-box").hidden = true;
  identities();
});
identities();
"""

# The colours of every drawn answer (facecls.colours), as annotated photos and videos have them.
SCRIPT = (
    SCRIPT.replace("__KNOWN__", css(KNOWN))
    .replace("__UNKNOWN__", css(UNKNOWN))
    .replace("__TEXT__", css(TEXT))
)

_BODY = """<h1>facecls</h1>
<p>Everything runs on this machine; photos are not kept unless you enroll someone.</p>
<section id="token-box" hidden><form id="token-form"><label>This service needs its token
<input type="password" id="token" autocomplete="off" spellcheck="false"></label>
<button>Use it</button></form></section>
<section><h2>Who is in this photo?</h2>
<div id="drop" class="drop">Drop a photo here or <input type="file" id="photo" accept="image/*"></div>
<p id="predict-status"></p><p>Names: <span id="names-found"></span></p><canvas id="canvas" width="0" height="0"></canvas>
</section>
<section><h2>Same person?</h2>
<input type="file" id="a" accept="image/*"> <label>face <input type="number" id="face-a" min="0"
value="0" class="face"></label> <input type="file" id="b" accept="image/*"> <label>face <input
type="number" id="face-b" min="0" value="0" class="face"></label>
<button id="compare">Compare</button><p id="verify-status"></p></section>
<section><h2>Enroll a person</h2>
<input id="enroll-name" placeholder="name" maxlength="64">
<input type="file" id="enroll-files" accept="image/*" multiple>
<button id="enroll">Enroll</button><p id="enroll-status"></p></section>
<section><h2>People the model knows</h2><p id="count"></p><ul id="names"></ul></section>
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    f"<title>facecls</title><style>{STYLE}</style></head><body>{_BODY}"
    f"<script>{SCRIPT}</script></body></html>"
)
# Only the inline script and style above, photos from blob: URLs, requests to this origin.
CSP = (
    f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
    "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
