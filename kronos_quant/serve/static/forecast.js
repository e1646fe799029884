// Forecast page: bars (pasted, a file, or the server's example) → POST /forecast (text/csv)
// → fan chart (Plotly), close quantile table and scores.
"use strict";

let seriesName = "";  // the chosen file's or the example's name, sent as the series label

const TIME_NAMES = ["timestamp", "timestamps", "datetime", "date", "time"];
const SHOWN_HISTORY = 80;  // bars of history drawn before the fan

function history(text) {
  // The last bars' time and close, for the chart (the server parses and checks the bars).
  const lines = text.trim().split(/\r?\n/).filter(l => l.trim());
  if (lines.length < 2) { return {x: [], y: []}; }
  const head = lines[0].split(",").map(h => h.trim().toLowerCase());
  const t = head.findIndex(h => TIME_NAMES.includes(h));
  const c = head.indexOf("close");
  const rows = lines.slice(1).slice(-SHOWN_HISTORY).map(l => l.split(","));
  return {x: rows.map(r => (t >= 0 ? r[t].trim() : "")), y: rows.map(r => Number(r[c]))};
}

function fan(past, reply) {
  const qs = Object.keys(reply.quantiles).map(Number).sort((a, b) => a - b);
  const x = reply.timestamps;
  const close = q => reply.quantiles[String(q)].close;
  const traces = [{x: past.x, y: past.y, name: "history", mode: "lines",
                   line: {color: "#222", width: 1.4}}];
  // Bands from the outermost quantile pair inwards, darker towards the centre.
  for (let i = 0; i < Math.floor(qs.length / 2); i++) {
    const lo = qs[i], hi = qs[qs.length - 1 - i];
    const alpha = 0.15 + 0.2 * i;
    traces.push({x: x, y: close(lo), mode: "lines", line: {width: 0}, showlegend: false,
                 hoverinfo: "skip", name: "q" + lo});
    traces.push({x: x, y: close(hi), mode: "lines", line: {width: 0}, fill: "tonexty",
                 fillcolor: "rgba(31,95,168," + alpha + ")",
                 name: Math.round(lo * 100) + "–" + Math.round(hi * 100) + "%"});
  }
  if (qs.includes(0.5)) {
    traces.push({x: x, y: close(0.5), name: "median", mode: "lines",
                 line: {color: "#1f5fa8", width: 2}});
  }
  traces.push({x: x, y: reply.mean.close, name: "mean", mode: "lines",
               line: {color: "#c0392b", width: 1.5, dash: "dot"}});
  const title = (reply.name || "series") + ": close, " + reply.sample_count + " paths × " +
                reply.pred_len + " bars (seed " + reply.seed + ")";
  return Plotly.newPlot("chart", traces, {
    title: {text: title, font: {size: 14}}, margin: {l: 60, r: 20, t: 40, b: 50},
    hovermode: "x unified", legend: {orientation: "h", y: -0.15},
    annotations: [{text: "model: " + reply.model, xref: "paper", yref: "paper", x: 1, y: 0,
                   xanchor: "right", yanchor: "bottom", showarrow: false,
                   font: {size: 10, color: "#777"}}],
  }, {responsive: true, displaylogo: false});
}

function tables(reply) {
  const qs = Object.keys(reply.quantiles).map(Number).sort((a, b) => a - b);
  // Daily bars: the date alone.
  const daily = reply.timestamps.every(t => t.endsWith(" 00:00:00"));
  kq.table(document.getElementById("table"),
           ["time", "mean"].concat(qs.map(q => "q" + Math.round(q * 100))),
           reply.timestamps.map((t, i) => [daily ? t.slice(0, -9) : t,
                                           kq.fmt(reply.mean.close[i])].concat(
             qs.map(q => kq.fmt(reply.quantiles[String(q)].close[i])))));
  kq.table(document.getElementById("scores"), ["score", "value"],
           Object.entries(reply.scores).map(([k, v]) => [k, kq.fmt(v, 5)]));
}

async function run() {
  const status = document.getElementById("status");
  const text = document.getElementById("bars").value;
  const params = new URLSearchParams({
    pred_len: document.getElementById("pred_len").value,
    sample_count: document.getElementById("samples").value,
    quantiles: document.getElementById("quantiles").value,
  });
  const seed = document.getElementById("seed").value.trim();
  if (seed) { params.set("seed", seed); }
  if (seriesName) { params.set("name", seriesName); }
  status.className = "status"; status.textContent = "forecasting …";
  const started = performance.now();
  try {
    const reply = await kq.api("/forecast?" + params, {
      method: "POST", headers: {"Content-Type": "text/csv"}, body: text});
    await fan(history(text), reply);
    tables(reply);
    const s = reply.scores;
    status.textContent = "done in " + ((performance.now() - started) / 1000).toFixed(2) +
      " s: expected return " + kq.pct(s.expected_return) + ", P(up) " + kq.fmt(s.prob_up, 2);
    document.body.dataset.state = "drawn";
    document.body.dataset.traces = document.getElementById("chart").data.length;
    document.body.dataset.rows = reply.timestamps.length;
  } catch (err) {
    status.className = "status error"; status.textContent = err.message;
    document.body.dataset.state = "error";
  }
}

async function loadExample() {
  const reply = await fetch("/example.csv", {credentials: "same-origin"});
  if (!reply.ok) { throw new Error("this server has no example series"); }
  document.getElementById("bars").value = await reply.text();
  const named = /filename="([^"]+)\.csv"/.exec(reply.headers.get("Content-Disposition") || "");
  seriesName = named ? named[1] : "example";
}

document.getElementById("run").addEventListener("click", run);
document.getElementById("bars").addEventListener("input", () => { seriesName = ""; });
document.getElementById("example").addEventListener("click", () => loadExample().catch(
  err => { document.getElementById("status").textContent = err.message; }));
document.getElementById("file").addEventListener("change", event => {
  const file = event.target.files[0];
  if (!file) { return; }
  const reader = new FileReader();
  reader.onload = () => {
    document.getElementById("bars").value = reader.result;
    seriesName = file.name.replace(/\.[^.]*$/, "").slice(0, 64);
  };
  reader.readAsText(file);
});
kq.header("/");
if (new URLSearchParams(location.search).has("example")) {
  loadExample().then(run).catch(err => { document.getElementById("status").textContent = err.message; });
}
