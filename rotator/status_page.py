"""The status page: one read-only HTML document of where every policy stands, rendered from a pass report.

Served at ``/`` by ``rotator run`` when ``http.status_page: true`` (from the last pass), and written by
``rotator status --html FILE`` (from a dry-run pass that reads every target) for CronJob and Lambda users.

Per policy it shows a timeline (an inline SVG: each key the issuer lists for the policy, from issued to expires,
its due time, the grace window, now), which target holds which key and since when, the pickup state, the last
pass and its result, and the next planned action. Server-rendered: no script, no external asset, no form; the
served copy carries a Content-Security-Policy that forbids loading anything. Key ids appear (they are names,
not secrets); key material never does: every string goes through the log redaction before it is escaped.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rotator.config import format_duration
from rotator.observability import redact_text

if TYPE_CHECKING:
    from rotator.config import Config, Policy
    from rotator.engine import PassReport, PolicyReport
    from rotator.model import KeyInfo

#: the headers the daemon sends with the page: nothing may be loaded, framed or submitted
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:12px 24px}header h1{font-size:18px;margin:0}
header p{margin:4px 0 0;color:#c9cfdb}main{padding:16px 24px;max-width:1100px}
section.policy{background:#fff;border:1px solid #d9dde5;border-radius:6px;margin:0 0 16px;padding:12px 16px}
h2{font-size:16px;margin:0 0 8px}h2 small{font-weight:normal;color:#5b6475}
.badge{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;margin-left:6px;color:#fff}
.ok{background:#2e7d32}.failed{background:#c62828}.warn{background:#ef6c00}.phase{background:#455a9c}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceef2}
th{font-weight:600;color:#5b6475;font-size:12px}code{font-size:12px}
ul{margin:4px 0;padding-left:20px}.muted{color:#5b6475}.err{color:#c62828}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:8px 0}dt{color:#5b6475}dd{margin:0}
svg text{font:11px system-ui,sans-serif}
"""

_W, _LEFT, _RIGHT, _ROW = 760, 150, 20, 24


def _t(value: Any) -> str:
    """Text for the page: redacted, then escaped."""
    return html.escape(redact_text(str(value)), quote=True)


def _when(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "-"
    delta = ts - now
    rel = (
        f"in {format_duration(timedelta(seconds=int(delta.total_seconds())))}"
        if delta.total_seconds() >= 0
        else f"{format_duration(timedelta(seconds=int(-delta.total_seconds())))} ago"
    )
    stamp = ts.strftime("%Y-%m-%d %H:%M UTC")
    return f'<time datetime="{ts.isoformat()}">{stamp}</time> <span class="muted">({rel})</span>'


def _due(policy: Policy, key: KeyInfo, skew: timedelta) -> datetime | None:
    from rotator.planner import due_at

    return due_at(policy, key, skew)


def _timeline(policy: Policy, pr: PolicyReport, now: datetime, skew: timedelta, holders: dict[str, list[str]]) -> str:
    keys = sorted(pr.keys, key=lambda k: (k.issued_at, k.key_id))
    if not keys:
        return '<p class="muted">No key at the issuer for this policy.</p>'
    current = pr.plan.current_key if pr.plan else None
    ends = [k.expires_at for k in keys if k.expires_at is not None]
    start = min([k.issued_at for k in keys] + [now])
    end = max([*ends, now + (policy.grace or timedelta(0))])
    end = max(end, start + timedelta(minutes=1))  # a scale for keys that live seconds (tests, demos)
    span = (end - start).total_seconds() * 1.05 or 1.0

    def x(ts: datetime) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * max(0.0, (ts - start).total_seconds()) / span

    height = 28 + _ROW * len(keys) + 18
    fmt = "%Y-%m-%d" if end - start > timedelta(days=3) else "%Y-%m-%d %H:%M"
    out = [
        f'<svg role="img" aria-label="timeline of {_t(policy.name)}" width="{_W}" height="{height}" '
        f'viewBox="0 0 {_W} {height}" xmlns="http://www.w3.org/2000/svg">',
        f'<line x1="{_LEFT}" y1="20" x2="{_W - _RIGHT}" y2="20" stroke="#9aa3b5"/>',
        f'<text x="{_LEFT}" y="12" fill="#5b6475">{_t(start.strftime(fmt))}</text>',
        f'<text x="{_W - _RIGHT}" y="12" text-anchor="end" fill="#5b6475">{_t(end.strftime(fmt))}</text>',
    ]
    since = _grace_start(pr)
    for i, k in enumerate(keys):
        y = 28 + _ROW * i
        is_current = k.key_id == current
        x0 = x(k.issued_at)
        x1 = x(k.expires_at) if k.expires_at else _W - _RIGHT
        color = "#455a9c" if is_current else "#9aa3b5"
        label = k.key_id[:18]
        who = holders.get(k.key_id, [])
        expires = k.expires_at.isoformat() if k.expires_at else "never"
        tip = f"{k.key_id}: issued {k.issued_at.isoformat()}, expires {expires}"
        if who:
            tip += "; held by " + ", ".join(who)
        out.append(f'<g class="key" data-key="{_t(k.key_id)}"><title>{_t(tip)}</title>')
        out.append(f'<text x="4" y="{y + 13}" fill="#1d2330">{_t(label)}{" *" if is_current else ""}</text>')
        out.append(
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(2.0, x1 - x0):.1f}" height="14" rx="3" fill="{color}"/>'
        )
        due = _due(policy, k, skew)
        if due is not None and is_current:
            xd = x(due)
            out.append(f'<line x1="{xd:.1f}" y1="{y}" x2="{xd:.1f}" y2="{y + 20}" stroke="#ef6c00" stroke-width="2"/>')
            out.append(f'<text x="{xd + 3:.1f}" y="{y - 1}" fill="#ef6c00">due</text>')
        if is_current and since is not None and policy.grace:
            xg0, xg1 = x(since), x(since + policy.grace)
            out.append(
                f'<rect class="grace" x="{xg0:.1f}" y="{y + 1}" width="{max(2.0, xg1 - xg0):.1f}" height="18" '
                'fill="#2e7d32" fill-opacity="0.35"><title>grace window</title></rect>'
            )
        if who:
            names = ", ".join(who)
            width = 6.2 * len(names)  # about 6 px a character at 11 px
            if x1 - x0 >= width + 8:  # inside the bar
                where = f'x="{x1 - 4:.1f}" text-anchor="end" fill="#fff"'
            elif x1 + 4 + width <= _W:  # after it
                where = f'x="{x1 + 4:.1f}" fill="#1d2330"'
            else:  # before it
                where = f'x="{x0 - 4:.1f}" text-anchor="end" fill="#1d2330"'
            out.append(f'<text {where} y="{y + 14}">{_t(names)}</text>')
        out.append("</g>")
    xn = x(now)
    out.append(
        f'<line x1="{xn:.1f}" y1="16" x2="{xn:.1f}" y2="{height - 14}" stroke="#c62828" stroke-dasharray="3 2"/>'
    )
    out.append(f'<text x="{xn:.1f}" y="{height - 2}" text-anchor="middle" fill="#c62828">now</text>')
    out.append("</svg>")
    return "".join(out)


def _grace_start(pr: PolicyReport) -> datetime | None:
    """When the last target started holding the current key (grace counts from then), if this pass read them."""
    current = pr.plan.current_key if pr.plan else None
    if not current or not pr.targets:
        return None
    times = [s.current_since for s in pr.targets.values() if s is not None and s.current_key_id == current]
    if not times or any(t is None for t in times) or len(times) != len(pr.targets):
        return None
    return max(t for t in times if t is not None)


def _describe(action: Any) -> str:
    kind = action.kind
    if kind == "create":
        return f"create a new key ({action.reason})"
    if kind == "publish":
        return f"publish {action.key_id} to {action.target}"
    if kind == "retire":
        return f"retire {action.key_id} in {action.target}"
    if kind == "reload":
        return f"reload {action.target}/{action.unit} for {action.key_id} ({action.reason})"
    return f"revoke {action.key_id} ({action.reason})"


def _policy(policy: Policy, pr: PolicyReport, report: PassReport, now: datetime, skew: timedelta) -> str:
    phase = pr.plan.phase if pr.plan else "error"
    by_id = {k.key_id: k for k in pr.keys}
    held = pr.held_keys()
    holders: dict[str, list[str]] = {}
    for t in policy.targets:
        k = held.get(t.id)
        if k is not None:
            holders.setdefault(k.key_id, []).append(t.id)
    notes = list(pr.plan.notes) if pr.plan else []
    overdue = any(n.startswith("! pickup overdue") for n in notes)
    status = '<span class="badge ok">ok</span>' if pr.ok else '<span class="badge failed">failed</span>'
    out = [
        f'<section class="policy" id="policy-{_t(policy.name)}" data-policy="{_t(policy.name)}">',
        f"<h2>{_t(policy.name)} <small>role {_t(policy.role)}</small>{status}"
        f'<span class="badge phase">{_t(phase)}</span>'
        + ('<span class="badge warn">pickup overdue</span>' if overdue else "")
        + "</h2>",
        _timeline(policy, pr, now, skew, holders),
    ]
    current = pr.plan.current_key if pr.plan else None
    key = by_id.get(current) if current else None
    due = _due(policy, key, skew) if key else None
    grace_from = _grace_start(pr)
    out.append("<dl>")
    out.append(f"<dt>current key</dt><dd><code>{_t(current or '-')}</code></dd>")
    if key is not None:
        out.append(f"<dt>issued</dt><dd>{_when(key.issued_at, now)}</dd>")
        out.append(f"<dt>due</dt><dd>{_when(due, now) if due else 'never'}</dd>")
        out.append(f"<dt>expires</dt><dd>{_when(key.expires_at, now) if key.expires_at else 'never'}</dd>")
    grace = f"{format_duration(policy.grace)}"
    if grace_from is not None:
        grace += f", from {_when(grace_from, now)} to {_when(grace_from + policy.grace, now)}"
    out.append(f"<dt>grace</dt><dd>{grace}</dd>")
    if policy.window is not None or policy.freezes:
        window = _t(str(policy.window)) if policy.window is not None else "any time"
        frozen = [f for f in policy.freezes if f.end > now]
        if frozen:
            window += "; " + "; ".join(_t(str(f)) for f in frozen)
        opens = pr.plan.window_opens if pr.plan else None
        if opens is not None:
            window += f'; <span data-window-opens="{opens.isoformat()}">due: waits for the window '
            window += f"opening {_when(opens, now)}</span>"
        out.append(f"<dt>window</dt><dd>{window}</dd>")
    if phase == "awaiting-pickup":
        pickup = "waiting for grace" + (" and consumers" if policy.pickup else "") + " before revoking the old key"
        if overdue:
            pickup += ": overdue (past max_wait)"
    elif policy.pickup:
        pickup = f"{len(policy.pickup)} check(s); nothing waiting"
    else:
        pickup = "grace only; nothing waiting"
    out.append(f"<dt>pickup</dt><dd>{_t(pickup)}</dd>")
    last = "ok" if pr.ok else "failed"
    label = "read" if report.dry_run else "last pass"
    out.append(f"<dt>{label}</dt><dd>{_when(report.finished, now)}: {last}</dd>")
    actions = [_describe(a) for a in pr.plan.actions] if pr.plan else []
    done = [r for r in pr.results]
    if done:
        nxt = "; ".join(("ok: " if r.ok else "FAILED: ") + _describe(r.action) for r in done)
        out.append(f"<dt>did</dt><dd>{_t(nxt)}</dd>")
    elif actions:
        out.append(f"<dt>next action</dt><dd>{_t('; '.join(actions))}</dd>")
    wake = pr.plan.wake_at if pr.plan else None
    out.append(f"<dt>next change</dt><dd>{_when(wake, now) if wake else '-'}</dd>")
    out.append("</dl>")
    out.append("<table><thead><tr><th>target</th><th>holds key</th><th>since</th><th>state</th></tr></thead><tbody>")
    for t in policy.targets:
        state = (pr.targets or {}).get(t.id)
        err = pr.target_errors.get(t.id)
        k = held.get(t.id)
        holds = state.current_key_id if state is not None else (k.key_id if k else None)
        since = state.current_since if state is not None else None
        if err:
            st = f'<span class="err">{_t(err)}</span>'
        elif holds is None:
            st = "holds no rotator key"
        elif holds == current:
            st = "in sync" if state is not None else "in sync (not read this pass)"
        else:
            st = "behind: holds an older key"
        out.append(
            f'<tr data-target="{_t(t.id)}"><td><code>{_t(t.id)}</code></td><td><code>{_t(holds or "-")}</code></td>'
            f"<td>{_when(since, now) if since else '-'}</td><td>{st}</td></tr>"
        )
    out.append("</tbody></table>")
    if policy.reload:
        out.append(_reloads(pr, now))
    errors = [pr.error] if pr.error else []
    errors += [f"{r.action.kind}: {r.error}" for r in pr.results if not r.ok and r.error]
    if errors:
        out.append('<ul class="err">' + "".join(f"<li>{_t(e)}</li>" for e in errors) + "</ul>")
    if notes:
        out.append("<ul>" + "".join(f"<li>{_t(n.lstrip('! '))}</li>" for n in notes) + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def _reloads(pr: PolicyReport, now: datetime) -> str:
    """The policy's reload units: pending, waiting, rolling since, done since, failed, unknown."""
    if pr.reloads is None:
        return '<p class="muted">reload targets: not observed in this pass (no rotation under way)</p>'
    rows = [
        '<table class="reloads"><thead><tr><th>reload</th><th>for key</th><th>state</th><th>since</th>'
        "<th>detail</th></tr></thead><tbody>"
    ]
    for r in pr.reloads:
        css = {"done": "ok", "failed": "err", "unknown": "err"}.get(r.state, "")
        rows.append(
            f'<tr data-reload="{_t(r.id)}"><td><code>{_t(r.id)}</code></td><td><code>{_t(r.key_id)}</code></td>'
            f'<td class="{css}">{_t(r.state)}</td><td>{_when(r.since, now) if r.since else "-"}</td>'
            f"<td>{_t(r.detail)}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def render(report: PassReport | None, config: Config, now: datetime, *, refresh: int | None = None) -> str:
    """The page for ``report`` (``None``: no pass has finished yet). Pure: no I/O, ``now`` passed in.

    ``refresh`` adds a ``<meta http-equiv="refresh">`` (the daemon's copy reloads itself; no script needed).
    """
    head = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
    ]
    if refresh:
        head.append(f'<meta http-equiv="refresh" content="{int(refresh)}">')
    head.append(f"<title>rotator status</title><style>{_CSS}</style></head><body>")
    parts = head
    if report is None:
        parts.append("<header><h1>rotator</h1><p>no pass has finished yet</p></header><main></main></body></html>")
        return "\n".join(parts)
    result = "ok" if report.ok else "failed"
    counts = report.counts()
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no changes"
    what = "read (a dry run: nothing changed)" if report.dry_run else "last pass"
    parts.append(
        f"<header><h1>rotator: {len(report.policies)} policies</h1>"
        f"<p>{what} {_when(report.finished, now)}: <strong>{result}</strong> "
        f"({_t(summary)}; {(report.finished - report.started).total_seconds():.1f}s)"
        f"{'' if report.issuer_ok else ' · issuer unavailable: ' + _t(report.error or '')}"
        f" · page rendered {_t(now.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p></header><main>"
        '<p class="muted">Timelines: one bar per key the issuer lists for the policy, issued to expires; '
        "* the current key, with the targets that hold it; orange: due; green: the grace window; red: now.</p>"
    )
    skew = config.clock_skew
    names = set(config.names())
    for pr in report.policies:
        if pr.policy not in names:
            continue
        parts.append(_policy(config.policy(pr.policy), pr, report, now, skew))
    parts.append("</main></body></html>")
    return "\n".join(parts)
