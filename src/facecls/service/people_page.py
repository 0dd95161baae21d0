"""The People page: one self-contained HTML document (no CDN, no external file), like the
service's page (:mod:`facecls.service.page`): one inline script and style sheet allowed by hash
in a strict Content-Security-Policy, faces shown from ``blob:`` URLs, requests to its own origin
only, the token from the URL fragment kept in ``sessionStorage``.

Each cluster is a sheet of face thumbnails, largest first; a click selects a face, a double
click shows its photo. Name a cluster, merge it into another, forget it; move or remove the
selected faces; undo the latest action. Names are always set with ``textContent`` or as input
values, never parsed as HTML.
"""

from __future__ import annotations

import base64
import hashlib

MAX_SHEETS = 200  # people and clusters shown (most faces first)

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.05rem;margin:.2rem 0}
section{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:.8rem 0}
.faces{display:flex;flex-wrap:wrap;gap:4px;margin:.4rem 0}
.faces img{width:72px;height:72px;border:3px solid transparent;border-radius:4px;cursor:pointer}
.faces img.selected{border-color:#06c}
#bar{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid #ddd}
.err{color:#b00}.ok{color:#070}
dialog img{max-width:90vw;max-height:85vh}
#token-box{border-color:#b00}
"""

SCRIPT = (
    r"""
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN = "facecls-token";
const MAX_SHEETS = __MAX__;
const selected = new Set();
let people = [];
(() => {  // a token in the fragment never reaches the server: keep it for this tab only
  const found = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!found) return;
  let token = found[1];
  try { token = decodeURIComponent(token); } catch (e) { /* not %-encoded */ }
  if (token) sessionStorage.setItem(TOKEN, token);
  history.replaceState(null, "", location.pathname + location.search);
})();
async function call(path, body) {
  const token = sessionStorage.getItem(TOKEN);
  const headers = token ? {Authorization: "Bearer " + token} : {};
  const init = {method: body === undefined ? "GET" : "POST", headers};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) { $("token-box").hidden = false; throw new Error("This page needs its token"); }
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error((problem.error && problem.error.message) || ("HTTP " + response.status));
  }
  return response;
}
const json = async (path, body) => (await call(path, body)).json();
const picture = async (path) => URL.createObjectURL(await (await call(path)).blob());
function status(text, bad) { const el = $("status"); el.textContent = text; el.className = bad ? "err" : "ok"; }
const label = (p) => p.name === null ? "Cluster " + p.id : p.name;
function button(text, onClick) {
  const b = document.createElement("button");
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}
function targets(select, except) {
  select.replaceChildren();
  for (const p of people) {
    if (p.id === except) continue;
    const option = document.createElement("option");
    option.value = p.id;
    option.textContent = label(p);
    select.appendChild(option);
  }
}
async function act(path, body) {
  try {
    const answer = await json(path, body);
    status(answer.done);
    selected.clear();
    await load();
  } catch (e) { status(e.message, true); }
}
async function sheet(p) {
  const section = document.createElement("section");
  section.dataset.person = p.id;
  const title = document.createElement("h2");
  title.textContent = label(p) + " · " + p.faces + (p.faces === 1 ? " face" : " faces");
  const name = document.createElement("input");
  name.className = "name";
  name.placeholder = "Name";
  name.value = p.name || "";
  const into = document.createElement("select");
  into.className = "into";
  targets(into, p.id);
  section.append(title, name,
    button("Name", () => act("api/people/" + p.id + "/name", {name: name.value})),
    " ", into, button("Merge into", () => act("api/merge", {people: [p.id], into: Number(into.value)})),
    " ", button("Not someone I care about", () => act("api/people/" + p.id + "/forget", {hidden: true})));
  const faces = document.createElement("div");
  faces.className = "faces";
  section.appendChild(faces);
  for (const face of await json("api/people/" + p.id + "/faces")) {
    const img = document.createElement("img");
    img.dataset.face = face.id;
    img.alt = "face " + face.id;
    img.title = "face " + face.id + " (" + face.size + " px, " + (face.source || "") + ")";
    img.addEventListener("click", () => {
      if (selected.has(face.id)) selected.delete(face.id); else selected.add(face.id);
      img.classList.toggle("selected");
      $("chosen").textContent = selected.size + " selected";
    });
    img.addEventListener("dblclick", async () => {
      $("photo").src = await picture("api/photos/" + face.photo);
      $("photo-view").showModal();
    });
    faces.appendChild(img);
    picture("api/faces/" + face.id + "/thumb").then((url) => { img.src = url; }, () => {});
  }
  return section;
}
async function load() {
  try {
    people = (await json("api/people")).slice(0, MAX_SHEETS);
    $("count").textContent = people.length + " people and clusters";
    targets($("move-to"));
    $("chosen").textContent = "0 selected";
    const sheets = await Promise.all(people.map(sheet));
    $("people").replaceChildren(...sheets);
    document.body.dataset.ready = String(Date.now());
  } catch (e) { status(e.message, true); }
}
$("move").addEventListener("click", () => act("api/faces/move", {faces: [...selected], to: Number($("move-to").value)}));
$("remove").addEventListener("click", () => act("api/faces/remove", {faces: [...selected]}));
$("undo").addEventListener("click", () => act("api/undo", {}));
$("close").addEventListener("click", () => $("photo-view").close());
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN, token);
  $("token").value = "";
  $("token-box").hidden = true;
  load();
});
load();
"""
).replace("__MAX__", str(MAX_SHEETS))

_BODY = """<h1>People</h1>
<section id="token-box" hidden><form id="token-form"><label>This page needs its token
<input type="password" id="token" autocomplete="off" spellcheck="false"></label>
<button>Use it</button></form></section>
<div id="bar"><span id="count"></span> · <span id="chosen">0 selected</span> ·
move them to <select id="move-to"></select> <button id="move">Move</button>
<button id="remove">Not this person</button> · <button id="undo">Undo</button>
<p id="status"></p></div>
<div id="people"></div>
<dialog id="photo-view"><img id="photo" alt="photo"><br><button id="close">Close</button></dialog>
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
    f"<title>People · facecls</title><style>{STYLE}</style></head><body>{_BODY}"
    f"<script>{SCRIPT}</script></body></html>"
)
CSP = (
    f"default-src 'none'; script-src {_hash(SCRIPT)}; style-src {_hash(STYLE)}; "
    "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
