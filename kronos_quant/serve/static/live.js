// One live loop's page: heartbeat, equity, positions, band coverage and the latest decisions,
// read from the loop's ledger (read-only) and refreshed every `refresh_s` seconds.
"use strict";

const NAME = decodeURIComponent(location.pathname.split("/").pop());
const BASE = "/live/" + encodeURIComponent(NAME);

function kpis(summary, positions) {
  const items = [
    ["exchange · timeframe", (summary.exchange || "–") + " · " + (summary.timeframe || "–")],
    ["symbols", (summary.symbols || []).join(", ")],
    ["equity", kq.fmt(positions.equity, 2)],
    ["PnL", kq.fmt(summary.pnl, 2) + " (" + kq.pct(summary.pnl / summary.initial_cash) + ")"],
    ["cash", kq.fmt(positions.cash, 2)],
    ["decisions", String(summary.decisions)],
    ["last candle", summary.last_candle || "–"],
  ];
  if (summary.skipped) {
    items.push(["skipped candles", summary.skipped + " (last: " + summary.last_skip_reason + ")"]);
  }
  const box = document.getElementById("kpis");
  box.replaceChildren();
  items.forEach(([k, v]) => {
    const d = document.createElement("div"); d.className = "kpi";
    const vv = document.createElement("div"); vv.className = "v"; vv.textContent = v;
    const kk = document.createElement("div"); kk.className = "k"; kk.textContent = k;
    d.append(vv, kk); box.appendChild(d);
  });
}

function heartbeat(summary) {
  const el = document.getElementById("heartbeat");
  const age = kq.age(summary.heartbeat_age_s);
  if (summary.stale) {
    el.className = "banner stale";
    el.textContent = "Stale: the last decision was written " + age + " ago (expected every " +
      kq.age(summary.stale_after_s / 2) + " or so). Is the loop running and reaching its exchange?";
  } else {
    el.className = "banner fresh";
    el.textContent = "Heartbeat: last decision written " + age + " ago.";
  }
}

function decisionRows(decisions) {
  return decisions.slice().reverse().map(d => {
    // Per-step forecast: `path` of the ledger's summary (older ledgers: the top level).
    const f = d.forecast, p = f.path || f, h = (p.q50 || []).length - 1;
    return [d.time, d.symbol, kq.fmt(d.close), kq.fmt(d.target_weight, 3),
            kq.fmt(f.prob_up, 2), kq.pct(d.scores.expected_return),
            kq.fmt(p.q10[h]), kq.fmt(p.q50[h]), kq.fmt(p.q90[h]), (p.stamps || [])[h] || "–"];
  });
}

function coverageChart(cov) {
  const text = cov.checked ? ("inside the band " + cov.inside + " of " + cov.checked +
    " times: " + kq.pct(cov.coverage) + " (nominal " + kq.pct(cov.nominal) + ")")
    : "no forecast step has been realised yet";
  document.getElementById("coverage-text").textContent = text;
  const pts = cov.points;
  const bar = pts.map(p => (p.q90 - p.q10) / 2);
  return Plotly.react("coverage", [
    {x: pts.map(p => p.time + " " + p.symbol), y: pts.map(p => (p.q10 + p.q90) / 2),
     error_y: {type: "data", array: bar, color: "rgba(31,95,168,0.5)", thickness: 6, width: 0},
     mode: "markers", marker: {size: 1, color: "rgba(0,0,0,0)"}, name: "10–90% band"},
    {x: pts.map(p => p.time + " " + p.symbol), y: pts.map(p => p.realised), mode: "markers",
     marker: {color: pts.map(p => (p.inside ? "#1e7b34" : "#b3261e")), size: 6}, name: "realised"},
  ], {margin: {l: 55, r: 10, t: 10, b: 40}, showlegend: false,
      xaxis: {type: "category", showticklabels: false, title: {text: "forecast steps, oldest → newest"}}},
  {displaylogo: false, responsive: true});
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const live = await kq.api("/live");
    const summary = live.loops.find(l => l.name === NAME);
    document.getElementById("title").textContent = "Live loop: " + NAME;
    if (!summary || summary.status !== "ok") {
      status.textContent = summary ? summary.message : "unknown loop";
      document.body.dataset.state = "waiting";
      return live.refresh_s;
    }
    const [positions, equity, decisions, cov] = await Promise.all([
      kq.api(BASE + "/positions"), kq.api(BASE + "/equity"),
      kq.api(BASE + "/decisions?limit=20"), kq.api(BASE + "/coverage")]);
    heartbeat(summary);
    kpis(summary, positions);
    await Plotly.react("equity", [{x: equity.time, y: equity.equity, mode: "lines+markers",
                                   marker: {size: 4}, name: "equity", line: {color: "#1f5fa8"}}],
      {margin: {l: 60, r: 10, t: 30, b: 40}, title: {text: "equity", font: {size: 13}},
       shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, y0: equity.initial_cash,
                 y1: equity.initial_cash, line: {dash: "dot", color: "#999"}}]},
      {displaylogo: false, responsive: true});
    kq.table(document.getElementById("positions"),
             ["symbol", "qty", "avg price", "mark", "value", "unrealised"],
             positions.positions.map(p => [p.symbol, kq.fmt(p.qty, 6), kq.fmt(p.avg_price),
                                           kq.fmt(p.mark), kq.fmt(p.value, 2),
                                           kq.fmt(p.unrealised_pnl, 2)]));
    await coverageChart(cov);
    kq.table(document.getElementById("decisions"),
             ["candle", "symbol", "close", "target w", "P(up)", "exp. return", "q10", "q50",
              "q90", "horizon"], decisionRows(decisions.decisions));
    const last = decisions.decisions[decisions.decisions.length - 1];
    document.body.dataset.state = "loaded";
    document.body.dataset.lastDecision = last ? last.time + " " + last.symbol : "";
    status.textContent = "updated " + new Date().toLocaleTimeString() + "; refreshes every " +
      live.refresh_s + " s";
    return live.refresh_s;
  } catch (err) {
    status.className = "status error"; status.textContent = err.message;
    document.body.dataset.state = "error";
    return 30;
  }
}

async function loop() {
  const every = await refresh();
  setTimeout(loop, 1000 * (every || 10));
}

kq.header("/loops/" + encodeURIComponent(NAME));
loop();
