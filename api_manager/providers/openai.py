"""OpenAI adapter (and any OpenAI-compatible endpoint) over the async `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import openai
from django.utils.translation import gettext as _

from api_manager.providers import netguard
from api_manager.providers.base import (
    ChatRequest,
    Chunk,
    Provider,
    ProviderError,
    ToolCall,
    Usage,
    sdk_error,
    sse_events,
    stream_with_text_fallback,
)

LABEL = "OpenAI"


def map_error(exc: Exception) -> ProviderError:
    return sdk_error(exc, openai, LABEL)


def mid_stream_error(exc: Exception) -> ProviderError:
    return sdk_error(exc, openai, LABEL, mid_stream=True)


def to_openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message["role"] == "tool":
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": message["tool_call_id"],
                    "content": message["content"],
                }
            )
        elif message.get("tool_calls"):
            messages.append(
                {
                    "role": "assistant",
                    "content": message.get("content") or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": json.dumps(call.arguments),
                            },
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        else:
            messages.append({"role": message["role"], "content": _content(message["content"])})
    return messages


def _content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A turn's content in OpenAI's parts: images as `image_url` with a data URL, PDFs as a
    `file` part (Chat Completions' inline file), text as `text`."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "image":
            url = f"data:{part['media_type']};base64,{part['data']}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "document":
            data_url = f"data:{part['media_type']};base64,{part['data']}"
            parts.append(
                {"type": "file", "file": {"filename": part["name"], "file_data": data_url}}
            )
        else:
            parts.append({"type": "text", "text": part.get("text", "")})
    return parts


# Hosts whose APIs take `max_completion_tokens` and refuse `max_tokens` for reasoning models
# (o-series, gpt-5): OpenAI's own and Azure OpenAI's. Other OpenAI-compatible servers (Ollama,
# LM Studio, older vLLM, many proxies) know only `max_tokens`, and some refuse an unknown field.
COMPLETION_TOKENS_HOSTS = ("api.openai.com", ".openai.azure.com", "models.inference.ai.azure.com")


def output_cap_field(base_url: str) -> str:
    """The name of the output cap for an endpoint: `max_completion_tokens` for OpenAI's own
    API (no base URL) and Azure OpenAI, `max_tokens` for any other OpenAI-compatible one."""
    if not base_url:
        return "max_completion_tokens"
    host = (urlsplit(base_url).hostname or "").lower()
    for known in COMPLETION_TOKENS_HOSTS:
        if host == known.lstrip(".") or (known.startswith(".") and host.endswith(known)):
            return "max_completion_tokens"
    return "max_tokens"


class OpenAIProvider(Provider):
    name = "openai"

    def make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            timeout=openai.Timeout(self.config.timeout, connect=min(10.0, self.config.timeout)),
            max_retries=self.config.max_retries,
            http_client=netguard.http_client(
                openai.DefaultAsyncHttpxClient, openai.DEFAULT_CONNECTION_LIMITS
            ),
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        return stream_with_text_fallback(self._stream, request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.max_tokens is not None:
            # Only a budgeted key's turn has a cap (what its budget has left,
            # api_manager.budget); otherwise the model's own maximum applies, as it did before
            # budgets: a fixed cap would cut long replies and starve reasoning models, whose
            # cap also covers their hidden reasoning.
            body[output_cap_field(self.config.base_url)] = request.max_tokens
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
        calls: dict[int, dict[str, str]] = {}
        started = False
        try:
            # The SDK sends the request (retrying connection errors, 429 and 5xx up to
            # max_retries times, never once the response has started) and raises its errors for
            # a failed status; we read the raw event stream, since building an SDK model for
            # every piece costs more than the rest of the stream (measured: bench/RESULTS.md).
            # The body goes through the client's documented `post` for "undocumented
            # endpoints" rather than `chat.completions.create`, which first walks the whole
            # body (every message of the history) against the parameters' type hints to
            # rename and convert fields: ours are plain JSON already, and that walk was the
            # largest part of building the request (bench/RESULTS.md, "A leaner turn start").
            stream = await self.client().post(
                "/chat/completions",
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
            )
            async with stream:
                started = True
                async for _event, data in sse_events(stream.response.aiter_lines()):
                    if data == "[DONE]":
                        break
                    if not isinstance(data, dict) or data.get("error"):
                        raise ProviderError(
                            _("%(provider)s sent an error in the middle of the reply.")
                            % {"provider": LABEL}
                        )
                    usage = data.get("usage")
                    if usage:
                        yield Chunk(
                            usage=Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
                        )
                    for choice in data.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield Chunk(text=delta["content"])
                        for part in delta.get("tool_calls") or ():
                            call = calls.setdefault(
                                part.get("index", 0), {"id": "", "name": "", "arguments": ""}
                            )
                            if part.get("id"):
                                call["id"] = part["id"]
                            function = part.get("function") or {}
                            call["name"] += function.get("name") or ""
                            call["arguments"] += function.get("arguments") or ""
            for call in calls.values():
                try:
                    arguments = json.loads(call["arguments"] or "{}")
                # Nested deeper than the parser goes is RecursionError: bad JSON all the same (the
                # card is refused), not a failure of the whole reply.
                except (json.JSONDecodeError, RecursionError):
                    arguments = {"_raw": call["arguments"]}
                yield Chunk(tool_call=ToolCall(call["id"], call["name"], arguments))
        except Exception as exc:
            raise (mid_stream_error(exc) if started else map_error(exc)) from None

    async def list_models(self) -> list[str]:
        try:
            return sorted([model.id async for model in self.client().models.list()])
        except Exception as exc:
            raise map_error(exc) from None
