# ruff: noqa: E501  (the page is HTML and JS, wrapped as a reader of HTML expects)
"""The console's one page: static HTML, vanilla JS, no external assets. It draws what /api/... answers:
the VPC picture (SVG made by the server), the reachability matrix (engine and, after a probe, kernel),
and the live flows (polled), where a denied flow opens `vpcnet policy explain`'s text for it."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vpcnet console</title>
<style>
body { font-family: Helvetica, Arial, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 18px 0 6px; }
section { border-top: 1px solid #ccd; padding-top: 4px; }
.muted { color: #667; font-size: 12px; } .error { color: #b00; }
table { border-collapse: collapse; font-size: 12px; }
td, th { padding: 2px 8px; text-align: left; border-bottom: 1px solid #eee; white-space: nowrap; }
tr.deny { background: #fde4e4; cursor: pointer; } tr.deny:hover { background: #f8c8c8; }
tr.deny td.verdict { color: #b00; font-weight: bold; }
pre#explain { background: #f6f6fa; border: 1px solid #ccd; padding: 8px; white-space: pre-wrap; }
.list { font-size: 12px; } .list span { display: inline-block; margin: 0 10px 2px 0; }
#flows-wrap { max-height: 420px; overflow-y: auto; }
</style></head>
<body>
<h1>vpcnet console <span id="title" class="muted"></span></h1>
<div id="errors" class="error"></div>
<section><h2>VPC</h2>
<div id="topology">loading...</div>
<div class="list">nodes: <span id="nodes"></span></div>
<div class="list">pods: <span id="pods"></span></div>
</section>
<section><h2>Reachability</h2>
<label>port <input id="port" type="number" value="80" min="1" max="65535" style="width:6em"></label>
<label>protocol <select id="protocol"><option>TCP</option><option>UDP</option><option>SCTP</option></select></label>
<button id="show">show</button>
<button id="probe" title="send packets between every pair of pods (changes nothing)">probe with packets</button>
<span id="probe-state" class="muted"></span>
<div id="matrix"></div><ul id="disagreements" class="error"></ul>
</section>
<section><h2>Flows</h2>
<label><input id="denied-only" type="checkbox"> denied only</label>
<span id="flow-state" class="muted"></span>
<div id="flows-wrap"><table><thead><tr><th>end</th><th>node</th><th>verdict</th><th>dir</th><th>proto</th>
<th>from</th><th>to</th><th>packets</th><th>bytes</th><th>decided by</th></tr></thead>
<tbody id="flows"></tbody></table></div>
<p class="muted">Click a denied flow for the policy and rule that decided it.</p>
<div id="explain-cmd" class="muted"></div><pre id="explain"></pre>
</section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
async function api(path) {
  const resp = await fetch(path, {cache: "no-store"});
  const doc = await resp.json();
  if (!resp.ok) throw new Error(path.split("?")[0] + ": " + (doc.error || resp.status));
  return doc;
}
function problem(where, err) {
  const old = document.querySelector('[data-where="' + where + '"]');
  if (old) old.remove();
  if (err) $("errors").appendChild(el("div", {"data-where": where}, String(err.message || err)));
}
function names(target, items, cls) {
  target.replaceChildren(...items.map((n) => el("span", {"class": cls, "data-name": n}, n)));
}
async function loadTopology() {
  try {
    const doc = await api("/api/topology");
    $("title").textContent = doc.vpc.prefix ? "lab " + doc.vpc.prefix + " · VPC " + doc.vpc.id + " " + doc.vpc.cidr : doc.vpc.prefix;
    $("topology").innerHTML = doc.svg;
    names($("nodes"), doc.nodes, "node-name");
    names($("pods"), doc.pods, "pod-name");
    $("probe").disabled = !doc.can_probe;
    problem("topology");
  } catch (err) { problem("topology", err); }
}
function showMatrix(doc) {
  $("matrix").innerHTML = doc.svg;
  $("probe-state").textContent = doc.probed_at ? "kernel verdicts from a probe at " + new Date(doc.probed_at * 1000).toLocaleTimeString() : "not probed yet at this port";
  $("disagreements").replaceChildren(...doc.disagreements.map((d) =>
    el("li", {}, d.from + " -> " + d.to + ": kernel " + (d.measured ? "allows" : "blocks") + ", policy engine says " + (d.expected ? "allow" : "block"))));
}
function portQuery() { return "port=" + encodeURIComponent($("port").value) + "&protocol=" + $("protocol").value; }
async function loadMatrix() {
  try { showMatrix(await api("/api/matrix?" + portQuery())); problem("matrix"); }
  catch (err) { problem("matrix", err); }
}
async function probe() {
  $("probe").disabled = true; $("probe-state").textContent = "probing...";
  try { showMatrix(await api("/api/probe?" + portQuery())); problem("matrix"); }
  catch (err) { problem("matrix", err); $("probe-state").textContent = ""; }
  finally { $("probe").disabled = false; }
}
function decided(f) {
  if (f.reason === "rule") return f.policy + " rule " + f.rule + " (tier " + f.tier + ")";
  if (f.reason === "end-of-tier") return "end of tier " + f.tier;
  return f.reason;
}
async function explain(f) {
  const q = new URLSearchParams({from: f.from, to: f.to, protocol: f.protocol});
  if (f.dst.port !== null && f.dst.port !== undefined) q.set("port", f.dst.port);
  try {
    const doc = await api("/api/explain?" + q.toString());
    $("explain-cmd").textContent = "$ " + doc.command;
    $("explain").textContent = doc.text + "\\n\\nthe agent logged: " + f.explain;
    problem("explain");
  } catch (err) { problem("explain", err); }
}
function counted(f, what) {
  // the connection's conntrack counters each way when the record has them, else what NFLOG saw
  return f.counts ? f.counts.orig[what] + " out, " + f.counts.reply[what] + " back" : f[what];
}
async function loadFlows() {
  try {
    const doc = await api("/api/flows");
    const only = $("denied-only").checked;
    const rows = [];
    for (const f of doc.flows) {
      if (only && f.verdict !== "deny") continue;
      const tr = el("tr", {"class": "flow " + f.verdict, "data-from": f.from, "data-to": f.to});
      const port = f.dst.port !== null && f.dst.port !== undefined ? ":" + f.dst.port : "";
      for (const [cls, text] of [["end", new Date(f.end * 1000).toLocaleTimeString()], ["node", f.node],
          ["verdict", f.verdict], ["dir", f.direction], ["proto", f.protocol], ["from", f.from],
          ["to", f.to + port], ["packets", counted(f, "packets")], ["bytes", counted(f, "bytes")],
          ["decided", decided(f) + (f.event === "end" ? " (ended)" : "")]]) {
        tr.appendChild(el("td", {"class": cls}, String(text)));
      }
      if (f.verdict === "deny") tr.addEventListener("click", () => explain(f));
      rows.push(tr);
    }
    $("flows").replaceChildren(...rows);
    const errs = Object.entries(doc.errors).map(([n, e]) => n + ": " + e).join("; ");
    $("flow-state").textContent = doc.total + " flows, " + doc.denied + " denied" + (errs ? " (" + errs + ")" : "");
    problem("flows");
  } catch (err) { problem("flows", err); }
}
$("show").addEventListener("click", loadMatrix);
$("probe").addEventListener("click", probe);
$("denied-only").addEventListener("change", loadFlows);
loadTopology(); loadMatrix(); loadFlows();
setInterval(loadFlows, 2000);
setInterval(loadTopology, 10000);
</script>
</body></html>
"""
