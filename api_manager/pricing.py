"""Which usage has a price: a call is priced when a ModelPrice matched its model (exactly or
as a prefix, ModelPrice.price_for) when it was recorded; its cost is then the estimate. The
tokens of other calls are summed apart in the rollups (`unpriced_tokens`) and shown as
"no price", never as "$0.0000". Decided when the call is recorded, like its cost: a price
added later does not make old usage look free, and reading it costs a page nothing per row.
"""

from __future__ import annotations

from django.db.models import Sum
from django.db.models.functions import Coalesce


def unpriced_tokens() -> Coalesce:
    """An aggregate over rollup rows: the tokens of calls whose model had no price."""
    return Coalesce(Sum("unpriced_tokens"), 0)
