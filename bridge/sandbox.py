"""Admin-written Jinja2 templates rendered on other systems' payloads, in a sandbox.

Jinja2's ``ImmutableSandboxedEnvironment``, stricter still: an attribute the
sandbox deems unsafe (``''.__class__``, ``__globals__``, a list's ``append``) is
an error the admin reads, with its line, rather than an empty string; ``*``
and ``**`` cannot build huge values; the output is capped and rendering stops
at a deadline. Text from the payload cannot @-mention anyone in Mattermost.
"""

from __future__ import annotations

import functools
import time
import traceback
from typing import Any

from jinja2 import TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from .text import neutralize_mentions

MAX_TEMPLATE = 64_000
MAX_RENDERED = 100_000  # the host API's limit for a notification's text
RENDER_SECONDS = 2.0
MAX_REPEAT = 100_000  # the longest string or list a template may build with * (and **)


class TemplateFailure(Exception):
    """The template could not render the payload; says why and on which line."""

    def __init__(self, message: str, line: int | None = None, source_line: str = ""):
        super().__init__(message)
        self.message = message
        self.line = line
        self.source_line = source_line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, stricter about what it lets through.

    The stock sandbox renders an unsafe attribute (``''.__class__``) as an
    empty string; here it is an error the admin reads. ``*`` and ``**`` are
    checked so that ``'x' * 10**9`` cannot exhaust memory.
    """

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not "
            "allowed in a template"
        )

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and abs(_number(right)) > 64:
            raise SecurityError("exponents that large are not allowed in a template")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                repeats = isinstance(sequence, (str, list, tuple)) and isinstance(times, int)
                if repeats and len(sequence) * times > MAX_REPEAT:
                    raise SecurityError(
                        f"a template may not build anything longer than {MAX_REPEAT}"
                    )
        return super().call_binop(context, operator, left, right)


def _number(value: Any) -> float:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}``: text from the payload cannot @-mention anyone.

    The template's own text is not touched, so a template may still write
    ``@oncall`` where the admin wants a mention.
    """
    if isinstance(value, Undefined):
        return value
    return neutralize_mentions(value if isinstance(value, str) else str(value))


_SANDBOX = _Sandbox(
    trim_blocks=True,  # a line holding only a {% tag %} leaves no blank line (as in Ansible)
    autoescape=False,  # Markdown for Mattermost, not HTML
    finalize=_finalize,
)


@functools.lru_cache(maxsize=64)
def compile_template(text: str):
    """The compiled template (cached per process: a source's template rarely changes)."""
    if len(text) > MAX_TEMPLATE:
        raise TemplateFailure(f"the template is longer than {MAX_TEMPLATE} characters")
    try:
        return _SANDBOX.from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateFailure(
            f"syntax error: {exc.message}", exc.lineno, _line_of(text, exc.lineno)
        ) from None


def render(template_text: str, payload: Any, *, seconds: float = RENDER_SECONDS) -> str:
    """The template rendered on ``payload``, stripped; raises :class:`TemplateFailure`."""
    template = compile_template(template_text)
    deadline = time.monotonic() + seconds
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate(payload=payload):
            parts.append(chunk)
            size += len(chunk)
            if size > MAX_RENDERED:
                raise TemplateFailure(f"the output is longer than {MAX_RENDERED} characters")
            if time.monotonic() > deadline:
                raise TemplateFailure(f"the template ran longer than {seconds:g} s")
    except TemplateFailure:
        raise
    except SecurityError as exc:
        line = _error_line(exc)
        message = str(exc) if "not allowed" in str(exc) else f"not allowed in a template: {exc}"
        raise TemplateFailure(message, line, _line_of(template_text, line)) from None
    except Exception as exc:  # noqa: BLE001 - the template is admin-written code: any error is its own
        line = _error_line(exc)
        raise TemplateFailure(_describe(exc), line, _line_of(template_text, line)) from None
    return "".join(parts).strip()


def _error_line(exc: BaseException) -> int | None:
    """The template line the error was raised on (Jinja maps its frames to the template)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def _line_of(text: str, line: int | None) -> str:
    if not line:
        return ""
    lines = text.splitlines()
    return lines[line - 1].strip()[:200] if 0 < line <= len(lines) else ""


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    message = str(exc)
    if name == "UndefinedError":
        return message  # "'dict object' has no attribute 'x'" reads well on its own
    return f"{name}: {message}" if message else name
