"""Which usage has a price: a model is priced when a ModelPrice matches it (exactly or as a
prefix, as ModelPrice.cost_for does). Usage of other models is counted with a cost of 0 and
is shown as "no price", never as "$0.0000"."""

from __future__ import annotations

from django.db.models import CharField, Exists, ExpressionWrapper, F, OuterRef, Sum
from django.db.models.functions import Coalesce

from api_manager.models import ModelPrice


def priced() -> Exists:
    """True for a rollup row (or a record) whose model has a price. A correlated subquery
    over the small price table: no query of its own, and the page's query count is kept."""
    return Exists(
        ModelPrice.objects.annotate(
            used=ExpressionWrapper(OuterRef("model"), output_field=CharField())
        ).filter(used__startswith=F("model"))
    )


def unpriced_tokens() -> Coalesce:
    """An aggregate: the tokens (in + out) of rows whose model has no price. Use it before
    any annotation named `input_tokens` or `output_tokens` (F() would name those)."""
    return Coalesce(Sum(F("input_tokens") + F("output_tokens"), filter=~priced()), 0)
