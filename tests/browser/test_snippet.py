"""The provider snippets (posthog/snippet) run under Node against a recording posthog stand-in.

The plain-JS variant is also exercised for real in the browser by every demo test (the demo app
initialises posthog-js through it); these check the React provider, which the demo cannot load,
and the edge cases of both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SNIPPET = Path(__file__).resolve().parents[2] / "posthog" / "snippet"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

FAKE_POSTHOG = """
function fakePosthog(state) {
  const calls = [];
  const ph = {
    calls,
    __loaded: false,
    _props: {$user_state: state ? state.user_state : 'anonymous'},
    _id: state ? state.distinct_id : 'anon-1',
    init(key, config) { calls.push(['init', key, config]); this.__loaded = true; config.loaded(this); },
    get_property(k) { return this._props[k]; },
    get_distinct_id() { return this._id; },
    reset() { calls.push(['reset']); this._id = 'anon-2'; this._props.$user_state = 'anonymous'; },
    identify(id, props) {
      calls.push(['identify', id, props]);
      this._id = id;
      this._props.$user_state = 'identified';
    },
    register(props) { calls.push(['register', props]); },
  };
  return ph;
}
"""


def _node(script: str, cwd: Path, *, module: bool = False) -> object:
    args = [NODE, "--input-type=module", "-e", script] if module else [NODE, "-e", script]
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _strip(calls: list) -> list:
    """Drop the config's function-valued ``loaded`` (JSON has no functions)."""
    return [[c[0], c[1], {k: v for k, v in c[2].items() if k != "loaded"}] if c[0] == "init" else c
            for c in calls]


def test_plain_js_init_does_step_1(tmp_path: Path):
    script = FAKE_POSTHOG + f"""
const snip = require({json.dumps(str(SNIPPET / "posthog-init.js"))});
const ph = fakePosthog();
snip.initAutoplayPostHog(ph, {{key: 'phc_abc', apiHost: 'http://127.0.0.1:8000/',
  userId: 42, email: 'a@example.com', productId: 'prod_1',
  options: {{request_batching: false, person_profiles: 'always'}}}});
const errors = [];
for (const bad of [{{key: 'phx_personal', apiHost: 'h'}}, {{key: 'phc_x'}}, {{apiHost: 'h'}}]) {{
  try {{ snip.initAutoplayPostHog(fakePosthog(), bad); errors.push(null); }}
  catch (e) {{ errors.push(e.message); }}
}}
console.log(JSON.stringify({{calls: ph.calls, errors}}));
"""
    out = _node(script, tmp_path)
    assert _strip(out["calls"]) == [
        # options add to Step 1's settings but cannot change them
        ["init", "phc_abc", {"api_host": "http://127.0.0.1:8000",
                             "person_profiles": "identified_only",
                             "session_idle_timeout_seconds": 120,
                             "request_batching": False}],
        ["identify", "42", {"email": "a@example.com", "product_id": "prod_1"}],
        ["register", {"email": "a@example.com"}],
    ]
    assert "personal key" in out["errors"][0]
    assert "apiHost is required" in out["errors"][1]
    assert "key is required" in out["errors"][2]


def test_plain_js_init_resets_a_different_identified_user(tmp_path: Path):
    script = FAKE_POSTHOG + f"""
const snip = require({json.dumps(str(SNIPPET / "posthog-init.js"))});
const same = fakePosthog({{user_state: 'identified', distinct_id: 'u-1'}});
snip.initAutoplayPostHog(same, {{key: 'phc_a', apiHost: 'h', userId: 'u-1', email: 'e@x.io'}});
const other = fakePosthog({{user_state: 'identified', distinct_id: 'u-1'}});
snip.initAutoplayPostHog(other, {{key: 'phc_a', apiHost: 'h', userId: 'u-2', email: 'f@x.io'}});
console.log(JSON.stringify({{same: same.calls.map(c => c[0]), other: other.calls.map(c => c[0])}}));
"""
    out = _node(script, tmp_path)
    assert out == {"same": ["init", "identify", "register"],
                   "other": ["init", "reset", "identify", "register"]}


def test_react_provider_does_step_1_with_a_configurable_host(tmp_path: Path):
    (tmp_path / "package.json").write_text('{"type": "module"}')
    shutil.copy(SNIPPET / "posthog-provider.js", tmp_path / "provider.js")
    react = tmp_path / "node_modules" / "react"
    react.mkdir(parents=True)
    (react / "package.json").write_text('{"name": "react", "type": "module", "main": "index.js"}')
    (react / "index.js").write_text("export function useEffect(fn) { fn(); }\n")
    ph = tmp_path / "node_modules" / "posthog-js"
    ph.mkdir(parents=True)
    (ph / "package.json").write_text('{"name": "posthog-js", "type": "module", "main": "index.js"}')
    (ph / "index.js").write_text(FAKE_POSTHOG + "export default fakePosthog();\n")
    script = """
globalThis.window = globalThis;  // the provider only runs in a browser
process.env.NEXT_PUBLIC_POSTHOG_HOST = 'https://receiver.internal.example';
process.env.NEXT_PUBLIC_POSTHOG_KEY = 'phc_capture_token';
const {default: PostHogProvider} = await import('./provider.js');
const {default: posthog} = await import('posthog-js');
const child = PostHogProvider({children: 'app', userId: 'user-9', email: 'n@example.com',
                               productId: 'prod_9'});
PostHogProvider({children: 'app', userId: 'user-9'});  // a re-render: no second init
console.log(JSON.stringify({child, calls: posthog.calls.map(
  c => c[0] === 'init' ? [c[0], c[1], Object.fromEntries(
    Object.entries(c[2]).filter(([k]) => k !== 'loaded'))] : c)}));
"""
    out = _node(script, tmp_path, module=True)
    assert out == {
        "child": "app",
        "calls": [
            ["init", "phc_capture_token", {"api_host": "https://receiver.internal.example",
                                           "person_profiles": "identified_only",
                                           "session_idle_timeout_seconds": 120}],
            ["identify", "user-9", {"email": "n@example.com", "product_id": "prod_9"}],
            ["register", {"email": "n@example.com"}],
        ],
    }
