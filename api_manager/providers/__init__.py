"""The provider service layer: every AI call goes through here.

`get_provider(config)` returns the adapter for `config.provider` (`openai` or `anthropic`).
"""

from __future__ import annotations

from api_manager.providers.anthropic import AnthropicProvider
from api_manager.providers.base import (
    AuthError,
    BadRequestError,
    ChatRequest,
    Chunk,
    Provider,
    ProviderConfig,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    ToolCall,
    ToolSpec,
    Usage,
)
from api_manager.providers.openai import OpenAIProvider

REGISTRY: dict[str, type[Provider]] = {
    OpenAIProvider.name: OpenAIProvider,
    AnthropicProvider.name: AnthropicProvider,
}


def get_provider(config: ProviderConfig) -> Provider:
    try:
        return REGISTRY[config.provider](config)
    except KeyError:
        raise ProviderError(f"Unknown provider {config.provider!r}.") from None


__all__ = [
    "AuthError",
    "BadRequestError",
    "ChatRequest",
    "Chunk",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "RateLimitError",
    "ProviderTimeout",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "get_provider",
]
