"""The provider adapters, through the real async SDKs, against the local fake server."""

from __future__ import annotations

import asyncio
import json

import pytest

from api_manager.providers import (
    AuthError,
    ChatRequest,
    ProviderConfig,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    Usage,
    get_provider,
)
from tests.conftest import ANTHROPIC_SECRET, OPENAI_SECRET

PROVIDERS = ["openai", "anthropic"]


def provider_for(
    fake, name: str, *, secret: str | None = None, timeout: float = 10.0, retries: int = 0
):
    url = fake.openai_url if name == "openai" else fake.anthropic_url
    secret = secret or (OPENAI_SECRET if name == "openai" else ANTHROPIC_SECRET)
    return get_provider(ProviderConfig(name, secret, url, timeout=timeout, max_retries=retries))


async def collect(provider, text: str, **kwargs):
    request = ChatRequest(
        model="test-model", messages=[{"role": "user", "content": text}], **kwargs
    )
    pieces, usage = [], None
    async for chunk in provider.stream(request):
        if chunk.text:
            pieces.append(chunk.text)
        if chunk.usage:
            usage = chunk.usage
    return pieces, usage


@pytest.mark.parametrize("name", PROVIDERS)
async def test_it_streams_text_piece_by_piece_with_exact_usage(fake, name):
    pieces, usage = await collect(provider_for(fake, name), "tell me something")
    assert "".join(pieces) == "Hello! You said: tell me something"
    assert len(pieces) == 6
    assert usage.input_tokens == 3
    assert usage.output_tokens == 6


@pytest.mark.parametrize("name", PROVIDERS)
async def test_the_system_prompt_goes_in_the_providers_own_field(fake, name):
    await collect(provider_for(fake, name), "hi", system="Be brief.")
    body = fake.requests[-1].body
    if name == "openai":
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["stream_options"] == {"include_usage": True}
    else:
        assert body["system"] == "Be brief."
        assert all(m["role"] != "system" for m in body["messages"])
        assert body["max_tokens"] > 0


@pytest.mark.parametrize("name", PROVIDERS)
async def test_it_lists_models(fake, name):
    models = await provider_for(fake, name).list_models()
    assert ("gpt-4o-mini" if name == "openai" else "claude-test-sonnet") in models
    assert fake.requests[-1].flavour == name


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize(
    "directive,error,code",
    [
        ("[[401]]", AuthError, "auth"),
        ("[[403]]", AuthError, "auth"),
        ("[[429]]", RateLimitError, "rate_limit"),
        ("[[500]]", ProviderError, "provider"),
    ],
)
async def test_it_maps_http_failures_to_codes(fake, name, directive, error, code):
    with pytest.raises(error) as caught:
        await collect(provider_for(fake, name), f"{directive} hello")
    assert caught.value.code == code


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_bad_key_is_an_auth_error_that_does_not_echo_the_key(fake, name):
    secret = "sk-bad-0123456789abcdefSECRET" if name == "openai" else "sk-ant-bad-0123456789SECRET"
    with pytest.raises(AuthError) as caught:
        await provider_for(fake, name, secret=secret).list_models()
    assert "SECRET" not in str(caught.value)
    assert "401" in caught.value.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_stream_cut_midway_is_a_provider_error_after_the_first_pieces(fake, name):
    pieces = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in provider_for(fake, name).stream(
            ChatRequest(
                model="m",
                messages=[{"role": "user", "content": "[[cut]] one two three four five six"}],
            )
        ):
            pieces.append(chunk.text)
    assert caught.value.code == "provider"
    assert "lost" in caught.value.message
    assert "".join(pieces).startswith("Hello!")


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_slow_first_token_times_out(fake, name):
    fake.slow_first_token = 2.0
    with pytest.raises(ProviderTimeout) as caught:
        await collect(provider_for(fake, name, timeout=0.5), "[[slow]] hi")
    assert caught.value.code == "timeout"


async def test_an_unreachable_base_url_says_so(settings):
    # Loopback is refused unless allowed (netguard): allow this closed port to reach it.
    settings.PROVIDER_PRIVATE_HOSTS = [*settings.PROVIDER_PRIVATE_HOSTS, "127.0.0.1:9"]
    provider = get_provider(
        ProviderConfig("openai", OPENAI_SECRET, "http://127.0.0.1:9/v1", timeout=2, max_retries=0)
    )
    with pytest.raises(ProviderError) as caught:
        await provider.list_models()
    assert "Could not reach" in caught.value.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_closing_the_stream_early_closes_the_http_stream(fake, name):
    fake.word_delay = 0.05
    stream = provider_for(fake, name).stream(
        ChatRequest(model="m", messages=[{"role": "user", "content": "[[long]]"}])
    )
    async for chunk in stream:
        if chunk.text:
            break
    await stream.aclose()
    assert await asyncio.to_thread(fake.disconnected.wait, 2)
    assert fake.completed_streams == 0


@pytest.mark.parametrize("name", PROVIDERS)
async def test_one_client_is_reused_per_key(fake, name):
    first = provider_for(fake, name).client()
    second = provider_for(fake, name).client()
    assert first is second
    other = provider_for(
        fake,
        name,
        secret=("sk-proj-other0000000001" if name == "openai" else "sk-ant-other000000001"),
    ).client()
    assert other is not first


@pytest.mark.parametrize("name", PROVIDERS)
async def test_an_error_event_in_the_middle_of_the_stream_is_a_provider_error(fake, name):
    pieces = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in provider_for(fake, name).stream(
            ChatRequest(
                model="m", messages=[{"role": "user", "content": "[[error-event]] a b c d e f"}]
            )
        ):
            pieces.append(chunk.text)
    assert caught.value.code == "provider"
    assert "sent an error in the middle of the reply" in caught.value.message
    assert "".join(pieces).startswith("Hello!")


async def test_the_event_parser_reads_both_wire_formats():
    from api_manager.providers.base import sse_events

    async def lines():
        for line in [
            'data: {"a": 1}',
            "",
            "event: message_stop",
            'data: {"type": "message_stop"}',
            "",
            ": comment",
            "data: [DONE]",
            "",
        ]:
            yield line

    assert [e async for e in sse_events(lines())] == [
        ("", {"a": 1}),
        ("message_stop", {"type": "message_stop"}),
        ("", "[DONE]"),
    ]


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_transport_errors_are_recognised_by_class_not_by_name(sdk):
    """httpx2's exceptions are matched with isinstance: an unrelated class that only shares a
    name is an unexpected failure, not a timeout or a lost connection."""
    import importlib

    import httpx2

    from api_manager.providers.base import sdk_error

    module = importlib.import_module(sdk)

    class TimeoutException(Exception):
        pass

    class TransportError(Exception):
        pass

    assert sdk_error(httpx2.ReadTimeout("slow"), module, "X").code == "timeout"
    assert "Could not reach" in sdk_error(httpx2.ConnectError("no"), module, "X").message
    cut = sdk_error(httpx2.RemoteProtocolError("cut"), module, "X", mid_stream=True)
    assert "lost" in cut.message
    for impostor in (TimeoutException("x"), TransportError("x")):
        error = sdk_error(impostor, module, "X")
        assert error.code == "provider"
        assert "Unexpected" in error.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_usage_the_provider_has_not_reported_is_none_not_zero(fake, name):
    """A stream cut before the final usage report: OpenAI has said nothing; Anthropic has said
    the input tokens (message_start) but not yet the output. Unknown is None, never a guess."""
    usages = []
    with pytest.raises(ProviderError):
        async for chunk in provider_for(fake, name).stream(
            ChatRequest(model="m", messages=[{"role": "user", "content": "[[cut]] one two"}])
        ):
            if chunk.usage is not None:
                usages.append(chunk.usage)
    if name == "openai":
        assert usages == []
    else:
        assert usages == [Usage(input_tokens=3, output_tokens=None)]


async def streams_at_the_provider(fake, provider, marker: str, streams: int, seconds: float) -> int:
    """Start `streams` slow streams of `provider` at once; how many reached the fake within
    `seconds` (sooner once all have)."""
    tasks = [asyncio.create_task(collect(provider, marker)) for _ in range(streams)]

    def arrived() -> int:
        return sum(marker in json.dumps(request.body) for request in list(fake.requests))

    try:
        for _ in range(int(seconds / 0.05)):
            if arrived() >= streams:
                break
            await asyncio.sleep(0.05)
        return arrived()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("name", PROVIDERS)
async def test_one_client_holds_more_than_a_hundred_streams_at_once(fake, name):
    """One key's client takes as many streams at once as its SDK allows (the SDK's
    DEFAULT_CONNECTION_LIMITS, 1,000), not httpx's default pool of 100 that a client given its
    own transport falls back to (then the 101st reply of a worker waited for another to end)."""
    fake.slow_first_token = 8.0  # none ends while they are counted
    provider = provider_for(fake, name, timeout=30)
    assert await streams_at_the_provider(fake, provider, f"[[slow]] hold {name}", 120, 6) == 120


@pytest.mark.parametrize("name", PROVIDERS)
async def test_the_connections_one_client_holds_are_provider_max_connections(fake, name, settings):
    """The pool's size is settings.PROVIDER_MAX_CONNECTIONS (default 10,000), not the SDK's
    1,000: with two workers and 2,000 replies on one key, the worker that took more than
    1,000 held the rest in its pool (bench/RESULTS.md, idle streams). Shown small: with 5,
    the 6th to 8th streams wait (the first five arrive at once, the rest not before 4 s)."""
    settings.PROVIDER_MAX_CONNECTIONS = 5
    fake.slow_first_token = 4.0
    provider = provider_for(fake, name, timeout=30)
    assert await streams_at_the_provider(fake, provider, f"[[slow]] capped {name}", 8, 2) == 5
