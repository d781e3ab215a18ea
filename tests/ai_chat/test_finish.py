"""Saving a reply: usage counted in one place, slow work before one short write transaction."""

from __future__ import annotations

import pytest
from django.db import connection

from ai_chat import services
from ai_chat.models import Message, Status
from api_manager.models import ModelPrice
from api_manager.providers import ChatRequest, ProviderError, ToolCall, Usage
from tests.conftest import make_key, user_with_permissions

REQUEST = ChatRequest(model="m", messages=[{"role": "user", "content": "x" * 40}], system="y" * 4)


def test_reported_counts_are_kept_and_not_marked_estimated():
    counted = services.count_usage(REQUEST, "some reply", Usage(7, 9))
    assert counted == services.CountedUsage(7, 9, estimated=False)


def test_a_reported_zero_is_a_count_not_unknown():
    counted = services.count_usage(REQUEST, "", Usage(7, 0))
    assert counted == services.CountedUsage(7, 0, estimated=False)


def test_unknown_output_is_estimated_from_the_text_and_marked():
    # 12 characters of reply: about three tokens.
    counted = services.count_usage(REQUEST, "a" * 12, Usage(7, None))
    assert counted == services.CountedUsage(7, 3, estimated=True)


def test_no_report_at_all_estimates_both_from_what_was_sent_and_received():
    # 40 characters of message + 4 of system prompt: 11 tokens; no reply text: none.
    counted = services.count_usage(REQUEST, "", None)
    assert counted == services.CountedUsage(11, 0, estimated=True)


def start(user, fake, **data):
    make_key(user, fake)
    return services._prepare(user, {"message": "hello", **data})


class Statements:
    """Every statement run, with whether it ran inside a transaction (execute_wrapper)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []

    def __call__(self, execute, sql, params, many, context):
        self.seen.append((sql, connection.in_atomic_block))
        return execute(sql, params, many, context)

    def inside(self) -> list[str]:
        return [sql for sql, atomic in self.seen if atomic]

    def outside(self) -> list[str]:
        return [sql for sql, atomic in self.seen if not atomic]


@pytest.mark.django_db(transaction=True)
def test_the_transaction_only_writes(alice, fake):
    """Markdown, the cards and the price lookup come first; the transaction only writes."""
    ModelPrice.objects.create(
        provider="openai", model="gpt", input_per_million=1, output_per_million=2
    )
    turn = start(alice, fake)
    statements = Statements()
    with connection.execute_wrapper(statements):
        services._finish(turn, "**Hi** there", Status.COMPLETE, Usage(5, 8), None, 12, 34)
    inside = statements.inside()
    assert inside, statements.seen
    verbs = {sql.split(None, 1)[0].upper() for sql in inside}
    # Savepoints come from the usage rollups' create-on-miss; they are not reads.
    assert verbs <= {"INSERT", "UPDATE", "SAVEPOINT", "RELEASE", "ROLLBACK"}, inside
    assert any("api_manager_modelprice" in sql for sql in statements.outside())


def test_what_was_saved_is_returned(alice, fake):
    turn = start(alice, fake)
    saved = services._finish(turn, "**Hi** there", Status.COMPLETE, Usage(5, 8), None, 12, 34)
    reply = Message.objects.select_related("usage").get(pk=turn.reply.pk)
    assert saved.message_id == reply.pk
    assert saved.status == reply.status == Status.COMPLETE
    assert saved.html == reply.content_html and "<strong>Hi</strong>" in saved.html
    assert saved.usage == services.CountedUsage(5, 8, estimated=False)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 8)
    assert not reply.usage.estimated
    assert (saved.first_token_ms, saved.total_ms) == (12, 34)
    assert saved.tool_calls == [] and saved.cards_html == ""
    # The turn is not used to hand results back: its reply row is as it was started.
    assert turn.reply.status == Status.STREAMING and turn.reply.usage_id is None
    assert turn.reply.usage is None and turn.reply.content == ""


def test_a_failed_reply_records_the_error_on_the_key_and_an_estimate(alice, fake):
    turn = start(alice, fake)
    error = ProviderError("It broke.")
    saved = services._finish(turn, "Hel", Status.ERROR, None, error, None, 50)
    reply = Message.objects.select_related("usage", "conversation__key").get(pk=saved.message_id)
    assert reply.status == Status.ERROR
    assert reply.error_message == "It broke."
    assert reply.usage.estimated and reply.usage.status == "error"
    assert reply.conversation.key.last_error == "It broke."


@pytest.mark.django_db(transaction=True)
def test_approval_cards_are_built_before_the_transaction(fake, tmp_path, settings):
    """An append card reads the file for its diff (and audits the preview): all before the
    transaction, which still only writes; the card comes back rendered."""
    settings.FILE_ACTIONS_ROOT = str(tmp_path)
    (tmp_path / "notes.md").write_text("# Notes\n")
    operator = user_with_permissions("olga", "write_files")
    turn = start(operator, fake)
    call = ToolCall("call_1", "append_to_file", {"path": "notes.md", "content": "more\n"})
    statements = Statements()
    with connection.execute_wrapper(statements):
        saved = services._finish(turn, "", Status.COMPLETE, Usage(5, 8), None, 1, 2, [call])
    verbs = {sql.split(None, 1)[0].upper() for sql in statements.inside()}
    assert verbs <= {"INSERT", "UPDATE", "SAVEPOINT", "RELEASE", "ROLLBACK"}, statements.inside()
    assert [card["state"] for card in saved.tool_calls] == ["pending"]
    assert "+more" in saved.tool_calls[0]["diff"]
    assert 'data-call-id="call_1"' in saved.cards_html
    assert Message.objects.get(pk=saved.message_id).tool_calls == saved.tool_calls


@pytest.mark.django_db(transaction=True)
def test_saving_a_reply_with_a_budget_costs_nine_statements(alice, fake):
    """Each rollup and counter change is one upsert, the settle one DELETE and one upsert."""
    make_key(alice, fake, monthly_token_budget=1_000_000)
    first = services._prepare(alice, {"message": "warm"})  # makes the rollup and counter rows
    services._finish(first, "x", Status.COMPLETE, Usage(1, 1), None, 1, 2)
    turn = services._prepare(alice, {"message": "hello"})
    assert turn.reservation is not None
    statements = Statements()
    with connection.execute_wrapper(statements):
        services._finish(turn, "Hi", Status.COMPLETE, Usage(5, 8), None, 12, 34)
    sent = [sql for sql, _ in statements.seen if not sql.upper().startswith(("BEGIN", "COMMIT"))]
    # 1 the price (before the transaction); 2 the usage record, 3 its daily rollup, 4 the
    # month counter's `used`, 5 the reservation deleted, 6 the counter's `reserved`, 7 the
    # reply, 8 the conversation's time, 9 the key's last use
    assert len(sent) == 9, "\n".join(sql[:120] for sql in sent)
