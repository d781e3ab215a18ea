"""OpenAI adapter (and any OpenAI-compatible endpoint) over the async `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

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


class OpenAIProvider(Provider):
    name = "openai"

    def make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            timeout=openai.Timeout(self.config.timeout, connect=min(10.0, self.config.timeout)),
            max_retries=self.config.max_retries,
            http_client=netguard.http_client(openai.DefaultAsyncHttpxClient),
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        return stream_with_text_fallback(self._stream, request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
            # The output cap: a budgeted key's turn lowers it to what its budget has left
            # (api_manager.budget). `max_tokens` is deprecated and refused by reasoning models.
            "max_completion_tokens": request.max_tokens,
        }
        if request.tools:
            kwargs["tools"] = [
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
            async with self.client().chat.completions.with_streaming_response.create(
                **kwargs
            ) as response:
                started = True
                async for _event, data in sse_events(response.iter_lines()):
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
