"""The README's push example, run as shown: the registration answers the generated secret once,
and an event posted afterwards arrives at the URL, signed with that secret."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable

from tests.conftest import LiveReceiver, Product
from tests.docblocks import one_block
from tests.push.endpoint import serve_endpoint
from tests.push.helpers import FAST, assert_signed, post_events

HERE = "http://127.0.0.1:8000"
SHOWN_URL = "https://bot.example.com/autoplay"


def test_the_readme_push_registration_delivers_signed_events(
    receiver_factory: Callable[..., LiveReceiver],
) -> None:
    live = receiver_factory(**FAST)
    product_id = "my-app-" + uuid.uuid4().hex[:6]
    with serve_endpoint() as endpoint:
        script = (one_block("README.md", '"mode": "push"', "bash").text
                  .replace(HERE, live.base_url).replace(SHOWN_URL, endpoint.url)
                  .replace('"my-app"', f'"{product_id}"'))
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                              text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["push"]["url"] == endpoint.url
        secret = out["push"]["secret"]
        assert secret.startswith("whsec_")
        product = Product(product_id, out["webhook_secret"], out["stream_key"], out["unkey_key_id"],
                          out["capture_token"], live.base_url)
        [position] = post_events(product, product_id, range(1))
        got = endpoint.wait_for(lambda rs: [r for r in rs if r.position == position],
                                what="the pushed event")
        assert_signed(got, secret)
