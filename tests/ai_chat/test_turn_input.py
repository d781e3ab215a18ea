"""The turn's input (ai_chat/forms.py), the key a turn uses (ProviderKey.objects.for_turn) and
the refusals of the stream endpoint, each with its status, before anything is saved."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.db.models import Exists, OuterRef
from django.test.utils import CaptureQueriesContext

from ai_chat.forms import TurnForm, TurnKind
from ai_chat.models import Conversation, Message, Role
from api_manager.models import ProviderKey
from tests.conftest import make_key

STREAM = "/ai-chat/stream/"


def cleaned(**data):
    form = TurnForm(data)
    assert form.is_valid(), form.errors
    return form


def refused(**data) -> tuple[str, int]:
    form = TurnForm(data)
    assert not form.is_valid()
    return form.refusal()


# -- the form ------------------------------------------------------------------------------


def test_a_plain_message_is_kept_exactly_as_sent():
    form = cleaned(message="  hi \n", conversation="12", key="3", model=" gpt-x ")
    assert form.kind == TurnKind.MESSAGE
    data = form.cleaned_data
    assert (data["message"], data["conversation"], data["key"]) == ("  hi \n", 12, 3)
    assert data["model"] == "gpt-x"


@pytest.mark.parametrize("on", ["1", "true", "TRUE", "on", "yes", True])
@pytest.mark.parametrize("off", ["", "0", "false", "no", "nonsense", False])
def test_flags_are_on_only_for_yes_words(on, off):
    assert cleaned(regenerate=on, conversation=1).kind == TurnKind.REGENERATE
    assert cleaned(message="hi", regenerate=off).kind == TurnKind.MESSAGE
    assert cleaned(conversation=1, **{"continue": on}).kind == TurnKind.CONTINUE


def test_the_system_prompt_tells_absent_from_empty(settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    assert cleaned(message="hi").cleaned_data["system"] is None
    assert cleaned(message="hi", system="").cleaned_data["system"] == ""
    assert cleaned(message="hi", system="x" * 20).cleaned_data["system"] == "x" * 10


@pytest.mark.parametrize(
    "data,message,status",
    [
        ({"message": ""}, "Write a message first.", 400),
        ({"message": " \n "}, "Write a message first.", 400),
        ({"message": "a\x00b"}, "The message contains a NUL character.", 400),
        ({"message": "x" * 101}, "The message is too long (100 characters at most).", 413),
        ({"message": "hi", "conversation": "abc"}, "The conversation id is not valid.", 400),
        ({"message": "hi", "conversation": "-1"}, "The conversation id is not valid.", 400),
        ({"message": "hi", "conversation": str(2**64)}, "The conversation id is not valid.", 400),
        ({"message": "hi", "key": "1.5"}, "The key id is not valid.", 400),
        ({"message": "hi", "key": True}, "The key id is not valid.", 400),
        ({"message": "hi", "key": 1.5}, "The key id is not valid.", 400),
        ({"message": "hi", "key": float("inf")}, "The key id is not valid.", 400),
        ({"message": "hi", "model": "two words"}, "The model name is not valid.", 400),
        ({"message": "hi", "model": "m" * 201}, "The model name is not valid.", 400),
        (
            {"regenerate": "1", "continue": "1", "conversation": "1"},
            "Choose either regenerate or continue.",
            400,
        ),
        ({"regenerate": "1"}, "Nothing to regenerate in a new conversation.", 400),
        ({"continue": "1"}, "Nothing to regenerate in a new conversation.", 400),
        # The whole form's error comes before the fields'.
        ({"regenerate": "1", "continue": "1", "message": ""}, "Choose either", 400),
    ],
)
def test_bad_input_gets_a_clear_message_and_status(settings, data, message, status):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    got_message, got_status = refused(**data)
    assert got_message.startswith(message)
    assert got_status == status


def test_json_numbers_are_ids():
    assert cleaned(message="hi", conversation=7, key=8.0).cleaned_data["key"] == 8


def test_a_regenerated_turn_needs_no_message():
    assert cleaned(regenerate="1", conversation="5", message="").kind == TurnKind.REGENERATE


# -- ProviderKey.objects.for_turn ------------------------------------------------------------


def test_an_explicit_key_must_be_one_the_user_may_use(alice, bob):
    own = make_key(alice, label="own")
    shared = make_key(bob, label="shared", shared=True)
    private = make_key(bob, label="private")
    keys = ProviderKey.objects
    assert keys.for_turn(alice, None, own.pk) == own
    assert keys.for_turn(alice, None, shared.pk) == shared
    with pytest.raises(ProviderKey.DoesNotExist):
        keys.for_turn(alice, None, private.pk)


def test_a_disabled_key_is_returned_for_the_caller_to_refuse(alice):
    key = make_key(alice, is_active=False)
    assert ProviderKey.objects.for_turn(alice, None, key.pk) == key


def test_the_default_is_the_users_newest_active_key_then_the_teams(alice, bob):
    assert ProviderKey.objects.for_turn(alice, None, None) is None
    team = make_key(bob, label="team", shared=True)
    assert ProviderKey.objects.for_turn(alice, None, None) == team
    own = make_key(alice, label="own")
    make_key(alice, label="off", is_active=False)
    make_key(bob, label="newer team", shared=True)
    assert ProviderKey.objects.for_turn(alice, None, None) == own


def conversation_of(user, key, *, annotate: bool) -> Conversation:
    conversation = Conversation.objects.create(owner=user, title="c", key=key, model="m")
    found = Conversation.objects.select_related("key")
    if annotate:
        usable = ProviderKey.objects.usable_by(user).filter(pk=OuterRef("key_id"))
        found = found.annotate(key_usable=Exists(usable))
    return found.get(pk=conversation.pk)


@pytest.mark.parametrize("annotate", [True, False])
def test_a_conversation_keeps_its_key_while_the_user_may_use_it(alice, bob, annotate):
    own = make_key(alice, label="own")
    team = make_key(bob, label="team", shared=True)
    conversation = conversation_of(alice, team, annotate=annotate)
    # Checked with usable_by: one query without the annotation, none with it.
    with CaptureQueriesContext(connection) as ctx:
        assert ProviderKey.objects.for_turn(alice, conversation, None) == team
        assert ProviderKey.objects.for_turn(alice, conversation, team.pk) == team
    assert len(ctx) == (0 if annotate else 2)
    # Another key named explicitly wins.
    assert ProviderKey.objects.for_turn(alice, conversation, own.pk) == own
    # Unshared, the team's key is no longer the conversation's: the default takes over.
    ProviderKey.objects.filter(pk=team.pk).update(shared=False)
    conversation = conversation_of(alice, team, annotate=annotate)
    assert ProviderKey.objects.for_turn(alice, conversation, None) == own
    assert ProviderKey.objects.for_turn(alice, conversation, team.pk) == own


# -- the endpoint's refusals -----------------------------------------------------------------
# transaction=True: the turn's checks may run on core.db's threads, which must see the rows.


def post(client, data, *, as_json=False):
    if as_json:
        return client.post(STREAM, json.dumps(data), content_type="application/json")
    return client.post(STREAM, data)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("as_json", [False, True])
def test_refusals_keep_their_status_and_message_and_save_nothing(
    alice_client, alice, bob, fake, as_json
):
    key = make_key(alice, fake)
    conversation = Conversation.objects.create(owner=alice, title="c", key=key, model="m")
    Message.objects.create(conversation=conversation, role=Role.USER, content="q")
    Message.objects.create(conversation=conversation, role=Role.ASSISTANT, content="a")
    empty = Conversation.objects.create(owner=alice, title="empty", key=key, model="m")
    bobs = Conversation.objects.create(owner=bob, title="bob's", key=key, model="m")
    bob_key = make_key(bob, fake, label="bob key")
    messages_before = Message.objects.count()
    cases = [
        ({"message": "hi", "conversation": bobs.pk}, 404, "No such conversation."),
        ({"message": "hi", "key": bob_key.pk}, 404, "No such API key."),
        ({"regenerate": "1", "conversation": empty.pk}, 400, "Nothing to regenerate yet."),
        (
            {"continue": "1", "conversation": conversation.pk},
            400,
            "There is no action result to continue from.",
        ),
        ({"message": "hi", "model": "a b"}, 400, "The model name is not valid."),
    ]
    for data, status, message in cases:
        response = post(alice_client, data, as_json=as_json)
        assert (response.status_code, response.json()) == (status, {"error": message}), data
    assert Message.objects.count() == messages_before
    assert Conversation.objects.count() == 3
    assert not fake.requests


@pytest.mark.django_db(transaction=True)
def test_a_key_without_a_default_model_asks_for_one(alice_client, alice, fake):
    key = make_key(alice, fake, default_model="")
    response = alice_client.post(STREAM, {"message": "hi", "key": key.pk})
    assert response.status_code == 400
    assert response.json() == {"error": "Choose a model: this key has no default model."}
    assert not Conversation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_huge_id_is_refused_not_a_server_error(alice_client, alice, fake):
    make_key(alice, fake)
    response = alice_client.post(STREAM, {"message": "hi", "conversation": str(10**30)})
    assert response.status_code == 400
    assert response.json() == {"error": "The conversation id is not valid."}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("body", ["{nope", "[1, 2]"])
def test_a_json_body_must_be_an_object(alice_client, body):
    response = alice_client.post(STREAM, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] in {
        "The request body is not valid JSON.",
        "The request body must be a JSON object.",
    }
