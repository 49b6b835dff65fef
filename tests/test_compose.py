"""docker-compose.yml parses and matches what the Rasa loop page promises (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.docblocks import one_block

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres": None, "receiver": 8000, "bridge": 8090, "action-server": 5055, "rasa": 5005}
# What the host (and so the network) may reach: the receiver (PostHog, browsers) and Rasa's
# socket channel (the chat widget). Everything else stays on the compose network.
PUBLISHED = {"receiver": 8000, "rasa": 5005}


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_every_service_with_port_and_healthcheck() -> None:
    services = load()["services"]
    assert set(services) == set(SERVICES)
    for name, port in SERVICES.items():
        assert "healthcheck" in services[name], name
        if name in PUBLISHED:
            assert f"{port}:{port}" in services[name]["ports"], name
        elif port is not None:
            assert str(port) in services[name]["expose"], name


def published(service: dict) -> list[str]:
    """Host-published ports, long or short syntax, without a 127.0.0.1 binding."""
    out = []
    for entry in service.get("ports", []):
        text = entry if isinstance(entry, str) else f"{entry.get('host_ip', '')}:{entry.get('published')}"
        if not text.startswith(("127.0.0.1:", "[::1]:")):
            out.append(text)
    return out


def test_only_the_receiver_and_the_widget_socket_are_published() -> None:
    """Issue 14, finding 6: the bridge (whose /reply spends LLM money and returns any user's
    activity) and the action server were published on every interface."""
    services = load()["services"]
    for name, service in services.items():
        if name in PUBLISHED:
            assert published(service) == [f"{PUBLISHED[name]}:{PUBLISHED[name]}"], name
        else:
            assert published(service) == [], (name, service.get("ports"))


def test_bridge_reply_needs_a_token_the_action_server_holds() -> None:
    services = load()["services"]
    for name in ("bridge", "action-server"):
        value = services[name]["environment"]["BRIDGE_REPLY_TOKEN"]
        assert value.startswith("${BRIDGE_REPLY_TOKEN:?"), (name, value)  # compose refuses to start without
    actions = (ROOT / "rasa-bot" / "actions" / "actions.py").read_text()
    assert "BRIDGE_REPLY_TOKEN" in actions and '"Authorization": f"Bearer {token}"' in actions


def test_rasa_api_needs_a_token_and_only_the_socket_channel_is_open() -> None:
    rasa = load()["services"]["rasa"]
    command = rasa["command"]
    assert "--auth-token" in command
    assert command[command.index("--auth-token") + 1].startswith("${RASA_AUTH_TOKEN:?")
    credentials_file = command[command.index("--credentials") + 1]
    channels = yaml.safe_load((ROOT / "rasa-bot" / credentials_file).read_text())
    assert set(channels) == {"socketio"}, channels
    # The healthcheck uses the unauthenticated root, so the token is in no container config.
    assert "/status" not in " ".join(rasa["healthcheck"]["test"])


def test_receiver_migrates_at_start_and_waits_for_postgres() -> None:
    services = load()["services"]
    receiver = services["receiver"]
    assert receiver["depends_on"]["postgres"]["condition"] == "service_healthy"
    dockerfile = (ROOT / "Dockerfile").read_text()
    # `receiver serve` applies migrations before it listens.
    assert 'CMD ["receiver", "serve"]' in dockerfile
    assert "@postgres:5432/" in receiver["environment"]["RECEIVER_DATABASE_URL"]
    assert services["action-server"]["environment"]["BRIDGE_URL"] == "http://bridge:8090"
    assert "endpoints.docker.yml" in services["rasa"]["command"]
    actions = (ROOT / "rasa-bot" / "Dockerfile.actions").read_text()
    assert "httpx==" in actions
    assert "python-socketio==5.8.0" in (ROOT / "rasa-bot" / "Dockerfile").read_text()


def test_no_secret_is_committed() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    # Secrets come from .env via ${VAR} substitution only.
    for key in ("POSTGRES_PASSWORD", "RECEIVER_ADMIN_TOKEN", "BRIDGE_REPLY_TOKEN"):
        for line in text.splitlines():
            if key + ":" in line:
                assert "${" in line, line
    example = (ROOT / ".env.example").read_text()
    for line in example.splitlines():
        if re.match(
            r"^(POSTGRES_PASSWORD|RECEIVER_ADMIN_TOKEN|BRIDGE_STREAM_TOKEN|BRIDGE_LLM_API_KEY|"
            r"BRIDGE_REPLY_TOKEN|RASA_AUTH_TOKEN)=", line
        ):
            assert line.endswith("="), line
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_the_docker_page_names_every_service_and_port() -> None:
    page = (ROOT / "docs" / "rasa-loop.md").read_text()
    for name, port in SERVICES.items():
        assert f"`{name}`" in page, name
        if port is not None:
            assert str(port) in page, port


def test_the_documented_compose_commands_name_real_services() -> None:
    """The page's Docker block cannot run here (no Docker engine): its commands are checked
    against the compose file instead, service by service."""
    block = one_block("docs/rasa-loop.md", "docker compose up", "bash")
    assert 'title="needs Docker"' in block.info
    services = set(load()["services"])
    commands = [line.split("#")[0].split() for line in block.text.splitlines()
                if line.startswith("docker compose")]
    assert len(commands) >= 4
    for words in commands:
        verb = words[2]
        args = [w for w in words[3:] if not w.startswith("-")]
        if verb in ("up",):
            assert set(args) <= services, words
        elif verb in ("exec", "run"):
            assert args[0] in services, words
    assert (ROOT / ".env.example").is_file()  # the block starts by copying it
