"""The stock autoplay-sdk 0.13.0, unmodified, against the receiver: onboarding by project id (and its
legacy onboarding), events to the returned ingest_url in PostHog's and Amplitude's shape, read back
over REST and with the official MCP client.

The PostHog events go through the Hog destination script shipped *in the 0.13.0 wheel*
(``providers/posthog/autoplay_destination.hog``), run by our Hog VM with the ``inputs`` the SDK's
``build_destination_body`` sets (``url`` = ingest_url, header ``x-posthog-secret``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.hog.hogdata import load_events
from tests.hog.hogvm import FetchRequest, response_from_http, run_script
from tests.pull.helpers import amplitude, live_activity
from tests.pull.test_mcp import mcp_session
from tests.sdk013 import sdk013

ONBOARD = """
import asyncio, json, os
from autoplay_sdk.admin import onboard_product
from autoplay_sdk.admin.connector_registration_http import ConnectorRegistrationHttpError
from autoplay_sdk.providers import AmplitudeProvider, PostHogProvider

FIELDS = ("product_id", "provider", "provider_project_id", "ingest_url", "ingest_secret",
          "ingest_auth", "mcp_url", "mcp_key", "mcp_auth", "owner_token")

async def main():
    provider = {"posthog": PostHogProvider(), "amplitude": AmplitudeProvider()}[os.environ["PROVIDER"]]
    try:
        r = await onboard_product(
            os.environ["PROJECT"], contact_email="you@yourcompany.com",
            user_activity_provider=provider, connector_url=os.environ["BASE"],
            owner_token=os.environ.get("OWNER") or None, print_operator_summary=True,
        )
    except ConnectorRegistrationHttpError as e:
        return {"error": type(e).__name__, "status": e.status_code}
    return {k: getattr(r, k) for k in FIELDS}

print(json.dumps(asyncio.run(main())))
"""

LEGACY = """
import asyncio, json, os
from autoplay_sdk.admin.onboard import onboard_product
from autoplay_sdk.admin.connector_registration_http import ConnectorRegistrationHttpError
from autoplay_sdk.providers import PostHogProvider

async def main():
    try:
        r = await onboard_product(
            os.environ["PRODUCT"], contact_email="you@yourcompany.com",
            connector_url=os.environ["BASE"], user_activity_provider=PostHogProvider(),
            force_reregister=os.environ.get("FORCE") == "1",
        )
    except ConnectorRegistrationHttpError as e:
        return {"error": type(e).__name__, "status": e.status_code}
    return {"product_id": r.product_id, "webhook_url": r.webhook_url, "stream_url": r.stream_url,
            "webhook_secret": r.webhook_secret, "unkey_key": r.unkey_key,
            "unkey_key_id": r.unkey_key_id, "connector_response": r.connector_response}

print(json.dumps(asyncio.run(main())))
"""


def onboard(base: str, project: str, provider: str = "posthog", owner: str = "") -> dict[str, Any]:
    return sdk013.run(ONBOARD, env={"BASE": base, "PROJECT": project, "PROVIDER": provider,
                                    "OWNER": owner})


def _hog_source() -> str:
    """The destination script as shipped in the 0.13.0 wheel (what its setup installs in PostHog)."""
    init = sdk013.run("import json, autoplay_sdk; print(json.dumps(autoplay_sdk.__file__))")
    return (Path(init).parent / "providers" / "posthog" / "autoplay_destination.hog").read_text()


def _send_through_the_sdk_destination(ingest_url: str, secret: str) -> list[dict[str, Any]]:
    """Every event of the fixture corpus through 0.13.0's Hog script, posted for real."""
    source = _hog_source()
    sent = []
    with httpx.Client(timeout=10) as http:

        def fetch(request: FetchRequest) -> Any:
            r = http.request(request.method, request.url, headers=request.headers, content=request.body)
            return response_from_http(r.status_code, r.text)

        for event in load_events():
            globals_ = event["globals"]
            props = globals_["event"]["properties"]
            # Ids in some paths, as real apps have them: they come back collapsed to :id.
            props["$current_url"] = props["$current_url"].replace("/projects?", "/projects/8821034?")
            globals_["inputs"] = {"url": ingest_url, "headers": {"x-posthog-secret": secret},
                                  "debug": False}
            execution = run_script(source, globals_, fetch=fetch)
            assert execution.error is None, (event["name"], execution.error)
            assert execution.request.url == ingest_url
            sent.append(globals_["event"])
    return sent


async def test_stock_onboard_product_against_receiver_serve(spawn_receiver: Any) -> None:
    rp = spawn_receiver()
    base = rp.base_url
    first = onboard(base, "81234")
    pid = first["product_id"]
    assert pid.startswith("prod_") and len(pid) > 20
    assert first["provider"] == "posthog" and first["provider_project_id"] == "81234"
    assert first["ingest_url"] == f"{base}/ingest/{pid}"
    assert first["mcp_url"] == f"{base}/mcp"
    assert first["owner_token"] and first["ingest_secret"] and first["mcp_key"]
    assert first["mcp_auth"] == "Authorization: Bearer <mcp_key>"

    sent = _send_through_the_sdk_destination(first["ingest_url"], first["ingest_secret"])
    user = "user_8842"
    mine = [e for e in sent if e.get("distinct_id") == user]
    assert len(mine) >= 3
    r = live_activity(base, pid, user, first["mcp_key"], limit=100)
    assert r.status_code == 200, r.text
    actions = r.json()["actions"]
    assert actions and all(a["user_id"] == user for a in actions)
    assert [a["timestamp_start"] for a in actions] == sorted(a["timestamp_start"] for a in actions)
    assert all("?" not in a["canonical_url"] and "#" not in a["canonical_url"] for a in actions)
    assert any(a["canonical_url"] == "https://app.acme.example/settings/profile" for a in actions)
    projects = [a for a in actions if "/projects" in a["raw_url"]]
    assert projects and all("/projects/8821034?" in a["raw_url"] for a in projects)
    assert {a["canonical_url"] for a in projects} == {"https://app.acme.example/projects/:id"}

    async with mcp_session(first["mcp_url"], first["mcp_key"]) as s:
        tool = await s.call_tool("get_live_user_activity", {"user_id": user, "limit": 100})
    assert tool.structured_content["actions"] == actions

    # The same project again: 403 without the owner token ...
    again = onboard(base, "81234")
    assert again == {"error": "ConnectorRegistrationHttpError", "status": 403}
    # ... and with it, the same product with every credential rotated (no new owner token).
    rotated = onboard(base, "81234", owner=first["owner_token"])
    assert rotated["product_id"] == pid and rotated["owner_token"] is None
    assert rotated["mcp_key"] != first["mcp_key"]
    assert rotated["ingest_secret"] != first["ingest_secret"]
    for key in (rotated["mcp_key"], first["mcp_key"]):  # the old key keeps working for the grace
        assert live_activity(base, pid, user, key).status_code == 200
    assert onboard(base, "81234", owner="rot_wrong") == {"error": "ConnectorRegistrationHttpError",
                                                         "status": 403}


async def test_stock_onboarding_for_amplitude_then_amplitude_events(receiver: Any) -> None:
    base = receiver.base_url
    reg = onboard(base, "554433", provider="amplitude")
    assert reg["provider"] == "amplitude"
    assert reg["ingest_auth"] == "Authorization: Bearer <ingest_secret>"
    events = [
        amplitude("$pageview", user="amp-user", session=-1, device="dev-1",
                  url="https://app.example.com/boards/8821034/views/table?x=1", ts_ms=1_700_000_000_000),
        amplitude("$autocapture", user="amp-user", session=-1, device="dev-1", text="Add view",
                  url="https://app.example.com/boards/8821034/views/table", ts_ms=1_700_000_001_000),
    ]
    # What Amplitude's Event Streaming destination sends: Authorization = "Bearer " + ingest_secret.
    r = httpx.post(reg["ingest_url"], json={"events": events},
                   headers={"Authorization": f"Bearer {reg['ingest_secret']}"}, timeout=10)
    assert r.status_code == 200 and r.json()["stored"] == 2, r.text
    rest = live_activity(base, reg["product_id"], "amp-user", reg["mcp_key"])
    assert rest.status_code == 200
    actions = rest.json()["actions"]
    # Amplitude's "time" is the action time, however old: the window is on receipt.
    assert [(a["type"], a["title"], a["canonical_url"], a["session_id"]) for a in actions] == [
        ("pageview", "Page Load: Table", "https://app.example.com/boards/:id/views/table", "dev-1"),
        ("click", "Click Add view button", "https://app.example.com/boards/:id/views/table", "dev-1"),
    ]
    async with mcp_session(reg["mcp_url"], reg["mcp_key"]) as s:
        tool = await s.call_tool("get_live_user_activity", {"user_id": "amp-user"})
    assert tool.structured_content["actions"] == actions


async def test_the_legacy_onboarding_of_0_13_0(receiver: Any) -> None:
    base = receiver.base_url
    env = {"BASE": base, "PRODUCT": "legacy-acme"}
    res = sdk013.run(LEGACY, env=env)
    assert res["webhook_url"] == f"{base}/webhook/legacy-acme"
    assert res["stream_url"] == f"{base}/stream/legacy-acme"
    assert res["unkey_key"] and res["unkey_key_id"] and res["webhook_secret"]
    extra = res["connector_response"]
    assert extra["ingest_url"] == f"{base}/ingest/legacy-acme" and extra["mcp_key"].startswith("rmk_")
    assert sdk013.run(LEGACY, env=env) == {"error": "ConnectorRegistrationHttpError", "status": 409}
    forced = sdk013.run(LEGACY, env={**env, "FORCE": "1"})
    assert forced["connector_response"]["mcp_key"] != extra["mcp_key"]

    # Every path works for a product registered this way: webhook and ingest in, REST and MCP out.
    body = {"event": "$pageview", "distinct_id": "leg-user", "session_id": "s1",
            "current_url": "https://app.example.com/orders/12345"}
    for url in (forced["webhook_url"], f"{base}/ingest/legacy-acme"):
        r = httpx.post(url, json=body | {"timestamp": "2026-12-04T10:00:00Z" if "webhook" in url else
                                         "2026-12-04T10:00:01Z"},
                       headers={"x-posthog-secret": forced["webhook_secret"]}, timeout=10)
        assert r.status_code == 200, r.text
    key = forced["connector_response"]["mcp_key"]
    actions = live_activity(base, "legacy-acme", "leg-user", key).json()["actions"]
    assert len(actions) == 2 and actions[0]["canonical_url"] == "https://app.example.com/orders/:id"
    async with mcp_session(f"{base}/mcp", key) as s:
        tool = await s.call_tool("get_live_user_activity", {"user_id": "leg-user"})
    assert tool.structured_content["actions"] == actions
