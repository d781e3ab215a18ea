"""The query action: parsed, never evaluated; allow-listed; read-only; owner-scoped; audited."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client

from ai_chat.models import ActionLog, Conversation, Message, Role
from api_manager.models import ProviderKey, UsageRecord
from tests.conftest import make_key, signed_in, user_with_permissions

URL = "/api/actions/query/"
# Queries run on their own read-only connection, which only sees committed rows: these tests
# commit their data (transactional) and may use both aliases.
QUERY_DATABASES = ["default", "readonly"]
pytestmark = pytest.mark.django_db(transaction=True, databases=QUERY_DATABASES)


@pytest.fixture
def querier(db):
    return user_with_permissions("carol", "run_query")


@pytest.fixture
def querier_client(querier):
    return signed_in(querier)


@pytest.fixture
def data(querier, bob):
    for owner in (querier, bob):
        conversation = Conversation.objects.create(owner=owner, title=f"{owner.username}'s chat")
        for i in range(3):
            Message.objects.create(
                conversation=conversation,
                role=Role.USER if i % 2 == 0 else Role.ASSISTANT,
                content=f"{owner.username} says {i}",
            )
    make_key(bob, label="bob key")
    UsageRecord.objects.create(
        user=bob, provider="openai", model="gpt-4o", input_tokens=3, output_tokens=4
    )


def ask(client, code=None, **body):
    if code is not None:
        body["code"] = code
    response = client.post(URL, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def snapshot():
    """Row counts and password hashes, to prove a refused query changed nothing."""
    return (
        User.objects.count(),
        sorted(User.objects.values_list("password", flat=True)),
        Conversation.objects.count(),
        Message.objects.count(),
        ProviderKey.objects.count(),
        sorted(Message.objects.values_list("content", flat=True)),
    )


def test_the_contract_example_runs_and_answers_columns_and_rows(querier_client, data):
    status, body = ask(
        querier_client,
        'Message.objects.filter(role="assistant").order_by("-created_at").values("id", "created_at")[:20]',
    )
    assert status == 200, body
    assert body["columns"] == ["id", "created_at"]
    assert body["count"] == 1  # carol's one assistant message; bob's are not hers
    assert body["truncated"] is False


def test_a_grouped_count_with_relations_and_annotations(querier_client, data):
    status, body = ask(
        querier_client,
        'Message.objects.filter(role="user").values("conversation__title").annotate(n=Count("id")).order_by("-n")[:10]',
    )
    assert status == 200, body
    assert body["columns"] == ["conversation__title", "n"]
    assert body["rows"] == [["carol's chat", 2]]


def test_a_superuser_sees_everyones_rows(admin_user, data):
    client = Client()
    client.force_login(admin_user)
    status, body = ask(client, "Message.objects.count()")
    assert status == 200
    assert body["rows"] == [[6]]


@pytest.mark.parametrize(
    "code,expected",
    [
        ("Message.objects.count()", [[3]]),
        ('Message.objects.filter(Q(role="user") | Q(content__icontains="says 1")).count()', [[3]]),
        ('Message.objects.exclude(~Q(role="assistant")).exists()', [[True]]),
        ('Conversation.objects.aggregate(total=Count("messages"))', [[3]]),
        (
            'Message.objects.filter(created_at__date__gte="2000-01-01").values_list("role", flat=True).distinct().order_by("role")',
            [["assistant"], ["user"]],
        ),
        ('User.objects.values("username", "is_active")', [["carol", True]]),
        (
            "Message.objects.filter(id__in=[1, 2, 3, -1]).filter(total_ms__isnull=True).count()",
            None,
        ),
        ('UsageRecord.objects.aggregate(tokens=Sum("input_tokens"))', [[None]]),
        ('Message.objects.filter(id=F("id")).count()', [[3]]),
    ],
)
def test_the_grammar(querier_client, data, code, expected):
    status, body = ask(querier_client, code)
    assert status == 200, body
    if expected is not None:
        assert body["rows"] == expected


REFUSED = [
    ("Message.objects.all().delete()", "`delete` is not allowed"),
    ('Message.objects.update(content="pwned")', "`update` is not allowed"),
    ('Message.objects.raw("SELECT * FROM auth_user")', "`raw` is not allowed"),
    ('Message.objects.extra(where=["1=1"])', "`extra` is not allowed"),
    ('Message.objects.create(content="x")', "`create` is not allowed"),
    ("Message.objects.get(id=1).save()", "`save` is not allowed"),
    ("__import__('os').system('touch /tmp/pwned')", "`system` is not allowed"),
    ("__import__('os')", "Calling `__import__"),
    ("getattr(Message, 'objects')", "Calling `getattr"),
    ("Message.objects.__class__", "starts with `<Model>.objects`"),
    ("Message.__subclasses__()", "`__subclasses__` is not allowed"),
    (
        'Message.objects.filter(conversation__owner__password__startswith="pbkdf2")',
        "`password` is not allowed",
    ),
    ('Conversation.objects.values("owner__password")', "`password` is not allowed"),
    ('User.objects.filter(password=F("password"))', "`password` is not allowed"),
    ('Message.objects.filter(id=F("conversation__owner__password"))', "`password` is not allowed"),
    ('Message.objects.filter(**{"content": "x"})', "`**kwargs` is not allowed"),
    ('Message.objects.filter(content__regex="^a")', "not allowed"),
    ("Message.objects.all()[:1000000000]", "too large"),
    ("Message.objects.all()[::2]", "slice step"),
    ("Message.objects.all()[-5:]", "whole numbers"),
    ('ProviderKey.objects.values("secret_encrypted")', "model `ProviderKey` is not allowed"),
    ('UsageRecord.objects.values("key__secret_encrypted")', "not allowed"),
    ('Session.objects.values("session_data")', "model `Session` is not allowed"),
    ('Message.objects.filter(content=open("/etc/passwd").read())', "not allowed"),
    ("Message.objects.filter(content=1 + 1)", "not allowed"),
    ("Message.objects.filter(content=x)", "not allowed"),
    ("Message.objects.annotate(n=Lower('content'))", "Count, Sum, Avg, Min or Max"),
    ("Message.objects.order_by('?')", "order_by takes field names"),
    ("Message.objects.values('conversation__owner__email')", "`email` of User is not allowed"),
    ("Message.objects.filter(_state='x')", "not allowed"),
    ("Message.objects.count().real", "starts with `<Model>.objects`"),
    ("import os", "not valid Python"),
    ("Message.objects.filter(content='a'); Message.objects.all().delete()", "not valid Python"),
    ("lambda: 1", "starts with `<Model>.objects`"),
    ("Message.objects.count(); 1", "not valid Python"),
    ("[m for m in Message.objects.all()]", "starts with `<Model>.objects`"),
]


@pytest.mark.parametrize("code,message", REFUSED)
def test_anything_outside_the_grammar_is_refused_and_changes_nothing(
    querier_client, querier, data, code, message
):
    before = snapshot()
    status, body = ask(querier_client, code)
    assert status == 400, body
    assert message in body["error"]
    assert snapshot() == before
    log = ActionLog.objects.get()
    assert log.outcome == "refused"
    assert log.user == querier
    assert json.loads(log.input) == {"code": code}


def test_the_undocumented_spec_input_is_gone(querier_client, data):
    # #8.7 / #9.6: only `code` is offered; a JSON spec is refused (and audited), not run.
    status, body = ask(
        querier_client,
        spec={
            "model": "Message",
            "steps": [{"method": "filter", "kwargs": {"role": "user"}}, {"method": "count"}],
        },
    )
    assert status == 400
    assert "`code`" in body["error"]
    status, body = ask(querier_client, "Message.objects.count()", spec={"model": "Message"})
    assert status == 400
    assert [log.outcome for log in ActionLog.objects.all()] == ["refused", "refused"]


def test_without_the_permission_it_is_forbidden_and_logged(alice_client, alice, data):
    status, body = ask(alice_client, "Message.objects.count()")
    assert status == 403
    assert ActionLog.objects.get().outcome == "forbidden"


def test_the_row_cap_marks_the_answer_truncated(querier_client, querier, settings):
    settings.ACTIONS_QUERY_MAX_ROWS = 5
    conversation = Conversation.objects.create(owner=querier, title="many")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user", content=str(i)) for i in range(12)
    )
    status, body = ask(querier_client, 'Message.objects.values("id")')
    assert status == 200
    assert body["count"] == 5
    assert body["truncated"] is True
    assert ActionLog.objects.get().rows == 5


def test_the_size_cap_truncates_the_answer(querier_client, querier, settings):
    settings.ACTIONS_QUERY_MAX_BYTES = 2000
    conversation = Conversation.objects.create(owner=querier, title="big")
    Message.objects.bulk_create(
        Message(conversation=conversation, role="user", content="x" * 500) for _ in range(10)
    )
    status, body = ask(querier_client, 'Message.objects.values("content")')
    assert status == 200
    assert body["truncated"] is True
    assert 0 < body["count"] < 10
    assert len(json.dumps(body)) <= 2200


def test_the_query_connection_refuses_writes_even_if_the_validator_were_bypassed(querier, data):
    from django.db import DatabaseError, connections

    before = snapshot()
    readonly = connections["readonly"]
    with pytest.raises(DatabaseError):
        with transaction.atomic(using="readonly"):
            with readonly.cursor() as cursor:
                cursor.execute("UPDATE auth_user SET password = 'pwned'")
    assert snapshot() == before


def test_a_bad_body_is_refused_and_logged(querier_client):
    response = querier_client.post(URL, "{not json", content_type="application/json")
    assert response.status_code == 400
    assert ActionLog.objects.get().outcome == "refused"


def test_the_audit_log_cannot_be_edited(querier_client, data):
    ask(querier_client, "Message.objects.count()")
    log = ActionLog.objects.get()
    log.outcome = "ok"
    with pytest.raises(PermissionError):
        log.save()
    with pytest.raises(PermissionError):
        log.delete()
