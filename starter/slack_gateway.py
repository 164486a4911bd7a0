"""`modoru slack-gateway`: Slack's interactivity URL. A click on Approve or
Reject in an approval message arrives here, and everything in it is untrusted
until it has passed, in order:

1. Slack's request signature (`slack_sdk.signature.SignatureVerifier`: HMAC-SHA256
   with the app's signing secret over `v0:{timestamp}:{body}`, compared in
   constant time) and its timestamp (within five minutes of this clock);
2. the replay check: a signature, or a click's action (team, user, action time) or a
   modal's view id, seen before is refused (the set is bounded: entries older than
   the timestamp window are dropped, and at most `SEEN_LIMIT` are kept);
3. the identity: the Slack team and user map to one catalog identity
   (`identities[].slack`), or nothing is done;
4. the gate: the workflow the button names is asked for its gate, which must be
   that workflow's current run, one of modoru's change workflows on modoru's task
   queue, with the plan's digest (`starter/gate_check.py`, as for `modoru approve`),
   and the run, gate and digest must be the ones the button carries.

Only then does the gateway sign the decision, with its own key (an attestor's in
the catalog), recording `via: "slack"` and the Slack facts, and send it through the
workflow's update. It holds no person's key, and the workflow and the activities
check its signature against their own catalog: the gateway's word is a claim they
verify, not an authority. Reject opens a modal for the reason; its submission is
checked the same way. Every refusal and every verdict is written to the audit
file (JSONL) and the log."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from pydantic import ValidationError
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from runbook.attestation import SlackFacts, identity_for_slack
from runbook.catalog import Catalog
from runbook.decisions import DecisionPayload, GateView, SignedDecision
from runbook.models import ApprovalSignal, RejectSignal
from runbook.signatures import sign

from .slack_requests import (
    APPROVE,
    REASON_VIEW,
    REJECT,
    WINDOW_SECONDS,
    ButtonValue,
    Gates,
    Refused,
    SeenRequests,
    TemporalGates,
    reason_view,
)

__all__ = ["APPROVE", "REJECT", "Refused", "SeenRequests", "SlackGateway", "TemporalGates"]

log = logging.getLogger("modoru.slack_gateway")

ACK_SECONDS = 2.5  # Slack gives an app 3 s to answer; the decision goes on after that
VALIDITY = dt.timedelta(minutes=10)


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class SlackGateway:
    def __init__(
        self,
        *,
        signing_secret: str,
        catalog: Catalog,
        gates: Gates,
        attestor_key: bytes,
        slack: AsyncWebClient,
        audit_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not signing_secret:
            raise ValueError("the Slack gateway needs the app's signing secret")
        self.verifier = SignatureVerifier(signing_secret, clock=_Clock(clock))
        self.catalog, self.gates, self.slack = catalog, gates, slack
        self.attestor_key = attestor_key
        self.audit_path, self.clock = audit_path, clock
        self.seen = SeenRequests()
        self.audit: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task] = set()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/slack/interactions", self.interaction)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _audit(self, kind: str, outcome: str, reason: str, /, **facts: Any) -> None:
        entry = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            **facts,
            "event": kind,
            "outcome": outcome,
            "reason": reason,
        }
        self.audit.append(entry)
        del self.audit[:-1000]
        log.warning("slack %s %s: %s %s", kind, outcome, reason, facts)
        if self.audit_path is not None:
            with self.audit_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    # -- checks 1 and 2: Slack's signature, the timestamp, replays ---------------------------

    def _verified(self, body: bytes, timestamp: str | None, signature: str | None) -> None:
        if not timestamp or not timestamp.isdigit():
            raise Refused("no readable X-Slack-Request-Timestamp", 401)
        if abs(self.clock() - int(timestamp)) > WINDOW_SECONDS:
            raise Refused("the request's timestamp is more than five minutes off (stale)", 401)
        if not signature or not self.verifier.is_valid(body, timestamp, signature):
            raise Refused("the request's Slack signature does not verify (forged)", 401)

    async def interaction(self, request: web.Request) -> web.Response:
        body = await request.read()
        facts: dict[str, Any] = {}
        try:
            self._verified(
                body,
                request.headers.get("X-Slack-Request-Timestamp"),
                request.headers.get("X-Slack-Signature"),
            )
            payload = self._payload(body)
            try:
                facts = self._facts(payload)
                actions = self._action_keys(payload)
            except (AttributeError, TypeError):
                raise Refused("the payload is not shaped as Slack interactions are", 400) from None
            keys = [f"sig:{request.headers['X-Slack-Signature']}", *actions]
            if not self.seen.first_time(keys, self.clock()):
                raise Refused("this request was seen before (a replay)", 409)
            work = asyncio.ensure_future(self._act(payload, facts, request.headers))
            self._tasks.add(work)
            work.add_done_callback(self._tasks.discard)
            done, _ = await asyncio.wait({work}, timeout=ACK_SECONDS)
            return web.Response(status=200) if work not in done else work.result()
        except Refused as exc:
            self._audit(facts.get("event", "request"), "refused", str(exc), **facts)
            return web.Response(status=exc.status, text=str(exc))

    @staticmethod
    def _payload(body: bytes) -> dict[str, Any]:
        try:
            (text,) = parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"]
            payload = json.loads(text)
        except (ValueError, KeyError, UnicodeDecodeError):
            raise Refused("the body is not a Slack interaction (payload=JSON)", 400) from None
        if not isinstance(payload, dict):
            raise Refused("the payload is not an object", 400)
        return payload

    @staticmethod
    def _facts(payload: dict[str, Any]) -> dict[str, Any]:
        team = (payload.get("team") or {}).get("id") or (payload.get("user") or {}).get("team_id")
        return {
            "event": str(payload.get("type", "")),
            "team": str(team or ""),
            "user": str((payload.get("user") or {}).get("id", "")),
        }

    @staticmethod
    def _action_keys(payload: dict[str, Any]) -> list[str]:
        user = (payload.get("user") or {}).get("id", "")
        if payload.get("type") == "block_actions":
            return [f"action:{user}:{a.get('action_ts', '')}" for a in payload.get("actions", [])]
        return []  # a modal may be submitted again after a refusal; it is sent once (_submitted)

    # -- checks 3 and 4, then the decision -----------------------------------------------------

    async def _act(self, payload: dict[str, Any], facts: dict[str, Any], headers) -> web.Response:
        try:
            identity = identity_for_slack(self.catalog.identities, facts["team"], facts["user"])
            if identity is None:
                raise Refused(
                    f"Slack user {facts['user']} of {facts['team']} is no identity in the catalog"
                )
            facts["identity"] = identity.id
            if payload.get("type") == "block_actions":
                return await self._clicked(payload, facts)
            if payload.get("type") == "view_submission":
                ts = headers.get("X-Slack-Request-Timestamp", "")
                return await self._submitted(payload, facts, ts)
            raise Refused(f"interactions of type {payload.get('type')!r} are not modoru's")
        except Refused as exc:
            self._audit(facts.get("event", "request"), "refused", str(exc), **facts)
            return web.Response(status=exc.status, text=str(exc))
        except Exception as exc:  # noqa: BLE001 - told without the request's contents
            self._audit(facts["event"], "failed", f"{type(exc).__name__}", **facts)
            return web.Response(status=500)

    async def _checked_gate(self, raw: str, facts: dict[str, Any]) -> tuple[ButtonValue, GateView]:
        try:
            value = ButtonValue.model_validate_json(raw)
        except ValidationError:
            raise Refused("the button's value is not a modoru gate") from None
        facts["workflow_id"] = value.w
        gate = await self.gates.gate(value.w)
        if (gate.run_id, gate.gate, gate.digest) != (value.r, value.g, value.d):
            raise Refused(
                f"the message is for run {value.r[:12]}…, gate {value.g!r}, plan "
                f"{value.d[:12]}…; the gate open now is run {gate.run_id[:12]}…, gate "
                f"{gate.gate!r}, plan {gate.digest[:12]}… (closed, expired or replaced)"
            )
        return value, gate

    async def _clicked(self, payload: dict[str, Any], facts: dict[str, Any]) -> web.Response:
        actions = payload.get("actions") or []
        if len(actions) != 1 or actions[0].get("action_id") not in (APPROVE, REJECT):
            raise Refused("the click is not on a modoru Approve or Reject button")
        action = actions[0]
        value, gate = await self._checked_gate(str(action.get("value", "")), facts)
        if action["action_id"] == REJECT:
            await self.slack.views_open(
                trigger_id=str(payload.get("trigger_id", "")),
                view=reason_view(value.model_dump_json(), value.w),
            )
            self._audit("block_actions", "asked", "a reason for the rejection", **facts)
            return web.Response(status=200)
        slack = SlackFacts(team=facts["team"], user=facts["user"], action_ts=action["action_ts"])
        signal = ApprovalSignal(by=facts["identity"], comment="approved in Slack")
        return await self._send(gate, signal, slack, facts)

    async def _submitted(
        self, payload: dict[str, Any], facts: dict[str, Any], timestamp: str
    ) -> web.Response:
        view = payload.get("view") or {}
        if view.get("callback_id") != REASON_VIEW:
            raise Refused("the form is not modoru's rejection reason")
        _, gate = await self._checked_gate(str(view.get("private_metadata", "")), facts)
        values = (view.get("state") or {}).get("values") or {}
        reason = str(((values.get("reason") or {}).get("reason") or {}).get("value") or "").strip()
        if not reason:
            return web.json_response(
                {"response_action": "errors", "errors": {"reason": "Say why."}}
            )
        if not self.seen.first_time([f"view:{view.get('id', '')}"], self.clock()):
            raise Refused("this modal was submitted before (a replay)", 409)
        slack = SlackFacts(team=facts["team"], user=facts["user"], action_ts=timestamp)
        signal = RejectSignal(by=facts["identity"], reason=reason[:2000])
        return await self._send(gate, signal, slack, facts)

    async def _send(
        self,
        gate: GateView,
        signal: ApprovalSignal | RejectSignal,
        slack: SlackFacts,
        facts: dict[str, Any],
    ) -> web.Response:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        payload = DecisionPayload(
            workflow_id=gate.workflow_id,
            run_id=gate.run_id,
            gate=gate.gate,
            decision=signal.decision,
            plan=gate.digest,
            signer=signal.by,
            issued_at=now,
            expires_at=now + VALIDITY,
            nonce=uuid.uuid4().hex,
            note=signal.words,
            via="slack",
            slack=slack,
        )
        text = payload.text()
        signal.signed = SignedDecision(payload=text, signature=sign(text, self.attestor_key))
        signal.request_id = uuid.uuid4().hex
        verdict = await self.gates.decide(gate.workflow_id, signal)
        self._audit(
            signal.decision,
            "counted" if verdict.counted else "not counted",
            verdict.reason,
            **facts,
            gate=gate.gate,
        )
        return web.Response(status=200)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
