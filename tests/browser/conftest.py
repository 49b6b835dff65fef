"""Fixtures for the browser tests live in ``browser.py`` (documented there)."""

from .browser import chromium, demo_app_factory, fake_capture  # noqa: F401
