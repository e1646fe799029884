// Shared helpers of the kronos-quant dashboard pages (no framework, no CDN).
"use strict";

const kq = {
  // fetch a JSON endpoint with the session cookie; a 401 sends the browser to the login form.
  async api(path, options) {
    const reply = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
    if (reply.status === 401) {
      window.location = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("sign-in needed");
    }
    const body = await reply.json().catch(() => ({detail: reply.statusText}));
    if (!reply.ok) { throw new Error(body.detail || ("HTTP " + reply.status)); }
    return body;
  },
  fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) { return "–"; }
    const d = digits === undefined ? 4 : digits;
    return Number(value).toLocaleString(undefined, {minimumFractionDigits: d,
                                                    maximumFractionDigits: d});
  },
  pct(value) { return value === null || value === undefined ? "–" : (100 * value).toFixed(1) + "%"; },
  age(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    if (seconds < 120) { return seconds.toFixed(0) + " s"; }
    if (seconds < 7200) { return (seconds / 60).toFixed(0) + " min"; }
    if (seconds < 172800) { return (seconds / 3600).toFixed(1) + " h"; }
    return (seconds / 86400).toFixed(1) + " days";
  },
  // rows: array of arrays; header: array of strings. Cells are text (never HTML).
  table(element, header, rows) {
    element.replaceChildren();
    const head = element.insertRow();
    header.forEach(h => { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); });
    rows.forEach(r => { const tr = element.insertRow(); r.forEach(c => { tr.insertCell().textContent = c; }); });
  },
  // header: model label and one link per watched live loop.
  async header(here) {
    try {
      const health = await kq.api("/health");
      document.getElementById("model").textContent = "model: " + health.model + " · v" + health.version;
      const live = await kq.api("/live");
      const nav = document.getElementById("nav");
      const links = [["/", "Forecast"]].concat(live.loops.map(l => ["/loops/" + encodeURIComponent(l.name), "Live: " + l.name]));
      links.push(["/docs", "API"]);
      nav.replaceChildren();
      links.forEach(([href, text]) => {
        const a = document.createElement("a"); a.href = href; a.textContent = text;
        if (href === here) { a.className = "here"; }
        nav.appendChild(a);
      });
      return live;
    } catch (err) { return null; }
  },
};
