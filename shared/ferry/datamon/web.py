"""The unified view as one web page: static HTML with inline JS that fetches ``v1/status``.

No build step: the page is this string. It colours each endpoint by state, draws a heat strip of
its recent partitions, filters by owner (``?owner=`` or the selector) and refreshes itself
(``?refresh=SECONDS``, default 30).
"""

from __future__ import annotations

import json

# One colour per state; the page, the CLI and the tests share it.
COLOURS = {
    "late": "#d32f2f",
    "at_risk": "#f57c00",
    "warn": "#fbc02d",
    "pending": "#9e9e9e",
    "landed_late": "#7b1fa2",
    "ok": "#388e3c",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Ferry · Datamon</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .5rem; }
  .bar { display: flex; gap: 1rem; align-items: center; margin-bottom: .8rem; }
  .counts span { margin-right: .8rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #eee; white-space: nowrap; }
  th { font-weight: 600; background: #fafafa; }
  td.state { color: #fff; font-weight: 600; border-radius: 3px; }
  .strip { display: flex; gap: 2px; }
  .cell { width: 10px; height: 16px; border-radius: 2px; display: inline-block; }
  #error { color: #d32f2f; }
  .muted { color: #888; }
</style>
</head>
<body>
<h1>Datamon — is my data late, and whose is it?</h1>
<div class="bar">
  <label>Owner <select id="owner"><option value="">all teams</option></select></label>
  <span class="counts" id="counts"></span>
  <span class="muted" id="updated"></span>
  <span id="error"></span>
</div>
<table id="endpoints">
  <thead><tr><th>Endpoint</th><th>Owner</th><th>Partitioning</th><th>State</th><th>Last landed</th>
  <th>Lag</th><th>Open alerts</th><th>Recent partitions</th></tr></thead>
  <tbody></tbody>
</table>
<script>
const COLOURS = __COLOURS__;
const params = new URLSearchParams(location.search);
const ownerSelect = document.getElementById("owner");
let owners = new Set();
function lag(s) {
  if (s === null || s === undefined) return "";
  const m = Math.round(s / 60);
  return m < 120 ? m + " min" : (m < 2880 ? Math.round(m / 60) + " h" : Math.round(m / 1440) + " d");
}
function cell(text) { const td = document.createElement("td"); td.textContent = text ?? ""; return td; }
function render(data) {
  const body = document.querySelector("#endpoints tbody");
  body.innerHTML = "";
  for (const r of data.endpoints) {
    owners.add(r.owner);
    const tr = document.createElement("tr");
    tr.dataset.endpoint = r.endpoint; tr.dataset.state = r.state; tr.dataset.owner = r.owner;
    tr.append(cell(r.endpoint), cell(r.owner), cell(r.partitioning));
    const st = cell(r.state.replace("_", " ")); st.className = "state"; st.style.background = COLOURS[r.state];
    tr.append(st, cell(r.last_landed), cell(lag(r.lag_seconds)), cell(String(r.open_alerts)));
    const strip = document.createElement("td"); const div = document.createElement("div"); div.className = "strip";
    for (const p of r.recent) {
      const c = document.createElement("span"); c.className = "cell"; c.title = p.partition + ": " + p.state;
      c.dataset.state = p.state; c.style.background = COLOURS[p.state]; div.append(c);
    }
    strip.append(div); tr.append(strip); body.append(tr);
  }
  const counts = document.getElementById("counts"); counts.innerHTML = "";
  for (const [s, n] of Object.entries(data.counts)) {
    const span = document.createElement("span"); span.textContent = s.replace("_", " ") + ": " + n;
    span.style.color = COLOURS[s]; counts.append(span);
  }
  const current = ownerSelect.value;
  for (const o of [...owners].sort()) {
    if (![...ownerSelect.options].some(x => x.value === o)) ownerSelect.append(new Option(o, o));
  }
  ownerSelect.value = current;
  document.getElementById("updated").textContent = "as of " + data.now;
  document.body.dataset.loaded = "1";
}
async function load() {
  const owner = ownerSelect.value;
  const url = "v1/status" + (owner ? "?owner=" + encodeURIComponent(owner) : "");
  try {
    const resp = await fetch(url, {headers: {"Accept": "application/json"}});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    render(await resp.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot load status: " + e.message;
  }
}
if (params.get("owner")) {
  ownerSelect.append(new Option(params.get("owner"), params.get("owner")));
  ownerSelect.value = params.get("owner");
}
ownerSelect.addEventListener("change", () => {
  const u = new URL(location.href);
  if (ownerSelect.value) u.searchParams.set("owner", ownerSelect.value); else u.searchParams.delete("owner");
  history.replaceState(null, "", u);
  load();
});
load();
setInterval(load, 1000 * Math.max(5, Number(params.get("refresh") || 30)));
</script>
</body>
</html>
"""
PAGE = PAGE.replace("__COLOURS__", json.dumps(COLOURS))
