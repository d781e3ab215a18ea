"""Bad input is a 400 with a clear message, never a 500, and every attempt leaves an audit row
(issue #8.6)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from ai_chat.actions import query
from ai_chat.models import ActionLog, Conversation, Message, Role
from tests.conftest import signed_in

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "readonly"])
QUERY = "/api/actions/query/"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def operator_client(operator) -> Client:
    client = signed_in(operator)
    client.raise_request_exception = False  # a crash must show as a 500 here, not raise
    return client


@pytest.fixture
def data(operator):
    conversation = Conversation.objects.create(owner=operator, title="chat")
    Message.objects.create(conversation=conversation, role=Role.USER, content="hello")


BAD_QUERIES = [
    ('Message.objects.filter(id="abc")', "expected a number"),
    ('Message.objects.filter(created_at__gt="notadate").count()', "cannot run"),
    ("Message.objects.filter(id__in=5)", "takes a list"),
    ("Message.objects.filter(id__range=[1])", "list of two values"),
    ('Message.objects.filter(id__range=["a", "b"])', "expected a number"),
    ('User.objects.values("username__id")', "`username` is not a relation"),
    ("Message.objects.filter(id=1e999)", "not finite"),
    ("Message.objects.filter(id=99999999999999999999999)", "too large"),
    ('Message.objects.annotate(conversation_id=Count("id"))', "already a field name"),
    ('Conversation.objects.annotate(messages=Count("id"))', "already a field name"),
    ("Message.objects.filter(" + "~" * 3000 + 'Q(role="user"))', "nested"),
    ("Message.objects.filter(id=" + "-" * 3000 + "1)", "nested"),
    ("Message.objects.filter(" + "(" * 1000 + 'Q(role="user")' + ")" * 1000 + ")", "nested"),
    ('Message.objects.filter(content="\ud800")', "not valid text"),
    (
        "Message.objects.filter(" + " | ".join(f"Q(id={i})" for i in range(300)) + ")",
        "more than 200 conditions",
    ),
]


@pytest.mark.parametrize("code,message", BAD_QUERIES)
def test_a_bad_query_is_a_400_with_a_clear_message_and_is_audited(
    operator_client, operator, data, code, message
):
    body = json.dumps({"code": code})  # ensure_ascii: a lone surrogate travels as \\ud800
    response = operator_client.post(QUERY, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    log = ActionLog.objects.get()
    assert (log.kind, log.outcome, log.user) == ("query", "refused", operator)
    assert log.error == response.json()["error"]


def test_many_conditions_are_built_in_one_node_not_pairwise(operator, data):
    first = Message.objects.get().pk  # ids do not start at 1 on PostgreSQL
    ids = range(first, first + 200)
    code = "Message.objects.filter(" + " | ".join(f"Q(id={i})" for i in ids) + ").count()"
    spec = query.parse(code)
    assert len(spec["steps"][0]["args"][0]["children"]) == 200  # one flat OR, not 199 nested
    where = query.build(spec, operator).queryset.query.where
    assert len(where.children[-1].children) == 200  # one OR node holding every condition
    assert query.run(query.parse(code), operator).rows == [[1]]


@pytest.mark.parametrize(
    "url,kind",
    [
        (QUERY, "query"),
        ("/api/actions/append/", "append"),
        ("/api/actions/append/confirm/", "confirm"),
    ],
)
@pytest.mark.parametrize(
    "body,message",
    [
        (DEEP, "nested too deeply"),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "nested too deeply"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_a_bad_body_is_a_400_on_every_action_endpoint_and_is_audited(
    operator_client, operator, url, kind, body, message
):
    response = operator_client.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    log = ActionLog.objects.get()
    assert (log.kind, log.outcome, log.user) == (kind, "refused", operator)
    assert len(log.input) <= 2000


@pytest.mark.parametrize("body", [DEEP, "{not json", "[1]"])
def test_a_bad_body_on_the_stream_endpoint_is_a_400(operator_client, body):
    response = operator_client.post("/ai-chat/stream/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]


def test_an_unexpected_crash_is_audited_as_failed(operator_client, operator, data, monkeypatch):
    def crash(code, user):
        raise RuntimeError("a bug")

    monkeypatch.setattr(query, "execute", crash)
    response = operator_client.post(
        QUERY, json.dumps({"code": "Message.objects.count()"}), content_type="application/json"
    )
    assert response.status_code == 500
    log = ActionLog.objects.get()
    assert (log.kind, log.outcome) == ("query", "error")
    assert "RuntimeError: a bug" in log.error


@pytest.fixture
def reply(operator):
    conversation = Conversation.objects.create(owner=operator, title="cards")
    return Message.objects.create(
        conversation=conversation,
        role=Role.ASSISTANT,
        tool_calls=[
            {
                "id": "call_refused",
                "name": "append_to_file",
                "arguments": {"path": "../etc/passwd", "content": "x"},
                "state": "refused",
                "error": "Empty, `.` and `..` path segments are not allowed.",
            },
            {"id": "call_done", "name": "run_query", "arguments": {}, "state": "done"},
        ],
    )


@pytest.mark.parametrize(
    "call_id,decision,status,audited",
    [
        ("call_refused", "approve", 200, ("confirm", "refused")),
        ("call_refused", "reject", 200, ("confirm", "refused")),
        ("call_unknown", "approve", 404, ("decide", "refused")),
        ("call_unknown", "reject", 404, ("decide", "refused")),
        ("call_done", "approve", 409, ("decide", "conflict")),
        ("call_refused", "maybe", 400, ("decide", "refused")),
    ],
)
def test_deciding_a_refused_unknown_or_decided_card_is_audited(
    operator_client, operator, reply, call_id, decision, status, audited
):
    url = f"/ai-chat/c/{reply.conversation_id}/m/{reply.pk}/actions/{call_id}/"
    response = operator_client.post(url, {"decision": decision})
    assert response.status_code == status, response.content
    log = ActionLog.objects.get()
    assert (log.kind, log.outcome, log.user) == (*audited, operator)
    if status == 200:
        assert response.json()["card"]["state"] == "failed"
        assert Message.objects.filter(role=Role.TOOL, tool_call_id=call_id).count() == 1


@pytest.mark.parametrize(
    "body,message",
    [(DEEP, "nested too deeply"), ('{"decision": {"a": 1}}', "approve"), ("[1]", "JSON object")],
)
def test_a_bad_decision_body_is_a_400_and_audited(operator_client, operator, reply, body, message):
    url = f"/ai-chat/c/{reply.conversation_id}/m/{reply.pk}/actions/call_refused/"
    response = operator_client.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    log = ActionLog.objects.get()
    assert (log.kind, log.outcome, log.user) == ("decide", "refused", operator)
    assert Message.objects.get(pk=reply.pk).tool_calls[0]["state"] == "refused"
