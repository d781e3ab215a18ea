"""The provider interface: what every adapter offers, and the errors it may raise.

The provider layer knows nothing of the ORM. It is handed a decrypted key, a base URL and
messages, and yields `Chunk`s: text pieces as they arrive, usage as the provider reports it,
and tool calls (for the actions of the assistant).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx2
from django.utils.translation import gettext as _


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them; `None` is "not reported (yet)".

    The provider layer never guesses: the chat service estimates what is missing (and marks the
    record as estimated) in one place.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: a name, a description and a JSON schema of its input."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Chunk:
    """One thing from a stream: a piece of text, a usage report, or a finished tool call."""

    text: str = ""
    usage: Usage | None = None
    tool_call: ToolCall | None = None


@dataclass
class ChatRequest:
    """What to ask, oldest message first; `system` travels in the provider's own field.

    Each of `messages` is a dict with `role` and `content` (a string, or for a user turn with
    attachments a list of parts, in order):
    - `{"type": "text", "text": ...}` (a text file's part also has its `name`);
    - `{"type": "image", "name": ..., "media_type": "image/png" | "image/jpeg", "data": <base64>}`;
    - `{"type": "document", "name": ..., "media_type": "application/pdf", "data": <base64>,
      "text": <the PDF's text, headed with its name>}`: sent as the provider's document part,
      or as that text where the endpoint refuses documents (`documents_as_text`).
    Image parts may carry `width` and `height`, document parts `pages` (what the budget's input
    bound counts them by, api_manager/budget.py); the adapters do not send them.
    The turns:
    - `{"role": "user" | "assistant", "content": ...}`: a plain turn;
    - an assistant turn may add `"tool_calls": [ToolCall, ...]` (its `content` may be empty);
    - `{"role": "tool", "tool_call_id": ..., "content": ...}`: the result of one of those calls,
      right after the assistant turn that made it.
    The adapters translate these into each provider's wire format.

    `max_tokens` is the reply's output cap, set when it must hold (a budgeted key's turn);
    None leaves the model's own maximum where the API allows (OpenAI-compatible), and sends
    `CHAT_MAX_OUTPUT_TOKENS` where the API requires a cap (Anthropic).
    """

    model: str
    messages: list[dict[str, Any]]
    system: str = ""
    max_tokens: int | None = None
    tools: list[ToolSpec] = field(default_factory=list)


def documents_as_text(request: ChatRequest) -> ChatRequest | None:
    """The request with every document part replaced by its text (for an OpenAI- or
    Anthropic-compatible endpoint that refuses document parts); None if it has none."""
    found = False
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "document":
                    found = True
                    part = {"type": "text", "name": part.get("name"), "text": part.get("text", "")}
                parts.append(part)
            message = {**message, "content": parts}
        messages.append(message)
    if not found:
        return None
    return ChatRequest(request.model, messages, request.system, request.max_tokens, request.tools)


class ProviderError(Exception):
    """A failure whose message is safe to show a user: it never contains a key.

    `code` is the chat stream's `error` event code.
    """

    code: ClassVar[str] = "provider"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class AuthError(ProviderError):
    code = "auth"


class RateLimitError(ProviderError):
    code = "rate_limit"


class ProviderTimeout(ProviderError):
    code = "timeout"


class BadRequestError(ProviderError):
    code = "provider"


@dataclass(frozen=True)
class ProviderConfig:
    """Everything needed to reach a provider with one key."""

    provider: str
    api_key: str = field(repr=False)
    base_url: str = ""
    timeout: float = 60.0
    max_retries: int = 1

    @property
    def cache_key(self) -> tuple[str, str, str, float, int]:
        digest = hashlib.sha256(self.api_key.encode()).hexdigest()
        return (self.provider, digest, self.base_url, self.timeout, self.max_retries)


# One SDK client per key configuration and event loop: the client keeps its HTTP connections
# alive between requests, and connections belong to the loop that opened them.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Any]] = (
    weakref.WeakKeyDictionary()
)


class Provider(abc.ABC):
    """One provider reached with one key. Subclasses translate an SDK into `Chunk`s."""

    name: ClassVar[str]

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        per_loop = _clients.setdefault(loop, {})
        key = self.config.cache_key
        if key not in per_loop:
            per_loop[key] = self.make_client()
        return per_loop[key]

    @abc.abstractmethod
    def make_client(self) -> Any:
        """Return a new async SDK client for this configuration."""

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Yield the reply as it arrives: text pieces, usage reports, tool calls.

        Raises ProviderError (or a subclass) on failure, before or during the stream.
        Closing the iterator (`aclose()`, or cancelling the task) closes the HTTP stream.
        """

    @abc.abstractmethod
    async def list_models(self) -> list[str]:
        """Return the model ids this key may use; raises ProviderError."""


def stream_with_text_fallback(
    stream: Callable[[ChatRequest], AsyncIterator[Chunk]], request: ChatRequest
) -> AsyncIterator[Chunk]:
    """`stream(request)`; if the endpoint refuses the request (400, 415, 422) before anything
    arrived and it carries document parts, once more with the documents as their text: an
    OpenAI- or Anthropic-compatible server that does not take PDFs still gets to read them.
    A request without documents is the adapter's stream itself (no extra layer per chunk)."""
    fallback = documents_as_text(request)
    if fallback is None:
        return stream(request)
    return _with_fallback(stream, request, fallback)


async def _with_fallback(
    stream: Callable[[ChatRequest], AsyncIterator[Chunk]],
    request: ChatRequest,
    fallback: ChatRequest,
) -> AsyncIterator[Chunk]:
    received = False
    try:
        # aclosing: closing this generator (Stop) closes the adapter's HTTP stream at once.
        async with contextlib.aclosing(stream(request)) as chunks:
            async for chunk in chunks:
                received = True
                yield chunk
        return
    except BadRequestError as exc:
        if received or exc.status not in (400, 415, 422):
            raise
    async with contextlib.aclosing(stream(fallback)) as chunks:
        async for chunk in chunks:
            yield chunk


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """Parse server-sent events from decoded lines: yields (event name, JSON data, or the raw
    text when it is not JSON, as OpenAI's final `[DONE]`)."""
    event, data = "", []
    async for line in lines:
        if line:
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
            elif line.startswith("event:"):
                event = line[6:].strip()
            continue
        if data:
            yield event, _event_data(data)
        event, data = "", []
    if data:
        yield event, _event_data(data)


def _event_data(lines: list[str]) -> Any:
    text = "\n".join(lines)
    try:
        return json.loads(text)
    except ValueError:
        return text


def sdk_error(exc: Exception, sdk: Any, label: str, *, mid_stream: bool = False) -> ProviderError:
    """Translate an exception of an official SDK (`openai` or `anthropic`: both have the same
    error classes) or of its HTTP transport into a safe ProviderError. After the stream has
    started (`mid_stream`), a dropped connection is reported as a cut reply."""
    p = {"provider": label}
    if isinstance(exc, ProviderError):
        return exc
    # The adapters read the raw response, so a stream's transport errors reach us as the
    # exceptions of the SDKs' HTTP client, httpx2 (both SDKs use it; they wrap only what happens
    # while sending the request). A TimeoutException is a TransportError: test it first.
    if isinstance(exc, (sdk.APITimeoutError, httpx2.TimeoutException)):
        return ProviderTimeout(_("%(provider)s did not answer in time.") % p)
    if isinstance(exc, (sdk.APIConnectionError, httpx2.TransportError, httpx2.StreamError)):
        if mid_stream:
            return ProviderError(
                _("The connection to %(provider)s was lost in the middle of the reply.") % p
            )
        return ProviderError(_("Could not reach %(provider)s at the configured base URL.") % p)
    if isinstance(exc, sdk.APIStatusError):
        return status_error(exc.status_code, label)
    if isinstance(exc, sdk.APIError):
        return ProviderError(_("%(provider)s sent an error in the middle of the reply.") % p)
    return ProviderError(_("Unexpected failure talking to %(provider)s.") % p)


def status_error(status: int | None, provider_label: str) -> ProviderError:
    """The safe message for an HTTP status from the provider."""
    p = {"provider": provider_label}
    if status == 401:
        return AuthError(
            _("%(provider)s rejected the API key (401). Check the key.") % p, status=status
        )
    if status == 403:
        return AuthError(
            _("%(provider)s says this key has no permission for that (403).") % p, status=status
        )
    if status == 429:
        return RateLimitError(
            _("%(provider)s is rate limiting this key (429). Wait a moment and try again.") % p,
            status=status,
        )
    if status == 404:
        return BadRequestError(
            _(
                "%(provider)s does not know this model or endpoint (404). Check the model name and base URL."
            )
            % p,
            status=status,
        )
    if status is not None and 400 <= status < 500:
        return BadRequestError(
            _("%(provider)s refused the request (%(status)s).") % {**p, "status": status},
            status=status,
        )
    return ProviderError(
        _("%(provider)s had an internal error (%(status)s). Try again.")
        % {**p, "status": status or "—"},
        status=status,
    )
