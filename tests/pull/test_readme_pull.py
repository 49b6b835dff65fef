"""The README's pull example (REST live activity, and the MCP client configuration), run as shown.

The README names the product ``my-app`` and the receiver ``http://127.0.0.1:8000``; here they are a
fresh product registered the 0.7.2 way (it gets an MCP key too) and the live receiver.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from typing import Any

import httpx

from tests.conftest import register_product
from tests.docblocks import one_block
from tests.pull.helpers import hog
from tests.pull.test_mcp import mcp_session

HERE = "http://127.0.0.1:8000"


def _seed(receiver: Any) -> tuple[Any, str]:
    product = register_product(receiver.base_url, "my-app-" + uuid.uuid4().hex[:6])
    session = str(uuid.uuid4())
    for event, text in (("$pageview", ""), ("$autocapture", "Invite member")):
        r = httpx.post(
            product.webhook_url, timeout=10,
            json=hog(event, user="user-1", session=session, url="https://app.example.com/team",
                     text=text),
            headers={"x-posthog-secret": product.webhook_secret},
        )
        assert r.status_code == 200, r.text
    return product, session


def test_the_readme_rest_example_returns_the_users_clicks(receiver: Any) -> None:
    product, _ = _seed(receiver)
    block = one_block("README.md", "live-activity?limit=20", "bash")
    script = block.text.replace(HERE, receiver.base_url).replace("/my-app/", f"/{product.product_id}/")
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=30,
        env={**os.environ, "MCP_KEY": product.raw["mcp_key"]},
    )
    assert proc.returncode == 0, proc.stderr
    actions = json.loads(proc.stdout)["actions"]
    assert [a["title"] for a in actions][-1] == "Click Invite member button", actions
    # The same command with the stream key instead of the MCP key is refused.
    proc = subprocess.run(
        ["bash", "-c", script.replace("curl -s", "curl -s -o /dev/null -w '%{http_code}'")],
        capture_output=True, text=True, timeout=30, env={**os.environ, "MCP_KEY": product.stream_key},
    )
    assert proc.stdout.strip() == "401"


async def test_the_readme_mcp_configuration_reaches_the_tool(receiver: Any) -> None:
    product, _ = _seed(receiver)
    config = json.loads(one_block("README.md", "mcpServers", "json").text)["mcpServers"]["autoplay"]
    url = config["url"].replace(HERE, receiver.base_url)
    header = config["headers"]["Authorization"].replace("<mcp_key>", product.raw["mcp_key"])
    async with mcp_session(url, None, Authorization=header) as session:
        result = await session.call_tool("get_live_user_activity", {"user_id": "user-1"})
    assert not result.is_error, result
    assert "Invite member" in result.content[0].text
