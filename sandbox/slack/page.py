"""The emulator's page: a channel's messages with their blocks, buttons that
click as the chosen user, the modals open for that user, and what the app
answered to each interaction. It reloads itself when the workspace changes."""

from __future__ import annotations

import html
import re
from typing import Any

from .workspace import Workspace

STYLE = """
body{font-family:sans-serif;max-width:52rem;margin:1rem auto;color:#1d1c1d}
.msg{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:.8rem 0}
.ctx{color:#616061;font-size:.85rem}.fields{display:grid;grid-template-columns:1fr 1fr;gap:.3rem}
button{margin-right:.4rem;padding:.3rem .9rem}.primary{background:#007a5a;color:#fff}
.danger{background:#e01e5a;color:#fff}.modal{border:2px solid #1264a3;padding:1rem;margin:1rem 0}
.edited{color:#888;font-size:.75rem}
"""

SCRIPT = """
let seen = %d;
setInterval(async () => {
  try {
    const r = await fetch('/ui/version');
    const v = (await r.json()).version;
    if (v !== seen) { location.reload(); }
  } catch (e) {}
}, 300);
"""


EMOJI = {"white_check_mark": "✅", "no_entry": "⛔", "grey_question": "❔"}


def _mrkdwn(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r":([a-z_]+):", lambda m: EMOJI.get(m.group(1), m.group(0)), escaped)
    escaped = re.sub(r"\*([^*\n]+)\*", r"<b>\1</b>", escaped)
    escaped = re.sub(r"`([^`\n]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"&lt;(https?://[^|&]+)\|([^&]+)&gt;", r'<a href="\1">\2</a>', escaped)
    return escaped.replace("\n", "<br>")


def _text(obj: dict[str, Any] | None) -> str:
    if not obj:
        return ""
    return (
        _mrkdwn(obj.get("text", ""))
        if obj.get("type") == "mrkdwn"
        else html.escape(obj.get("text", ""))
    )


def _block(block: dict[str, Any], hidden: str) -> str:
    kind = block.get("type")
    if kind == "header":
        return f"<h3>{_text(block.get('text'))}</h3>"
    if kind == "divider":
        return "<hr>"
    if kind == "context":
        return f'<div class="ctx">{" ".join(_text(e) for e in block.get("elements", []))}</div>'
    if kind == "section":
        out = f"<p>{_text(block.get('text'))}</p>" if block.get("text") else ""
        if block.get("fields"):
            cells = "".join(f"<div>{_text(f)}</div>" for f in block["fields"])
            out += f'<div class="fields">{cells}</div>'
        return out
    if kind == "actions":
        buttons = []
        for element in block.get("elements", []):
            if element.get("type") != "button":
                continue
            if element.get("url"):
                buttons.append(
                    f'<a href="{html.escape(element["url"])}">{_text(element.get("text"))}</a>'
                )
                continue
            style = html.escape(element.get("style") or "")
            buttons.append(
                f'<form method="post" action="/ui/click" style="display:inline">{hidden}'
                f'<input type="hidden" name="action_id" '
                f'value="{html.escape(element.get("action_id", ""))}">'
                f'<button class="{style}" type="submit">{_text(element.get("text"))}</button>'
                "</form>"
            )
        return f"<div>{''.join(buttons)}</div>"
    return f'<div class="ctx">[{html.escape(str(kind))} block]</div>'


def _modal(space: Workspace, view_id: str, user: str, channel: str) -> str:
    view = space.views[view_id].view
    inputs = []
    for block in view.get("blocks", []):
        element = block.get("element") or {}
        if block.get("type") == "input" and element.get("action_id"):
            inputs.append(
                f"<label>{_text(block.get('label'))}<br><textarea "
                f'name="v:{html.escape(element["action_id"])}" rows="3" cols="60"></textarea>'
                "</label><br>"
            )
        else:
            inputs.append(_block(block, ""))
    return (
        f'<div class="modal"><h3>{_text(view.get("title"))}</h3>'
        f'<form method="post" action="/ui/submit"><input type="hidden" name="as" '
        f'value="{html.escape(user)}"><input type="hidden" name="channel" '
        f'value="{html.escape(channel)}"><input type="hidden" name="view_id" '
        f'value="{html.escape(view_id)}">{"".join(inputs)}'
        f'<button type="submit">{_text(view.get("submit")) or "Submit"}</button></form></div>'
    )


def render(space: Workspace, channel: str, user: str) -> str:
    people = "".join(
        f'<option value="{u.id}"{" selected" if u.id == user else ""}>{html.escape(u.name)} '
        f"({u.id})</option>"
        for u in space.users.values()
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>#{space.channels[channel]}"
        f"</title><style>{STYLE}</style></head><body>",
        f"<h2>#{html.escape(space.channels[channel])} <small>({space.team_domain}, "
        f"{space.team_id})</small></h2>",
        f'<form method="get" action="/"><input type="hidden" name="channel" value="{channel}">'
        f'You are <select name="as" onchange="this.form.submit()">{people}</select></form>',
    ]
    for view_id, opened in space.views.items():
        if opened.user == user:
            parts.append(_modal(space, view_id, user, channel))
    for message in space.messages.get(channel, []):
        hidden = (
            f'<input type="hidden" name="as" value="{html.escape(user)}">'
            f'<input type="hidden" name="channel" value="{html.escape(channel)}">'
            f'<input type="hidden" name="ts" value="{html.escape(message.ts)}">'
        )
        body = (
            "".join(_block(b, hidden) for b in message.blocks) or f"<p>{_mrkdwn(message.text)}</p>"
        )
        edited = ' <span class="edited">(edited)</span>' if message.edited else ""
        parts.append(f'<div class="msg" data-ts="{message.ts}">{body}{edited}</div>')
    if space.deliveries:
        last = space.deliveries[-5:]
        rows = "".join(
            f"<li>{html.escape(d['type'])} by {html.escape(d['user'])}: "
            f"{html.escape(d['outcome'])}</li>"
            for d in last
        )
        parts.append(f'<div class="ctx">Interactions:<ul id="deliveries">{rows}</ul></div>')
    parts.append(f"<script>{SCRIPT % space.version}</script></body></html>")
    return "".join(parts)
