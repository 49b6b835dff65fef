"""Postgres connection URIs as libpq writes them, multi-host ones included (pure functions).

``pg_autoctl show uri --formation default`` prints a URI such as
``postgres://node1:5432,node2:5432/receiver?target_session_attrs=read-write&sslmode=prefer``.
SQLAlchemy's URL parser cannot read the host list (it wants one ``host:port``), so nothing in
the receiver parses a database URL with it: asyncpg takes the URI as it is (it supports host
lists and ``target_session_attrs``), psql gets it with the password moved to ``PGPASSWORD``,
and Alembic is handed connections made by asyncpg (``migrations/env.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, quote, unquote, urlencode

SCHEMES = ("postgresql+asyncpg", "postgresql", "postgres")


class DsnError(ValueError):
    pass


@dataclass(frozen=True)
class Dsn:
    user: str | None
    password: str | None
    hosts: tuple[tuple[str, int | None], ...]  # as written; empty = libpq's default
    database: str | None
    query: tuple[tuple[str, str], ...]

    def render(self, *, with_password: bool = True) -> str:
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if with_password and self.password is not None:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        hosts = ",".join(_host(h) + (f":{p}" if p is not None else "") for h, p in self.hosts)
        path = "/" + quote(self.database, safe="") if self.database is not None else ""
        query = "?" + urlencode(self.query) if self.query else ""
        return f"postgresql://{auth}{hosts}{path}{query}"

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    def with_host(self, host: str, port: int | None) -> Dsn:
        """The same connection parameters aimed at one host (no session-attribute filter)."""
        query = tuple((k, v) for k, v in self.query if k != "target_session_attrs")
        return replace(self, hosts=((host, port),), query=query)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse(url: str) -> Dsn:
    """Split a ``postgres[ql][+asyncpg]://`` URI into its parts (host lists included)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise DsnError("a database URL must start with postgresql:// or postgres://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    if "?" in netloc:  # no path: postgres://host?sslmode=...
        netloc, _, query = netloc.partition("?")
    user = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user_part, has_pw, pw_part = auth.partition(":")
        user = unquote(user_part)
        password = unquote(pw_part) if has_pw else None
    hosts: list[tuple[str, int | None]] = []
    for item in netloc.split(",") if netloc else []:
        hosts.append(_split_host(item))
    return Dsn(
        user=user or None,
        password=password,
        hosts=tuple(hosts),
        database=unquote(path) if path else None,
        query=tuple(parse_qsl(query, keep_blank_values=True)),
    )


def _split_host(item: str) -> tuple[str, int | None]:
    if item.startswith("["):  # [ipv6]:port
        host, _, after = item[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    else:
        host, _, port = item.partition(":")
    if port and not port.isdigit():
        raise DsnError(f"invalid port in database URL host {item!r}")
    return unquote(host), int(port) if port else None


def for_asyncpg(url: str) -> str:
    """The URI for asyncpg: the same text, minus SQLAlchemy's ``+asyncpg`` driver suffix."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def for_libpq(url: str) -> tuple[str, str | None]:
    """(URI without the password, the password): for psql, whose argv ``ps`` can show.

    asyncpg's ``ssl=`` query parameter becomes libpq's ``sslmode=``.
    """
    dsn = parse(url)
    query = list(dsn.query)
    keys = {k for k, _ in query}
    if "ssl" in keys and "sslmode" not in keys:
        query = [("sslmode", v) if k == "ssl" else (k, v) for k, v in query]
    return replace(dsn, query=tuple(query)).render(with_password=False), dsn.password


def redacted(url: str) -> str:
    """The URI with its password replaced, for logs and status output."""
    try:
        dsn = parse(url)
    except DsnError:
        return "(unparseable database URL)"
    if dsn.password is None:
        return dsn.render()
    text = replace(dsn, password=None).render()
    user = quote(dsn.user or "", safe="")
    return text.replace(f"://{user}@", f"://{user}:***@", 1)
