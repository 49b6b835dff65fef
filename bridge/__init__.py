"""The Autoplay × Rasa bridge: consumes the event stream with autoplay-sdk 0.7.2 and answers
``GET /reply/{user_id}?query=`` with an LLM reply grounded in the user's recent activity."""

from bridge.app import create_app
from bridge.settings import BridgeSettings

__all__ = ["BridgeSettings", "create_app"]
