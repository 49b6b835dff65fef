"""The MCP server at /mcp, driven by the official MCP Python client over streamable HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.pull.helpers import Registered, amplitude, hog, register_project

APP = "https://app.example.com"


@asynccontextmanager
async def mcp_session(url: str, key: str | None, **headers: str) -> AsyncIterator[ClientSession]:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with (
        httpx2.AsyncClient(headers=headers, timeout=20) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _clicks(p: Registered, user: str) -> None:
    session = str(uuid.uuid4())
    now = time.time()
    assert p.post({"batch": [
        hog("$pageview", user=user, session=session, url=f"{APP}/team/42", ts=now - 5),
        hog("$autocapture", user=user, session=session, url=f"{APP}/team/42", text="Invite member",
            ts=now - 4),
    ]}).status_code == 200


async def test_the_official_client_lists_and_calls_the_tools(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    _clicks(p, "alice")
    async with mcp_session(p.mcp_url, p.mcp_key) as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == {"get_live_user_activity", "get_user_sessions", "find_users_who"}
        for tool in tools.values():
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
            assert tool.annotations.destructive_hint is False
            assert "Call it" in (tool.description or "")
        live = tools["get_live_user_activity"]
        assert live.input_schema["required"] == ["user_id"]
        assert live.input_schema["properties"]["user_id"]["type"] == "string"
        assert live.input_schema["properties"]["limit"]["anyOf"][0]["maximum"] == 100
        assert live.output_schema is not None

        result = await s.call_tool("get_live_user_activity", {"user_id": "alice"})
    assert not result.is_error
    rest = p.live("alice").json()
    # The same window as the REST read, as structured content ...
    assert result.structured_content == rest
    assert [a["title"] for a in rest["actions"]] == ["Page Load: Team", "Click Invite member button"]
    # ... and as text a model reads: numbered, oldest first, the current page last.
    [content] = result.content
    lines = content.text.splitlines()
    assert lines[0].startswith("Recent in-app activity of user 'alice', last 30 minutes")
    assert lines[1].startswith("1. ") and "User landed on the Team page" in lines[1]
    assert lines[2].startswith("2. ") and "User clicked Invite member button on the team page" in lines[2]
    assert lines[-1] == f"Current page (the latest action's): {APP}/team/:id"


async def test_sessions_and_find_users(receiver: Any) -> None:
    p = register_project(receiver.base_url, "amplitude")
    now_ms = int(time.time() * 1000)
    events = [
        amplitude("$pageview", user="u1", session=111, url=f"{APP}/billing", ts_ms=now_ms - 9000),
        amplitude("$autocapture", user="u1", session=111, url=f"{APP}/billing", text="Upgrade",
                  ts_ms=now_ms - 8000),
        amplitude("$pageview", user="u1", session=222, url=f"{APP}/team", ts_ms=now_ms - 5000),
        amplitude("$autocapture", user="u2", session=333, url=f"{APP}/billing", text="Upgrade now",
                  ts_ms=now_ms - 4000),
        amplitude("$autocapture", user="u3", session=444, url=f"{APP}/team", text="Upgrade",
                  ts_ms=now_ms - 3000),
    ]
    assert p.post({"events": events}, bearer=True).json()["stored"] == 5
    async with mcp_session(p.mcp_url, p.mcp_key) as s:
        sessions = await s.call_tool("get_user_sessions", {"user_id": "u1"})
        found = await s.call_tool(
            "find_users_who", {"action": "click", "text": "upgrade", "page": "billing"}
        )
        nobody = await s.call_tool("find_users_who", {"text": "100%_literal"})
    assert not sessions.is_error
    got = sessions.structured_content["sessions"]
    assert [(x["session_id"], x["pages"], x["actions"]) for x in got] == [
        ("222", ["/team"], 1), ("111", ["/billing"], 2)]
    assert "/billing" in sessions.content[0].text
    assert [u["user_id"] for u in found.structured_content["users"]] == ["u2", "u1"]
    assert "u2: 1 matching actions" in found.content[0].text
    assert nobody.structured_content["users"] == []  # % and _ match themselves, not anything


async def test_bad_arguments_are_tool_errors_never_5xx(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    bad = [
        ("get_live_user_activity", {}, "user_id"),
        ("get_live_user_activity", {"user_id": 42}, "valid string"),
        ("get_live_user_activity", {"user_id": "u", "limit": 10**9}, "less than or equal to 100"),
        ("get_live_user_activity", {"user_id": "u", "limit": "lots"}, "valid integer"),
        ("get_live_user_activity", {"user_id": "u", "since_seconds": 10**6}, "1800"),
        ("get_live_user_activity", {"user_id": "\x01"}, "control characters"),
        ("get_live_user_activity", {"user_id": ["a"]}, "valid string"),
        ("get_user_sessions", {"user_id": "u", "days": 365}, "less than or equal to 30"),
        ("find_users_who", {}, "at least one of action, text or page"),
        ("find_users_who", {"action": "delete"}, "click"),
        ("find_users_who", {"text": "x" * 500}, "at most 200"),
    ]
    async with mcp_session(p.mcp_url, p.mcp_key) as s:
        for name, args, needle in bad:
            result = await s.call_tool(name, args)
            assert result.is_error, (name, args)
            assert needle in result.content[0].text, (name, args, result.content[0].text)


async def test_a_key_sees_its_own_product_only(receiver: Any) -> None:
    a = register_project(receiver.base_url)
    b = register_project(receiver.base_url)
    _clicks(a, "alice")
    _clicks(b, "bob")
    async with mcp_session(a.mcp_url, a.mcp_key) as s:
        other = await s.call_tool("get_live_user_activity", {"user_id": "bob", "product_id": b.product_id})
        bob = await s.call_tool("get_live_user_activity", {"user_id": "bob"})
        own = await s.call_tool("get_live_user_activity", {"user_id": "alice", "product_id": a.product_id})
        users = await s.call_tool("find_users_who", {"page": "team"})
    assert other.is_error and "this key reads product" in other.content[0].text
    assert bob.structured_content["actions"] == []
    assert [x["user_id"] for x in own.structured_content["actions"]] == ["alice", "alice"]
    assert [u["user_id"] for u in users.structured_content["users"]] == ["alice"]
    async with mcp_session(b.mcp_url, b.mcp_key) as s:
        alice = await s.call_tool("get_live_user_activity", {"user_id": "alice"})
        users = await s.call_tool("find_users_who", {"page": "team"})
    assert alice.structured_content["actions"] == []
    assert [u["user_id"] for u in users.structured_content["users"]] == ["bob"]


def _initialize(url: str, **headers: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}
    return httpx.post(url, json=body, timeout=10, headers={
        "Accept": "application/json, text/event-stream", **headers})


async def test_wrong_key_gets_nothing(receiver: Any) -> None:
    p = register_project(receiver.base_url)
    for headers in ({}, {"Authorization": "Bearer rmk_nope"}, {"Authorization": f"Bearer {p.ingest_secret}"}):
        r = _initialize(p.mcp_url, **headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["code"] == "unauthorized"
    with pytest.raises(Exception):  # noqa: B017 - the client surfaces the 401 its own way
        async with mcp_session(p.mcp_url, "rmk_nope"):
            pass
    assert _initialize(p.mcp_url, Authorization=f"Bearer {p.mcp_key}").status_code == 200


async def test_origin_is_validated_against_dns_rebinding(receiver_factory: Any) -> None:
    rcv = receiver_factory(mcp_allowed_origins="http://localhost:6274, https://inspector.example.com")
    p = register_project(rcv.base_url)
    auth = {"Authorization": f"Bearer {p.mcp_key}"}
    # A page on another name that resolves to this machine: same-origin by name, refused by Origin.
    for origin in (f"http://evil.example:{rcv.settings.port}", "null", "http://localhost:9999"):
        r = _initialize(p.mcp_url, Origin=origin, **auth)
        assert r.status_code == 403 and "Origin" in r.json()["detail"], origin
    for origin in ("http://localhost:6274", "https://inspector.example.com"):
        assert _initialize(p.mcp_url, Origin=origin, **auth).status_code == 200
    assert _initialize(p.mcp_url, **auth).status_code == 200  # servers send no Origin
    # No standing GET stream, no session to DELETE.
    for method in ("GET", "DELETE"):
        assert httpx.request(method, p.mcp_url, headers=auth, timeout=10).status_code == 405
    # No CORS: a browser cannot even preflight a cross-origin call.
    pre = httpx.options(p.mcp_url, headers={"Origin": "http://evil.example",
                                            "Access-Control-Request-Method": "POST"}, timeout=10)
    assert "access-control-allow-origin" not in pre.headers


async def test_tools_can_be_narrowed_and_bodies_are_capped(receiver_factory: Any) -> None:
    rcv = receiver_factory(mcp_tools="get_live_user_activity", max_body_bytes=4096)
    p = register_project(rcv.base_url)
    async with mcp_session(p.mcp_url, p.mcp_key) as s:
        assert [t.name for t in (await s.list_tools()).tools] == ["get_live_user_activity"]
        result = await s.call_tool("find_users_who", {"page": "x"})
        assert result.is_error
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x" * 5000}}
    r = httpx.post(p.mcp_url, json=big, timeout=10, headers={
        "Authorization": f"Bearer {p.mcp_key}", "Accept": "application/json, text/event-stream"})
    assert r.status_code == 413
