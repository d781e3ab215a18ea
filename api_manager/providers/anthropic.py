"""Anthropic adapter (and Anthropic-compatible endpoints) over the async `anthropic` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
from django.conf import settings
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

LABEL = "Anthropic"


def map_error(exc: Exception) -> ProviderError:
    return sdk_error(exc, anthropic, LABEL)


def mid_stream_error(exc: Exception) -> ProviderError:
    return sdk_error(exc, anthropic, LABEL, mid_stream=True)


def to_anthropic_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """Anthropic wants tool results as user content blocks and tool calls as tool_use blocks."""
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message["role"] == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": message["content"],
            }
            messages.append({"role": "user", "content": [block]})
        elif message.get("tool_calls"):
            blocks: list[dict[str, Any]] = []
            if message.get("content"):
                blocks.append({"type": "text", "text": message["content"]})
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message["tool_calls"]
            ]
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": message["role"], "content": _content(message["content"])})
    return _join_same_roles(messages)


def _content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A turn's content in Anthropic's blocks: `image` and `document` with a base64 source."""
    if isinstance(content, str):
        return content
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("image", "document"):
            source = {"type": "base64", "media_type": part["media_type"], "data": part["data"]}
            block: dict[str, Any] = {"type": kind, "source": source}
            if kind == "document":
                block["title"] = part["name"]
            blocks.append(block)
        else:
            blocks.append({"type": "text", "text": part.get("text", "")})
    return blocks


def _join_same_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic wants turns to alternate: join neighbours of one role into one block list."""
    joined: list[dict[str, Any]] = []
    for message in messages:
        if joined and joined[-1]["role"] == message["role"]:
            joined[-1]["content"] = _blocks(joined[-1]["content"]) + _blocks(message["content"])
        else:
            joined.append(dict(message))
    return joined


def _blocks(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


class AnthropicProvider(Provider):
    name = "anthropic"

    def make_client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            timeout=anthropic.Timeout(self.config.timeout, connect=min(10.0, self.config.timeout)),
            max_retries=self.config.max_retries,
            http_client=netguard.http_client(
                anthropic.DefaultAsyncHttpxClient, anthropic.DEFAULT_CONNECTION_LIMITS
            ),
        )

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        return stream_with_text_fallback(self._stream, request)

    async def _stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_anthropic_messages(request),
            # Required by the Messages API: the budget's cap, or the panel's default one.
            "max_tokens": request.max_tokens
            if request.max_tokens is not None
            else settings.CHAT_MAX_OUTPUT_TOKENS,
            "stream": True,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        input_tokens: int | None = None
        output_tokens: int | None = None
        tool_blocks: dict[int, dict[str, str]] = {}
        started = False
        try:
            # As in the OpenAI adapter: the SDK sends (and retries) the request and raises its
            # errors; we read the raw event stream instead of building a model per event.
            async with self.client().messages.with_streaming_response.create(**kwargs) as response:
                started = True
                async for event, data in sse_events(response.iter_lines()):
                    if not isinstance(data, dict):
                        continue
                    kind = data.get("type") or event
                    if kind == "error":
                        raise ProviderError(
                            _("%(provider)s sent an error in the middle of the reply.")
                            % {"provider": LABEL}
                        )
                    if kind == "message_start":
                        usage = (data.get("message") or {}).get("usage") or {}
                        input_tokens = usage.get("input_tokens")
                        # Reported at once, so a stream stopped early still knows its input
                        # tokens. message_start's output count is a placeholder, not a count:
                        # the output is unknown until message_delta.
                        yield Chunk(usage=Usage(input_tokens, None))
                    elif kind == "content_block_start":
                        block = data.get("content_block") or {}
                        if block.get("type") == "tool_use":
                            tool_blocks[data.get("index", 0)] = {
                                "id": block.get("id", ""),
                                "name": block.get("name", ""),
                                "json": "",
                            }
                    elif kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield Chunk(text=delta["text"])
                        elif (
                            delta.get("type") == "input_json_delta"
                            and data.get("index", 0) in tool_blocks
                        ):
                            tool_blocks[data.get("index", 0)]["json"] += (
                                delta.get("partial_json") or ""
                            )
                    elif kind == "content_block_stop" and data.get("index", 0) in tool_blocks:
                        block = tool_blocks.pop(data.get("index", 0))
                        try:
                            arguments = json.loads(block["json"] or "{}")
                        # Nested deeper than the parser goes is RecursionError: bad JSON all the same (the
                        # card is refused), not a failure of the whole reply.
                        except (json.JSONDecodeError, RecursionError):
                            arguments = {"_raw": block["json"]}
                        yield Chunk(tool_call=ToolCall(block["id"], block["name"], arguments))
                    elif kind == "message_delta" and data.get("usage"):
                        usage = data["usage"]
                        if usage.get("output_tokens") is not None:
                            output_tokens = usage["output_tokens"]
                        if usage.get("input_tokens") is not None:
                            input_tokens = usage["input_tokens"]
                        yield Chunk(usage=Usage(input_tokens, output_tokens))
                    elif kind == "message_stop":
                        break
        except Exception as exc:
            raise (mid_stream_error(exc) if started else map_error(exc)) from None

    async def list_models(self) -> list[str]:
        try:
            return sorted([model.id async for model in self.client().models.list(limit=100)])
        except Exception as exc:
            raise map_error(exc) from None
