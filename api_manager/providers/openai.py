"""OpenAI adapter (and any OpenAI-compatible endpoint) over the async `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai

from api_manager.providers.base import (
    ChatRequest,
    Chunk,
    Provider,
    ProviderError,
    ToolCall,
    Usage,
    sdk_error,
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
            messages.append({"role": message["role"], "content": message["content"]})
    return messages


class OpenAIProvider(Provider):
    name = "openai"

    def make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            timeout=openai.Timeout(self.config.timeout, connect=min(10.0, self.config.timeout)),
            max_retries=self.config.max_retries,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
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
        try:
            # The SDK retries this call (connection errors, 429, 5xx) up to max_retries
            # times; once the response has started nothing is retried.
            stream = await self.client().chat.completions.create(**kwargs)
        except Exception as exc:
            raise map_error(exc) from None
        calls: dict[int, dict[str, str]] = {}
        try:
            async for event in stream:
                if event.usage is not None:
                    yield Chunk(
                        usage=Usage(
                            event.usage.prompt_tokens or 0, event.usage.completion_tokens or 0
                        )
                    )
                for choice in event.choices:
                    delta = choice.delta
                    if delta is None:
                        continue
                    if delta.content:
                        yield Chunk(text=delta.content)
                    for part in delta.tool_calls or []:
                        call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                        if part.id:
                            call["id"] = part.id
                        if part.function is not None:
                            call["name"] += part.function.name or ""
                            call["arguments"] += part.function.arguments or ""
            for call in calls.values():
                try:
                    arguments = json.loads(call["arguments"] or "{}")
                except json.JSONDecodeError:
                    arguments = {"_raw": call["arguments"]}
                yield Chunk(tool_call=ToolCall(call["id"], call["name"], arguments))
        except Exception as exc:
            raise mid_stream_error(exc) from None
        finally:
            await stream.close()

    async def list_models(self) -> list[str]:
        try:
            return sorted([model.id async for model in self.client().models.list()])
        except Exception as exc:
            raise map_error(exc) from None
