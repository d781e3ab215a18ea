"""Anthropic adapter (and Anthropic-compatible endpoints) over the async `anthropic` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from api_manager.providers.base import (
    ChatRequest,
    Chunk,
    Provider,
    ProviderError,
    ToolCall,
    Usage,
    sdk_error,
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
            messages.append({"role": message["role"], "content": message["content"]})
    return _join_same_roles(messages)


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
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_anthropic_messages(request),
            "max_tokens": request.max_tokens,
            "stream": True,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        try:
            stream = await self.client().messages.create(**kwargs)
        except Exception as exc:
            raise map_error(exc) from None
        input_tokens = output_tokens = 0
        tool_blocks: dict[int, dict[str, str]] = {}
        try:
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    usage = event.message.usage
                    input_tokens = usage.input_tokens or 0
                    output_tokens = usage.output_tokens or 0
                    # Reported at once, so a stream stopped early still knows its input tokens.
                    yield Chunk(usage=Usage(input_tokens, output_tokens, estimated=True))
                elif kind == "content_block_start" and event.content_block.type == "tool_use":
                    block = event.content_block
                    tool_blocks[event.index] = {"id": block.id, "name": block.name, "json": ""}
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta" and delta.text:
                        yield Chunk(text=delta.text)
                    elif delta.type == "input_json_delta" and event.index in tool_blocks:
                        tool_blocks[event.index]["json"] += delta.partial_json
                elif kind == "content_block_stop" and event.index in tool_blocks:
                    block = tool_blocks.pop(event.index)
                    try:
                        arguments = json.loads(block["json"] or "{}")
                    except json.JSONDecodeError:
                        arguments = {"_raw": block["json"]}
                    yield Chunk(tool_call=ToolCall(block["id"], block["name"], arguments))
                elif kind == "message_delta" and event.usage is not None:
                    output_tokens = event.usage.output_tokens or output_tokens
                    if getattr(event.usage, "input_tokens", None):
                        input_tokens = event.usage.input_tokens
                    yield Chunk(usage=Usage(input_tokens, output_tokens))
        except Exception as exc:
            raise mid_stream_error(exc) from None
        finally:
            await stream.close()

    async def list_models(self) -> list[str]:
        try:
            return sorted([model.id async for model in self.client().models.list(limit=100)])
        except Exception as exc:
            raise map_error(exc) from None
