"""Record real posthog-js request bodies as test fixtures for the capture API.

    .venv/bin/python tests/browser/record_posthog_js_requests.py [OUT_DIR]

Drives the demo app in headless Debian chromium against a fake capture host (Playwright routing,
nothing listens) once per transport variant, and writes every request posthog-js made to
``tests/data/posthog_js_requests/`` (default): ``<name>.body`` (raw bytes as sent),
``<name>.json`` (method, path, query, headers, what it decodes to) and, for requests with a
body, ``<name>.decoded.json`` (the JSON document inside, encodings undone, for reading).
``index.json`` lists them all.
Re-run after bumping posthog-js in ``posthog/demo/package.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from browser.browser import (  # noqa: E402
    CHROMIUM_ARGS,
    TEST_POSTHOG_OPTIONS,
    FakeCaptureHost,
    RecordedRequest,
    chain_text,
    chromium_path,
    decode_capture_body,
    load_serve_module,
    open_demo,
    unwrap_capture_body,
    wait_until,
)

REPO = HERE.parents[1]
DEFAULT_OUT = REPO / "tests" / "data" / "posthog_js_requests"
TOKEN = "phc_fixture_capture_token"

# name -> (posthog.init options on top of the demo's, what the run does)
VARIANTS: dict[str, dict[str, Any]] = {
    "gzip": {},  # the demo's defaults: request_batching false, compression left to posthog-js
    "gzip-batched": {"request_batching": True},  # posthog-js's own default: a queue flushed ~3 s
    "json": {"disable_compression": True},
}


async def _drive(page: Any, fake: FakeCaptureHost, variant: str) -> None:
    """Pageview, identify, the Invite member click, then one event forced through sendBeacon."""
    await page.click("#nav-team")
    await page.wait_for_function("window.demo && window.demo.posthog === true")
    await page.click("text=Invite member")
    await page.select_option("select[name=role]", "admin")
    await page.evaluate(
        "posthog.capture('beacon_test', {note: 'sent with sendBeacon'}, {transport: 'sendBeacon'})"
    )
    def got(name: str) -> bool:
        return any(e.get("event") == name for e in fake.events)

    def clicked(text: str) -> bool:
        return any(e.get("event") == "$autocapture"
                   and chain_text((e.get("properties") or {}).get("$elements_chain", "")) == text
                   for e in fake.events)

    def changed_role() -> bool:
        return any(e.get("event") == "$autocapture"
                   and (e.get("properties") or {}).get("$event_type") == "change"
                   for e in fake.events)

    timeout = 15.0 if variant == "gzip-batched" else 8.0
    await wait_until(
        lambda: got("beacon_test") and got("$identify") and clicked("Invite member")
        and changed_role(),
        timeout=timeout, what=f"{variant}: events",
    )


def _kind(rec: RecordedRequest) -> str:
    if rec.is_capture:
        names = sorted({str(e.get("event")).lstrip("$") for e in rec.events}) or ["none"]
        kind = "-".join(names)
    else:
        kind = rec.path.strip("/").split("/")[0] or "root"
    return kind + ("-beacon" if rec.resource_type == "ping" else "")


def _describe(rec: RecordedRequest) -> dict[str, Any]:
    body = rec.body or b""
    info: dict[str, Any] = {
        "method": rec.method,
        "path": rec.path,
        "query": rec.query,
        "resource_type": rec.resource_type,
        "headers": dict(sorted(rec.headers.items())),
        "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "gzip_magic": body[:2] == b"\x1f\x8b",
    }
    if rec.is_capture:
        ctype = rec.headers.get("content-type", "")
        events = decode_capture_body(body, ctype, rec.query)
        info["events"] = [e.get("event") for e in events]
        info["event_uuids"] = [e.get("uuid") for e in events]
        info["distinct_ids"] = [(e.get("properties") or {}).get("distinct_id") for e in events]
        top = unwrap_capture_body(body, ctype, rec.query)
        form = "array" if isinstance(top, list) else "object{" + ",".join(sorted(top)) + "}"
        if "x-www-form-urlencoded" in ctype:
            form = f"form-urlencoded data=<base64 of {form}>"
        elif info["gzip_magic"]:
            form = f"gzip of {form}"
        info["body_form"] = form
    return info


async def record(out: Path) -> list[dict[str, Any]]:
    from playwright.async_api import async_playwright

    serve = load_serve_module()
    serve.check_assets()
    version = json.loads((serve.NODE_MODULES / "posthog-js" / "package.json").read_text())[
        "version"
    ]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    index: list[dict[str, Any]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            for variant, extra in VARIANTS.items():
                fake = FakeCaptureHost(token=TOKEN)
                options = {**TEST_POSTHOG_OPTIONS, **extra}
                app = serve.DemoServer(serve.DemoConfig(
                    api_host=fake.api_host, token=TOKEN, product_id="prod_fixture",
                    posthog_options=options)).start()
                try:
                    ctx, page = await open_demo(browser, app.url, "user-fixture",
                                                "fixture@example.com", fake)
                    try:
                        await _drive(page, fake, variant)
                    finally:
                        await ctx.close()
                finally:
                    app.close()
                assert not fake.errors, fake.errors
                for n, rec in enumerate(fake.requests, 1):
                    name = f"{variant}-{n:02d}-{rec.method.lower()}-{_kind(rec)}"
                    meta = {"name": name, "variant": variant, "posthog_js_version": version,
                            "init_options": options, **_describe(rec)}
                    (out / f"{name}.body").write_bytes(rec.body or b"")
                    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
                    if rec.body:
                        decoded = unwrap_capture_body(rec.body or b"",
                                                      rec.headers.get("content-type", ""),
                                                      rec.query)
                        (out / f"{name}.decoded.json").write_text(
                            json.dumps(decoded, indent=2, sort_keys=True) + "\n")
                    index.append({k: meta.get(k) for k in (
                        "name", "variant", "method", "path", "query", "resource_type",
                        "body_bytes", "gzip_magic", "body_form", "events")} | {
                        "content_type": rec.headers.get("content-type")})
        finally:
            await browser.close()
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    if chromium_path() is None:
        print("chromium is missing: run scripts/browser-deps.sh", file=sys.stderr)
        return 2
    index = asyncio.run(record(out))
    for row in index:
        target = row["path"] + ("?" + row["query"] if row["query"] else "")
        print(f"{row['name']:42} {row['method']:4} {target:<40} {row['content_type']!s:34} "
              f"{row['body_bytes']:6} {row.get('body_form') or ''} {row.get('events') or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
