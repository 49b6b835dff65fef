"""The second venv really holds the stock autoplay-sdk 0.13.0, with the API the pull and push tests use."""

from __future__ import annotations

from tests.sdk013 import sdk013


def test_the_venv_holds_the_stock_0_13_0() -> None:
    out = sdk013.run(
        "import json, inspect, importlib.metadata as m\n"
        "from autoplay_sdk.admin import onboard_product\n"
        "from autoplay_sdk.admin.onboard import onboard_product as legacy\n"
        "from autoplay_sdk import WebhookReceiver\n"
        "print(json.dumps({'version': m.version('autoplay-sdk'),\n"
        "  'onboard': list(inspect.signature(onboard_product).parameters),\n"
        "  'legacy': list(inspect.signature(legacy).parameters)}))"
    )
    assert out["version"] == "0.13.0"
    assert out["onboard"][0] == "provider_project_id"
    assert "user_activity_provider" in out["onboard"] and "user_activity_provider" in out["legacy"]
