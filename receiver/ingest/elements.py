"""Parse PostHog's ``elements_chain`` string and pick out the clicked element.

The chain is produced by posthog-js ``getElementsChainString`` (grammar and escaping rules in
the team's PostHog reference, §1.4)::

    chain   := element (';' element)*          -- element 0 is the event target, last is body
    element := tag ('.' class)* ':' (key '="' value '"')*

Why a hand-written scanner instead of PostHog's two regexes:

* Tailwind classes contain ``:`` (``hover:bg-blue-500``) and MUI ids look like ``:r1f:``, so the
  tag/attribute boundary cannot be "the first colon". We split at the first colon that is
  followed by a key PostHog actually emits (``attr__``, ``attr_id``, ``href``, ``nth-child``,
  ``nth-of-type``, ``text``), falling back to PostHog's own rule (a colon followed by
  ``[A-Za-z0-9_-]*=``).
* Only ``"`` is escaped by the serializer; a backslash is not. A value ending in ``\\`` therefore
  serializes as ``\\"`` and the strict reading swallows the rest of the chain. We parse strictly
  first and, only if that yields malformed elements, re-parse with a lenient rule (``\\"`` closes
  the value when followed by ``;``, the end, or ``key="``) and keep whichever reading is cleaner.
* The input is attacker-controlled (anyone with the project key can send events), so every loop is
  linear in a truncated input and every output collection is capped.

Everything here is pure: no I/O, no logging, and no exception escapes for any ``str`` or ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_CHAIN_CHARS",
    "MAX_CLASSES",
    "MAX_ELEMENTS",
    "MAX_KEY_CHARS",
    "MAX_NAME_CHARS",
    "MAX_VALUE_CHARS",
    "Element",
    "Target",
    "parse_elements_chain",
    "target_from_chain",
]

# posthog-js caps the chain at nothing in particular, so we pick limits well above what real
# chains use (a few KB, < 40 elements) while keeping worst-case work and output small.
MAX_CHAIN_CHARS = 64 * 1024
MAX_ELEMENTS = 64
MAX_ATTRIBUTES = 64
MAX_CLASSES = 64
MAX_VALUE_CHARS = 2048  # posthog-js caps href at 2048 and other attributes at 1024
MAX_KEY_CHARS = 256
MAX_NAME_CHARS = 256  # tag and class names

_KNOWN_KEY_AFTER_COLON = re.compile(r":(?=attr__|attr_id=|href=|nth-child=|nth-of-type=|text=)")
_POSTHOG_KEY_AFTER_COLON = re.compile(r":[A-Za-z0-9_\-]*=")
_HEADER_END = re.compile(r'[;"]')
_KEY_END = re.compile(r'[;"]')
_VALUE_SPECIAL = re.compile(r'[\\"]')
_LENIENT_KEY_AHEAD = re.compile(r'[A-Za-z0-9_\-]+="')
_WS = re.compile(r"\s+")
# HTML, SVG and custom-element names; anything else in tag position is debris from a bad chain.
_TAG = re.compile(r"[a-z][a-z0-9_\-]*")

_BUTTON_INPUT_TYPES = frozenset({"submit", "button", "reset", "image"})
_TAG_KIND = {
    "button": "button",
    "a": "link",
    "input": "input",
    "select": "select",
    "textarea": "textarea",
    "form": "form",
    "label": "label",
}
_ROLE_KIND = {"button": "button", "link": "link"}


@dataclass(frozen=True, slots=True)
class Element:
    """One element of the chain, exactly as serialized (values unescaped, bounded)."""

    tag: str
    classes: tuple[str, ...]
    # Excluded from the hash so the frozen dataclass stays hashable despite holding a dict.
    attributes: dict[str, str] = field(hash=False)

    @property
    def text(self) -> str | None:
        return self.attributes.get("text")

    @property
    def element_id(self) -> str | None:
        # attr__id is the raw DOM attribute; attr_id is posthog's copy of it. Either may be absent
        # depending on the SDK version and on sensitive-element stripping.
        value = self.attributes.get("attr__id")
        return value if value is not None else self.attributes.get("attr_id")

    @property
    def name(self) -> str | None:
        return self.attributes.get("attr__name")

    @property
    def href(self) -> str | None:
        value = self.attributes.get("href")
        return value if value is not None else self.attributes.get("attr__href")

    @property
    def aria_label(self) -> str | None:
        return self.attributes.get("attr__aria-label")

    @property
    def title(self) -> str | None:
        return self.attributes.get("attr__title")

    @property
    def role(self) -> str | None:
        return self.attributes.get("attr__role")

    @property
    def kind(self) -> str | None:
        """Interactive role of this element alone, or None when it is not interactive."""
        role = (self.role or "").strip().lower()
        if role in _ROLE_KIND:
            return _ROLE_KIND[role]
        if self.tag == "input":
            input_type = (self.attributes.get("attr__type") or "").strip().lower()
            return "button" if input_type in _BUTTON_INPUT_TYPES else "input"
        return _TAG_KIND.get(self.tag)


@dataclass(frozen=True, slots=True)
class Target:
    """What was interacted with, read from element 0 (and its ancestors only where stated)."""

    tag: str | None
    element_id: str | None
    text: str | None
    input_name: str | None
    href: str | None
    kind: str


_EMPTY_TARGET = Target(tag=None, element_id=None, text=None, input_name=None, href=None, kind="element")


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_elements_chain(chain: str | None) -> list[Element]:
    """Return the chain's elements, target first. Never raises; output is bounded."""
    try:
        if not isinstance(chain, str) or not chain:
            return []
        text = chain[:MAX_CHAIN_CHARS]
        strict, strict_bad = _parse(text, lenient=False)
        if strict_bad == 0 or "\\" not in text:
            return strict
        lenient, lenient_bad = _parse(text, lenient=True)
        return lenient if lenient_bad < strict_bad else strict
    except Exception:  # noqa: BLE001  # pragma: no cover - a parser bug must not drop the event
        return []


def _parse(s: str, *, lenient: bool) -> tuple[list[Element], int]:
    """One pass over ``s``. Returns the elements and how many of them were malformed."""
    n = len(s)
    pos = 0
    elements: list[Element] = []
    bad = 0
    # Every element read counts toward the cap, parsed or not: ";" * 65536 is 65,536 malformed
    # elements, and reading them all for each of a batch's events cost seconds of CPU.
    for _ in range(MAX_ELEMENTS):
        if pos >= n:
            break
        element, pos, ok = _parse_element(s, pos, lenient=lenient)
        if element is not None:
            elements.append(element)
        if not ok:
            bad += 1
    return elements, bad


def _parse_element(s: str, pos: int, *, lenient: bool) -> tuple[Element | None, int, bool]:
    """Parse one element starting at ``pos``; return it, the position after its ``;``, and ok."""
    n = len(s)
    header_end_match = _HEADER_END.search(s, pos)
    region_end = header_end_match.start() if header_end_match else n
    if header_end_match is None or s[region_end] == ";":
        # No attribute section at all (e.g. a bare "body"); tolerate a dangling ":".
        header = s[pos:region_end]
        if header.endswith(":"):
            header = header[:-1]
        tag, classes = _split_header(header)
        element = Element(tag=tag, classes=classes, attributes={}) if tag else None
        return element, region_end + 1, bool(tag)

    split = _KNOWN_KEY_AFTER_COLON.search(s, pos, region_end)
    if split is None:
        split = _POSTHOG_KEY_AFTER_COLON.search(s, pos, region_end)
    if split is None:
        # A quote appeared before any recognizable attribute section: unparseable element.
        return None, _skip_to_next_element(s, region_end), False
    tag, classes = _split_header(s[pos : split.start()])

    attributes: dict[str, str] = {}
    ok = bool(tag)
    p = split.start() + 1
    while p < n:
        if s[p] == ";":
            p += 1
            break
        key_end_match = _KEY_END.search(s, p)
        if (
            key_end_match is None
            or s[key_end_match.start()] != '"'
            or key_end_match.start() == p
            or s[key_end_match.start() - 1] != "="
        ):
            ok = False
            p = _skip_to_next_element(s, p)
            break
        quote = key_end_match.start()
        key = s[p : quote - 1][:MAX_KEY_CHARS]
        value, p, closed = _scan_value(s, quote + 1, lenient=lenient)
        if not key:
            ok = False
        elif len(attributes) < MAX_ATTRIBUTES:
            attributes.setdefault(key, value)
        if not closed:
            ok = False
            break

    classes = _classes_from_attribute(attributes.get("attr__class")) or classes
    return Element(tag=tag, classes=classes, attributes=attributes), p, ok


def _split_header(header: str) -> tuple[str, tuple[str, ...]]:
    # maxsplit keeps a hostile "a.b.c...." header from building a huge list; the unsplit
    # remainder lands in parts[MAX_CLASSES + 1], which is dropped.
    parts = header.split(".", MAX_CLASSES + 1)
    tag = parts[0].strip().lower()[:MAX_NAME_CHARS]
    if not _TAG.fullmatch(tag):
        tag = ""
    classes = tuple(c[:MAX_NAME_CHARS] for c in parts[1 : MAX_CLASSES + 1] if c)
    return tag, classes


def _classes_from_attribute(value: str | None) -> tuple[str, ...]:
    # The dotted form is ambiguous for classes containing "." (Tailwind "px-3.5"); the raw class
    # attribute is not, so prefer it whenever posthog kept it.
    if not value:
        return ()
    return tuple(c[:MAX_NAME_CHARS] for c in value[:MAX_VALUE_CHARS].split()[:MAX_CLASSES])


def _scan_value(s: str, start: int, *, lenient: bool) -> tuple[str, int, bool]:
    """Scan a quoted value whose opening quote precedes ``start``.

    Returns (unescaped value truncated to MAX_VALUE_CHARS, position after the closing quote,
    whether a closing quote was found).
    """
    n = len(s)
    pieces: list[str] = []
    size = 0
    p = start

    def keep(chunk: str) -> None:
        nonlocal size
        if size < MAX_VALUE_CHARS and chunk:
            chunk = chunk[: MAX_VALUE_CHARS - size]
            pieces.append(chunk)
            size += len(chunk)

    while True:
        m = _VALUE_SPECIAL.search(s, p)
        if m is None:
            keep(s[p:])
            return "".join(pieces), n, False
        i = m.start()
        keep(s[p:i])
        if s[i] == '"':
            return "".join(pieces), i + 1, True
        # A backslash. Only `"` is ever escaped by the serializer, so `\x` is a literal pair.
        if i + 1 >= n:
            keep("\\")
            return "".join(pieces), n, False
        nxt = s[i + 1]
        if nxt != '"':
            keep("\\" + nxt)
            p = i + 2
            continue
        if lenient and _quote_ends_value(s, i + 2):
            # Trailing-backslash ambiguity: read `\"` as a literal backslash plus closing quote.
            keep("\\")
            return "".join(pieces), i + 2, True
        keep('"')
        p = i + 2


def _quote_ends_value(s: str, after: int) -> bool:
    if after >= len(s) or s[after] == ";":
        return True
    return _LENIENT_KEY_AHEAD.match(s, after) is not None


def _skip_to_next_element(s: str, p: int) -> int:
    nxt = s.find(";", p)
    return len(s) if nxt < 0 else nxt + 1


# --------------------------------------------------------------------------------------------
# Target
# --------------------------------------------------------------------------------------------


def target_from_chain(chain: str | None, el_text: str | None = None) -> Target:
    """Describe the event target (element 0). Never raises."""
    try:
        elements = parse_elements_chain(chain)
        return _target(elements, el_text)
    except Exception:  # noqa: BLE001  # pragma: no cover - never raise, by contract
        return _EMPTY_TARGET


def target_from_parts(
    tag: str | None, element_id: str | None, text: str | None, href: str | None = None
) -> Target:
    """The target of a source that reports the clicked element as fields, not as a chain
    (Amplitude's autocapture: element tag, id and text). Never raises."""
    clean_tag = tag.strip().lower() if isinstance(tag, str) else ""
    if not _TAG.fullmatch(clean_tag):
        clean_tag = ""
    attributes = {}
    if element_id:
        attributes["attr__id"] = element_id[:MAX_VALUE_CHARS]
    if href:
        attributes["attr__href"] = href[:MAX_VALUE_CHARS]
    if not clean_tag:
        return Target(
            tag=None, element_id=_nonempty(attributes.get("attr__id")), text=_clean(text),
            input_name=None, href=_nonempty(attributes.get("attr__href")), kind="element",
        )
    return _target([Element(tag=clean_tag, classes=(), attributes=attributes)], text)


def _target(elements: list[Element], el_text: str | None) -> Target:
    given_text = _clean(el_text) if isinstance(el_text, str) else None
    if not elements:
        if given_text is None:
            return _EMPTY_TARGET
        return Target(tag=None, element_id=None, text=given_text, input_name=None, href=None, kind="element")

    first = elements[0]
    interactive = next((el for el in elements if el.kind is not None), None)
    # The label a human reads lives on the button/link even when the click landed on an icon or a
    # span inside it; role=button/link elements count too, since that is what they render as.
    clickable = next((el for el in elements if el.kind in ("button", "link")), None)
    link = next((el for el in elements if el.tag == "a"), None)

    text = given_text or _clean(first.text)
    if text is None and first.tag == "input" and first.kind == "button":
        # <input type=submit value="Sign in"> has no text node; its value is the visible label.
        text = _clean(first.attributes.get("attr__value"))
    if text is None and clickable is not None and clickable is not first:
        text = _clean(clickable.text)
    if text is None:
        for el in (first, clickable):
            if el is None:
                continue
            text = _clean(el.aria_label) or _clean(el.title)
            if text is not None:
                break

    href = _nonempty(first.href)
    if href is None and link is not None:
        href = _nonempty(link.href)

    return Target(
        tag=first.tag or None,
        element_id=_nonempty(first.element_id),
        text=text,
        input_name=_nonempty(first.name),
        href=href,
        kind=interactive.kind if interactive is not None and interactive.kind else "element",
    )


def _clean(value: str | None) -> str | None:
    if not value:
        return None
    # Slice before collapsing so a huge whitespace-free value cannot cost more than the cap.
    collapsed = _WS.sub(" ", value[: MAX_VALUE_CHARS * 2]).strip()[:MAX_VALUE_CHARS]
    return collapsed or None


def _nonempty(value: str | None) -> str | None:
    return value if value else None
