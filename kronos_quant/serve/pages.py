"""Server-rendered pages: the login form and the OpenAPI page at ``/docs``.

``/docs`` is rendered here from the app's own OpenAPI schema rather than by Swagger UI,
whose scripts FastAPI loads from a CDN: the page must work on a machine with no internet.
The machine-readable schema is ``/openapi.json``.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:28px}
.op{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:12px 16px;margin:12px 0}
.method{display:inline-block;min-width:52px;font-weight:700;color:#fff;border-radius:4px;
        padding:2px 6px;margin-right:8px;text-align:center}
.get{background:#2f7d32}.post{background:#1f5fa8}
pre{background:#f0f2f5;padding:8px;overflow:auto;font-size:12px}
table{border-collapse:collapse} td,th{border-bottom:1px solid #e3e6ea;padding:4px 8px;
        text-align:left;font-size:13px}
form{background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:20px;max-width:360px}
input[type=password]{width:100%;padding:6px;margin:8px 0 12px;box-sizing:border-box}
.error{color:#b3261e}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{escape(title)}</title><style>{STYLE}</style></head><body><main>{body}</main>"
            f"</body></html>")


def login_page(next_path: str, *, wrong: bool = False) -> str:
    """The form that trades the token for an HttpOnly session cookie (POST /login)."""
    note = "<p class='error'>Wrong token.</p>" if wrong else ""
    return _page("kronos-quant: sign in", f"""
<h1>kronos-quant serve</h1>{note}
<form method="post" action="/login">
  <label for="token">This server needs its access token.</label>
  <input type="password" id="token" name="token" autocomplete="current-password" autofocus>
  <input type="hidden" name="next" value="{escape(next_path)}">
  <button type="submit">Sign in</button>
</form>""")


def _parameters(op: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
                   f"<td>{escape(str(p.get('schema', {}).get('type', '')))}</td>"
                   f"<td>{escape(p.get('description', ''))}</td></tr>"
                   for p in op.get("parameters", []))
    return f"<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>{rows}</table>" \
        if rows else ""


def _type(spec: dict[str, Any]) -> str:
    if "anyOf" in spec:
        return " | ".join(_type(s) for s in spec["anyOf"])
    kind = spec.get("type", "object")
    if kind == "array":
        return f"array of {_type(spec.get('items', {}))}"
    bounds = [f"{k} {spec[k]:g}" for k in ("minimum", "exclusiveMinimum", "maximum")
              if k in spec and spec[k] < 1e15]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _body_table(spec: dict[str, Any]) -> str:
    """A JSON body's fields as a table (name, type, default, description)."""
    props = spec.get("properties")
    if not props:
        return f"<pre>{escape(json.dumps(spec, indent=1))}</pre>"
    required = set(spec.get("required", []))
    rows = "".join(f"<tr><td><code>{escape(name)}</code>{' *' if name in required else ''}</td>"
                   f"<td>{escape(_type(p))}</td><td>{escape(json.dumps(p.get('default')))}</td>"
                   f"<td>{escape(p.get('description', ''))}</td></tr>"
                   for name, p in props.items())
    return ("<table><tr><th>field (* required)</th><th>type</th><th>default</th><th></th></tr>"
            f"{rows}</table>")


def docs_page(schema: dict[str, Any]) -> str:
    """Every operation of ``schema``: method, path, summary, parameters, body and replies."""
    parts = [f"<h1>{escape(schema['info']['title'])} {escape(schema['info']['version'])}</h1>",
             f"<p>{escape(schema['info'].get('description', ''))}</p>",
             "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. With a token, "
             "send <code>Authorization: Bearer &lt;token&gt;</code> (all but /health).</p>"]
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {})
            bodies = "".join(f"<p>body <code>{escape(kind)}</code></p>"
                             f"{_body_table(spec.get('schema', {}))}"
                             for kind, spec in body.items())
            replies = ", ".join(f"{escape(code)} {escape(r.get('description', ''))}"
                                for code, r in op.get("responses", {}).items())
            parts.append(f"<div class='op'><span class='method {method}'>{method.upper()}"
                         f"</span><code>{escape(path)}</code> — {escape(op.get('summary', ''))}"
                         f"<p>{escape(op.get('description', ''))}</p>{_parameters(op)}{bodies}"
                         f"<p>replies: {replies}</p></div>")
    return _page(f"{schema['info']['title']} API", "".join(parts))
