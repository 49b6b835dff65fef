"""Runs the bot's custom actions under rasa-sdk, inside the Python 3.10 Rasa venv.

rasa-sdk 3.6.2 (the version the action server image ships) cannot be installed on Python 3.11,
so the pytest process (3.11) runs this file with ``.venv-rasa/bin/python`` instead:

    BRIDGE_URL=http://127.0.0.1:PORT .venv-rasa/bin/python action_driver.py <rasa-bot dir>
    stdin:  {"cases": [ ... ]}
    stdout: {"results": [ ... ]}   (one result per case, same order)

Case kinds:
* ``{"kind": "webhook", "request": <Rasa's POST /webhook body>}`` — through rasa-sdk's
  ``ActionExecutor`` (the code path of the action server's /webhook); the result is the
  response body Rasa would receive.
* ``{"kind": "run", "action": name, "sender_id", "text", "metadata", "slots"}`` — the action's
  ``run()`` with a real ``Tracker`` and ``CollectingDispatcher``; the result is
  ``{"events": [...], "messages": [...]}``.

Standard library + rasa-sdk only: this file must stay importable on Python 3.10.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


async def _run_case(case: dict[str, Any], executor: Any) -> dict[str, Any]:
    from rasa_sdk import Tracker
    from rasa_sdk.executor import CollectingDispatcher

    if case["kind"] == "webhook":
        response = await executor.run(case["request"])
        return response if isinstance(response, dict) else {"response": response}

    action = executor.actions.get(case["action"])
    if action is None:
        return {"error": f"no action named {case['action']!r}"}
    latest = {"text": case.get("text", ""), "metadata": case.get("metadata")}
    tracker = Tracker(
        sender_id=case.get("sender_id", "sender"),
        slots=case.get("slots", {}),
        latest_message=latest,
        events=[],
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )
    dispatcher = CollectingDispatcher()
    events = await action(dispatcher, tracker, {})
    return {"events": events, "messages": dispatcher.messages}


async def _main(bot_dir: str) -> None:
    sys.path.insert(0, bot_dir)
    from rasa_sdk.executor import ActionExecutor

    executor = ActionExecutor()
    executor.register_package("actions")
    cases = json.load(sys.stdin)["cases"]
    results = [await _run_case(case, executor) for case in cases]
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
