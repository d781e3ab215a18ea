"""A local HTTP server that speaks the OpenAI and Anthropic wire formats, streaming included.

Tests point the real SDKs at it (`base_url`); nothing is patched. One server answers both:
requests with an `anthropic-version` header are Anthropic's, the others OpenAI's.

Behaviour is chosen per request, so concurrent tests and a browser can drive it:
- the API key: one containing `bad` is refused (401), `noperm` is forbidden (403),
  `ratelimited` is rate limited (429);
- directives in the last paragraph of the last user message: `[[401]]`, `[[403]]`, `[[429]]`, `[[500]]`, `[[cut]]`
  (the stream stops mid-way without a proper end), `[[slow]]` (the first token waits
  `slow_first_token` seconds), `[[long]]` (a reply of `long_words` words), `[[xss]]` (a reply
  carrying script, onerror and javascript: payloads), `[[echo-history]]` (the reply lists the
  roles and contents it received), `[[tool:query]]` / `[[tool:append]]` (the model calls the
  run_query / append_to_file tool instead of answering), `[[tool:custom]]` (the model sends
  the call in `custom_tool_call`: an id, a name and the raw argument JSON, as a test sets them,
  to try what a misbehaving model may send). When the last message is a tool
  result, the reply is "The tool returned: <its first 200 characters>". `[[stamp]]` (a reply
  of `long_words` pieces, each `t<wall-clock ns>` when sent: benchmarks measure relay delay),
  `[[error-event]]` (after the first half of the reply, an error event in the provider's own
  format, as when a provider is overloaded mid-reply), `[[scripted]]` (the reply is
  `scripted_reply`, as a test sets it), `[[endless]]` (a reply that goes on until the client
  closes the stream, at most `endless_words` pieces whatever the request's cap: for Stop).

Attachments are checked as the real APIs check them: OpenAI `image_url` parts must hold a
`data:` URL of a PNG, JPEG, GIF or WebP whose bytes match its type, `file` parts a filename and
a PDF data URL; Anthropic `image` / `document` blocks a base64 source of a matching type. A
malformed part is a 400. Each accepted part is recorded in `parts` (kind, media type, name, size,
the decoded bytes); each image counts `image_tokens` input tokens (`IMAGE_TOKENS` unless a
test sets it), each document
`DOCUMENT_TOKENS`. With `refuse_documents` set, document/file parts get a 400 (an endpoint
that does not take PDFs). With `only_max_tokens` set, an OpenAI request with
`max_completion_tokens` gets a 400 (an OpenAI-compatible server that knows only `max_tokens` and
refuses unknown fields, as older vLLM did).

`GET /_fake/stats` answers counters and the wall-clock times (ns) at which clients went away,
also per stream (`closed_streams`: the last paragraph of the request's last user message → the
time; a benchmark gives each stream its own text). With `cancel_on_disconnect` a client going
away is seen at once (aiohttp's handler cancellation), not at the next piece written.

The reply to anything else is "Hello! You said: <the message>", one word per piece, each piece
`word_delay` seconds after the last. Usage: input tokens are the words of every message sent
(system included), output tokens the words sent back; a reply is cut to the request's
`max_completion_tokens` / `max_tokens` words.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1"]
ANTHROPIC_MODELS = ["claude-test-sonnet", "claude-test-haiku"]
IMAGE_TOKENS = 85
DOCUMENT_TOKENS = 300
MAGIC = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
    "application/pdf": (b"%PDF-",),
}
XSS_REPLY = (
    'Look: <script>window.__xss = 1</script> and <img src=x onerror="window.__xss = 2"> '
    "and [a link](javascript:window.__xss=3) done."
)


@dataclass
class Seen:
    """One request the fake received, for assertions (its secret header is not kept)."""

    path: str
    flavour: str
    body: dict[str, Any]
    api_key_last4: str


@dataclass
class Part:
    """An attachment part the fake accepted."""

    flavour: str
    kind: str  # image | document
    media_type: str
    name: str
    data: bytes = field(repr=False)


class BadPart(Exception):
    pass


@dataclass
class FakeProviderServer:
    word_delay: float = 0.005
    slow_first_token: float = 3.0
    long_words: int = 400
    endless_words: int = 100_000
    cancel_on_disconnect: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    disconnects: int = 0
    completed_streams: int = 0
    open_streams: int = 0
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnect_times: list[int] = field(default_factory=list)
    closed_streams: dict[str, int] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    refuse_documents: bool = False
    # What an image is billed: a test sets what a real provider would bill a large one.
    image_tokens: int = IMAGE_TOKENS
    only_max_tokens: bool = False
    # What `[[tool:custom]]` sends: id, name and the raw argument JSON.
    custom_tool_call: dict[str, str] = field(
        default_factory=lambda: {"id": "call_custom", "name": "run_query", "arguments": "{}"}
    )
    # What `[[scripted]]` answers, as a test sets it (Markdown in several paragraphs, which the
    # echo of the last paragraph cannot carry).
    scripted_reply: str = ""

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeProviderServer:
        if not self.port:
            with socket.socket() as probe:
                probe.bind((self.host, 0))
                self.port = probe.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def boot() -> None:
            app = web.Application()
            app.router.add_get("/v1/models", self.models)
            app.router.add_post("/v1/chat/completions", self.openai_chat)
            app.router.add_post("/v1/messages", self.anthropic_messages)
            app.router.add_get("/_fake/stats", self.stats)
            self._runner = web.AppRunner(
                app,
                handle_signals=False,
                access_log=None,
                handler_cancellation=self.cancel_on_disconnect,
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(boot())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-provider", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake provider server did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def openai_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.disconnect_times.clear()
        self.closed_streams.clear()
        self.parts.clear()
        self.refuse_documents = False
        self.image_tokens = IMAGE_TOKENS
        self.only_max_tokens = False
        self.disconnects = 0
        self.completed_streams = 0
        self.disconnected.clear()
        self.custom_tool_call = {"id": "call_custom", "name": "run_query", "arguments": "{}"}
        self.scripted_reply = ""

    # -- helpers ---------------------------------------------------------------------
    @staticmethod
    def _flavour_and_key(request: web.Request) -> tuple[str, str]:
        bearer = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if "anthropic-version" in request.headers or "x-api-key" in request.headers:
            return "anthropic", request.headers.get("x-api-key") or bearer
        return "openai", bearer

    @staticmethod
    def _error(flavour: str, status: int, message: str) -> web.Response:
        if flavour == "anthropic":
            kinds = {
                401: "authentication_error",
                403: "permission_error",
                429: "rate_limit_error",
                404: "not_found_error",
            }
            body = {
                "type": "error",
                "error": {"type": kinds.get(status, "api_error"), "message": message},
            }
        else:
            body = {
                "error": {"message": message, "type": "invalid_request_error", "code": str(status)}
            }
        return web.json_response(body, status=status)

    def _key_failure(self, flavour: str, key: str) -> web.Response | None:
        if not key or "bad" in key:
            # Like the real services, the message echoes part of the key: the panel must not.
            return self._error(flavour, 401, f"Incorrect API key provided: {key}.")
        if "noperm" in key:
            return self._error(flavour, 403, "This key has no permission for this resource.")
        if "ratelimited" in key:
            return self._error(flavour, 429, "Rate limit reached.")
        return None

    def _directive_failure(self, flavour: str, text: str) -> web.Response | None:
        for status in (401, 403, 429, 500):
            if f"[[{status}]]" in text:
                return self._error(flavour, status, f"Fake failure {status}.")
        return None

    @staticmethod
    def _words(text: str) -> int:
        return len(text.split())

    def _check_parts(self, flavour: str, messages: list[dict[str, Any]]) -> web.Response | None:
        """Validate and record the attachment parts of `messages`; a 400 for a bad one."""
        found: list[Part] = []
        try:
            for message in messages:
                content = message.get("content")
                if not isinstance(content, list):
                    continue
                for part in content:
                    if not isinstance(part, dict):
                        raise BadPart("content parts must be objects")
                    found.extend(_part(flavour, message.get("role"), part))
        except BadPart as exc:
            return self._error(flavour, 400, f"Invalid content part: {exc}")
        if self.refuse_documents and any(p.kind == "document" for p in found):
            return self._error(flavour, 400, "This model does not support document inputs.")
        self.parts.extend(found)
        return None

    def _part_tokens(self, messages: list[dict[str, Any]]) -> int:
        total = 0
        for message in messages:
            content = message.get("content")
            for part in content if isinstance(content, list) else ():
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("image", "image_url"):
                    total += self.image_tokens
                elif kind in ("document", "file"):
                    total += DOCUMENT_TOKENS
        return total

    def _reply_for(self, messages: list[dict[str, Any]]) -> str:
        result = _tool_result(messages)
        if result is not None:
            return f"The tool returned: {result[:200]}"
        text = _last_user_text(messages)
        if "[[long]]" in text or "[[stamp]]" in text:
            return " ".join(f"word{i}" for i in range(self.long_words))
        if "[[xss]]" in text:
            return XSS_REPLY
        if "[[scripted]]" in text:
            return self.scripted_reply
        if "[[echo-history]]" in text:
            return " | ".join(f"{m['role']}: {_text_of(m.get('content'))}" for m in messages)
        return f"Hello! You said: {text}"

    async def _sse_response(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        return response

    async def _stream_words(
        self, response: web.StreamResponse, reply: str, text: str, emit
    ) -> bool:
        """Send the reply word by word through `emit`; return False if the client went away."""
        pieces = re.findall(r"\S+\s*", reply)
        if "[[cut]]" in text or "[[error-event]]" in text:
            pieces = pieces[: max(1, len(pieces) // 2)]
        if "[[endless]]" in text:
            pieces = (f"word{i} " for i in range(self.endless_words))
        self.open_streams += 1
        try:
            if "[[slow]]" in text:
                await asyncio.sleep(self.slow_first_token)
            stamp = "[[stamp]]" in text
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(self.word_delay)
                await emit(f"t{time.time_ns()} " if stamp else piece)
            return True
        except (ConnectionResetError, asyncio.CancelledError):
            now = time.time_ns()
            self.disconnect_times.append(now)
            self.closed_streams[text] = now
            if len(self.closed_streams) > 5000:
                del self.closed_streams[next(iter(self.closed_streams))]
            self.disconnects += 1
            self.disconnected.set()
            raise
        finally:
            self.open_streams -= 1

    # -- endpoints -------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": len(self.requests),
                "open_streams": self.open_streams,
                "completed_streams": self.completed_streams,
                "disconnects": self.disconnects,
                "disconnect_times": self.disconnect_times[-5000:],
                "closed_streams": self.closed_streams,
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        flavour, key = self._flavour_and_key(request)
        self.requests.append(Seen(request.path, flavour, {}, key[-4:]))
        if failure := self._key_failure(flavour, key):
            return failure
        if flavour == "anthropic":
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in ANTHROPIC_MODELS
            ]
            return web.json_response(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"],
                    "last_id": data[-1]["id"],
                }
            )
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in OPENAI_MODELS
        ]
        return web.json_response({"object": "list", "data": data})

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        flavour, key = self._flavour_and_key(request)
        body = await request.json()
        self.requests.append(Seen(request.path, "openai", body, key[-4:]))
        if failure := self._key_failure("openai", key):
            return failure
        if self.only_max_tokens and "max_completion_tokens" in body:
            return self._error(
                "openai",
                400,
                "[{'type': 'extra_forbidden', 'loc': ('body', 'max_completion_tokens')}]",
            )
        messages = body.get("messages", [])
        if failure := self._check_parts("openai", messages):
            return failure
        text = _last_user_text(messages)
        if failure := self._directive_failure("openai", text):
            return failure
        reply = _capped(self._reply_for(messages), body)
        input_tokens = sum(self._words(_text_of(m.get("content"))) for m in messages)
        input_tokens += self._part_tokens(messages)
        created = int(time.time())
        chunk_id = "chatcmpl-fake"
        model = body.get("model", "gpt-4o-mini")

        if not body.get("stream"):
            return web.json_response(
                {
                    "id": chunk_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": input_tokens,
                        "completion_tokens": self._words(reply),
                        "total_tokens": 0,
                    },
                }
            )

        response = await self._sse_response(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(payload)}\n\n".encode())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        sent_words = 0

        async def emit(piece: str) -> None:
            nonlocal sent_words
            sent_words += 1
            await send(chunk({"content": piece}))

        async def finish(reason: str, completion_tokens: int) -> web.StreamResponse:
            """A proper end: the finish reason, usage when asked for, then [DONE]."""
            await send(chunk({}, reason))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "prompt_tokens": input_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": input_tokens + completion_tokens,
                }
                await send({**chunk({}), "choices": [], "usage": usage})
            await response.write(b"data: [DONE]\n\n")
            self.completed_streams += 1
            return response

        await send(chunk({"role": "assistant", "content": ""}))
        tool = self._tool_for(messages)
        if tool is not None and body.get("tools"):
            call_id, name, encoded = tool
            call_id = call_id or "call_fake_1"
            await send(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for start in range(0, len(encoded), 16):
                await asyncio.sleep(self.word_delay)
                await send(
                    chunk(
                        {
                            "tool_calls": [
                                {"index": 0, "function": {"arguments": encoded[start : start + 16]}}
                            ]
                        }
                    )
                )
            return await finish("tool_calls", 12)
        await self._stream_words(response, reply, text, emit)
        if "[[error-event]]" in text:
            await send(
                {
                    "error": {
                        "message": "The server is overloaded.",
                        "type": "server_error",
                        "code": None,
                    }
                }
            )
            return response
        if "[[cut]]" in text:
            # Drop the connection without a finish_reason, usage or [DONE].
            request.transport.close()
            return response
        return await finish("stop", sent_words)

    def _tool_for(self, messages: list[dict[str, Any]]) -> tuple[str, str, str] | None:
        """(id or "", name, raw argument JSON) of the tool call asked for, if any."""
        if _tool_result(messages) is None and "[[tool:custom]]" in _last_user_text(messages):
            custom = self.custom_tool_call
            return custom["id"], custom["name"], custom["arguments"]
        tool = _wanted_tool(messages)
        if tool is None:
            return None
        return "", tool[0], json.dumps(tool[1])

    async def _anthropic_tool_use(self, send, call_id: str, name: str, encoded: str) -> None:
        await send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": call_id or "toolu_fake_1",
                    "name": name,
                    "input": {},
                },
            },
        )
        for start in range(0, len(encoded), 16):
            await asyncio.sleep(self.word_delay)
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": encoded[start : start + 16],
                    },
                },
            )
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 12},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        self.completed_streams += 1

    async def anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        flavour, key = self._flavour_and_key(request)
        body = await request.json()
        self.requests.append(Seen(request.path, "anthropic", body, key[-4:]))
        if failure := self._key_failure("anthropic", key):
            return failure
        if "max_tokens" not in body:
            return self._error("anthropic", 400, "max_tokens: Field required")
        messages = body.get("messages", [])
        if failure := self._check_parts("anthropic", messages):
            return failure
        text = _last_user_text(messages)
        if failure := self._directive_failure("anthropic", text):
            return failure
        system = body.get("system") or ""
        if isinstance(system, list):
            system = " ".join(_text_of(b) for b in system)
        all_messages = ([{"role": "system", "content": system}] if system else []) + messages
        reply = _capped(self._reply_for(all_messages), body)
        input_tokens = sum(self._words(_text_of(m.get("content"))) for m in all_messages)
        input_tokens += self._part_tokens(messages)
        model = body.get("model", "claude-test-sonnet")
        response = await self._sse_response(request)

        async def send(event: str, payload: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode())

        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
        )
        tool = self._tool_for(messages)
        if tool is not None and body.get("tools"):
            await self._anthropic_tool_use(send, *tool)
            return response
        await send(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        sent_words = 0

        async def emit(piece: str) -> None:
            nonlocal sent_words
            sent_words += 1
            await send(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )

        await self._stream_words(response, reply, text, emit)
        if "[[error-event]]" in text:
            await send(
                "error",
                {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            )
            return response
        if "[[cut]]" in text:
            request.transport.close()
            return response
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": sent_words},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        self.completed_streams += 1
        return response


TOOL_CALLS = {
    "query": (
        "run_query",
        {
            "code": 'Message.objects.filter(role="user").values("conversation__title").annotate(n=Count("id")).order_by("-n")[:10]'
        },
    ),
    "append": ("append_to_file", {"path": "notes.md", "content": "def added():\n    return 42\n"}),
}


def _tool_result(messages: list[dict[str, Any]]) -> str | None:
    """The text of a tool result if the last message is one (either wire format)."""
    if not messages:
        return None
    last = messages[-1]
    if last.get("role") == "tool":
        return _text_of(last.get("content"))
    content = last.get("content")
    if last.get("role") == "user" and isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return " ".join(_text_of(b.get("content")) for b in results)
    return None


def _wanted_tool(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    if _tool_result(messages) is not None:
        return None
    text = _last_user_text(messages)
    for name, call in TOOL_CALLS.items():
        if f"[[tool:{name}]]" in text:
            return call
    return None


def _decoded(data: Any, media_type: str) -> bytes:
    """The bytes of base64 `data`, which must be of `media_type` (by their signature)."""
    if not isinstance(data, str) or not data:
        raise BadPart("missing base64 data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadPart("the data is not valid base64") from None
    if media_type not in MAGIC:
        raise BadPart(f"unsupported media type {media_type!r}")
    if not raw.startswith(MAGIC[media_type]):
        raise BadPart(f"the data is not {media_type}")
    return raw


def _data_url(url: Any) -> tuple[str, str]:
    match = re.fullmatch(r"data:([\w/.+-]+);base64,(.*)", url or "", re.S)
    if not match:
        raise BadPart("expected a base64 data URL")
    return match.group(1), match.group(2)


def _part(flavour: str, role: Any, part: dict[str, Any]) -> list[Part]:
    """The attachment in one content part of either wire format ([] for text and tools)."""
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise BadPart("a text part needs its text")
        return []
    if flavour == "openai":
        if kind == "image_url":
            media_type, data = _data_url((part.get("image_url") or {}).get("url"))
            if not media_type.startswith("image/"):
                raise BadPart("image_url must hold an image")
            return [Part(flavour, "image", media_type, "", _decoded(data, media_type))]
        if kind == "file":
            file = part.get("file") or {}
            media_type, data = _data_url(file.get("file_data"))
            if media_type != "application/pdf" or not file.get("filename"):
                raise BadPart("a file part needs a filename and PDF file_data")
            return [
                Part(flavour, "document", media_type, file["filename"], _decoded(data, media_type))
            ]
        raise BadPart(f"unknown part type {kind!r}")
    if kind in ("tool_use", "tool_result"):
        return []
    if kind in ("image", "document"):
        if role != "user":
            raise BadPart(f"{kind} blocks belong to user turns")
        source = part.get("source") or {}
        if source.get("type") != "base64":
            raise BadPart("only base64 sources are accepted here")
        media_type = source.get("media_type", "")
        if (kind == "image") != media_type.startswith("image/"):
            raise BadPart(f"a {kind} block cannot hold {media_type}")
        return [
            Part(
                flavour,
                kind,
                media_type,
                part.get("title", ""),
                _decoded(source.get("data"), media_type),
            )
        ]
    raise BadPart(f"unknown block type {kind!r}")


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """The last paragraph of the last user message: where directives are read (turns of one
    role in a row reach a provider joined by a blank line)."""
    last = next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})
    return _text_of(last.get("content")).split("\n\n")[-1]


def _capped(reply: str, body: dict[str, Any]) -> str:
    """The reply cut to the request's output cap (a word is a token here), as providers do."""
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not cap:
        return reply
    words = re.findall(r"\S+\s*", reply)
    return "".join(words[: int(cap)]).rstrip() if len(words) > int(cap) else reply


def _text_of(content: Any) -> str:
    """The text of a message's content, whether a string or a list of content blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return " ".join(_text_of(part) for part in content)


if (
    __name__ == "__main__"
):  # python -m tests.fakes.server --port 8765: a fake for manual runs and benchmarks
    import argparse
    import resource

    parser = argparse.ArgumentParser(description="A fake OpenAI/Anthropic server")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--word-delay", type=float, default=0.05)
    parser.add_argument("--long-words", type=int, default=400)
    parser.add_argument("--slow-first-token", type=float, default=3.0)
    parser.add_argument(
        "--cancel-on-disconnect",
        action="store_true",
        help="see a client go away at once, not at the next piece (Stop timings)",
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = FakeProviderServer(
        port=args.port,
        word_delay=args.word_delay,
        long_words=args.long_words,
        slow_first_token=args.slow_first_token,
        cancel_on_disconnect=args.cancel_on_disconnect,
    )
    # Keep no per-request log in long runs.
    server.requests = type("Forget", (list,), {"append": lambda self, item: None})()
    server.start()
    print(
        f"fake provider: OpenAI {server.openai_url}, Anthropic {server.anthropic_url}", flush=True
    )
    threading.Event().wait()
