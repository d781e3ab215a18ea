"""The query action: Django ORM code, parsed and never evaluated, run read-only.

`parse(code)` turns an expression such as

    Message.objects.filter(role="assistant").values("conversation__title")
        .annotate(n=Count("id")).order_by("-n")[:10]

into a *spec* (plain JSON-able data) with Python's `ast` module; nothing in the code is ever
executed. `build(spec, user)` checks every part of a spec against the allow-lists
(settings.ACTIONS_QUERY_MODELS) and builds the queryset; `run(spec, user)` executes it on the
read-only database alias (settings.ACTIONS_QUERY_DATABASE) in a rolled-back transaction and
returns columns and rows. The spec is internal: clients only ever send `code`. Anything outside
the grammar, or values the fields cannot take, raise QueryRefused (an ActionRefused, status 400)
with a message saying what is not allowed.

The code is bounded before it is walked: 4,000 characters, MAX_DEPTH levels of nesting (the
walk is recursive) and MAX_CONDITIONS field conditions in all.

The grammar:
    <Model>.objects[.all()] { .method(args) } [ [start:stop] ]
    method  := filter | exclude | order_by | values | values_list | distinct | annotate
             | aggregate | count | first | last | exists
    value   := str | int | float | bool | None | list/tuple of those | F("field")
    filter/exclude args := Q(...) combined with & | ~ ; keyword field lookups
    annotate/aggregate  := name=Count|Sum|Avg|Min|Max("field", distinct=bool, filter=Q(...))
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import json
import math
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, FieldError, ValidationError
from django.db import DatabaseError, connections, models, transaction
from django.db.models import Avg, Count, F, Max, Min, Q, Sum

from ai_chat.actions.errors import ActionRefused

QUERYSET_METHODS = {
    "all",
    "filter",
    "exclude",
    "order_by",
    "values",
    "values_list",
    "distinct",
    "annotate",
}
TERMINAL_METHODS = {"aggregate", "count", "first", "last", "exists"}
AGGREGATES = {"Count": Count, "Sum": Sum, "Avg": Avg, "Min": Min, "Max": Max}
LOOKUPS = {
    "exact",
    "iexact",
    "contains",
    "icontains",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "startswith",
    "istartswith",
    "endswith",
    "iendswith",
    "range",
    "isnull",
}
TRANSFORMS = {"date", "year", "month", "day", "week_day", "hour", "iso_year", "quarter", "week"}
# Never selectable, whatever an allow-list says.
DENYLIST = re.compile(r"(password|secret|encrypted|session|api_key|last4|token_hash|backup)", re.I)
IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
MAX_CODE_CHARS = 4000
MAX_STEPS = 20
MAX_LIST_ITEMS = 1000
MAX_DEPTH = 32
MAX_CONDITIONS = 200
# Integers the databases store (64-bit); a larger literal would fail at the driver.
MAX_INT = 2**63 - 1


class QueryRefused(ActionRefused):
    """The query is not allowed; the message says why and is safe to show (status 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 400)


# -- parsing: code → spec ---------------------------------------------------------------------


def parse(code: str) -> dict[str, Any]:
    """Return the spec for `code`; raise QueryRefused for anything outside the grammar."""
    if not isinstance(code, str) or not code.strip():
        raise QueryRefused("Send the query as a string in `code`.")
    if len(code) > MAX_CODE_CHARS:
        raise QueryRefused(f"The query is longer than {MAX_CODE_CHARS} characters.")
    try:
        code.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (JSON allows "\\ud800"): Python's parser cannot even read it.
        raise QueryRefused("The query contains characters that are not valid text.") from None
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError as exc:
        raise QueryRefused(f"The query is not valid Python: {exc.msg}.") from None
    except (RecursionError, MemoryError):
        raise QueryRefused(f"The query is nested more than {MAX_DEPTH} levels deep.") from None
    _check_size(tree)
    node = tree.body
    spec: dict[str, Any] = {"steps": []}
    if isinstance(node, ast.Subscript):
        spec["slice"] = _slice(node.slice)
        node = node.value
    steps: list[dict[str, Any]] = []
    while isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Attribute):
            raise QueryRefused(f"Calling {_describe(node.func)} is not allowed.")
        method = node.func.attr
        if method not in QUERYSET_METHODS | TERMINAL_METHODS:
            raise QueryRefused(
                f"The method `{method}` is not allowed (read-only queryset methods only)."
            )
        steps.append(_step(method, node))
        node = node.func.value
    if not (
        isinstance(node, ast.Attribute)
        and node.attr == "objects"
        and isinstance(node.value, ast.Name)
    ):
        raise QueryRefused(
            "A query starts with `<Model>.objects`, for example `Message.objects.filter(...)`."
        )
    spec["model"] = node.value.id
    spec["steps"] = list(reversed(steps))
    return spec


def _check_size(tree: ast.AST) -> None:
    """Refuse deep nesting and too many conditions before the recursive walk (iteratively, so
    the check itself cannot overflow the stack)."""
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    conditions = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise QueryRefused(f"The query is nested more than {MAX_DEPTH} levels deep.")
        if isinstance(node, ast.keyword):
            conditions += 1
            if conditions > MAX_CONDITIONS:
                raise QueryRefused(f"The query has more than {MAX_CONDITIONS} conditions.")
        for child in ast.iter_child_nodes(node):
            # `a | b | c` parses as ((a | b) | c): a chain of one operator is one level (it is
            # built flat), so a long OR of conditions is not "deep".
            same_chain = (
                isinstance(node, ast.BinOp)
                and isinstance(child, ast.BinOp)
                and type(child.op) is type(node.op)
            )
            stack.append((child, depth if same_chain else depth + 1))


def _describe(node: ast.AST) -> str:
    try:
        return f"`{ast.unparse(node)[:60]}`"
    except Exception:
        return "that"


def _slice(node: ast.AST) -> dict[str, int | None]:
    if isinstance(node, ast.Slice):
        if node.step is not None:
            raise QueryRefused("A slice step is not allowed.")
        return {"start": _int_or_none(node.lower), "stop": _int_or_none(node.upper)}
    index = _int_or_none(node)
    if index is None:
        raise QueryRefused("Only [start:stop] slices with whole numbers are allowed.")
    return {"start": index, "stop": index + 1}


def _int_or_none(node: ast.AST | None) -> int | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    raise QueryRefused("Only [start:stop] slices with whole numbers are allowed.")


def _step(method: str, call: ast.Call) -> dict[str, Any]:
    step: dict[str, Any] = {"method": method}
    args: list[Any] = []
    for arg in call.args:
        if isinstance(arg, ast.Starred):
            raise QueryRefused("`*args` is not allowed.")
        if method in {"filter", "exclude"}:
            args.append(_q(arg))
        elif method in {"order_by", "values", "values_list"}:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                raise QueryRefused(f"`{method}` takes field names as strings.")
            args.append(arg.value)
        else:
            raise QueryRefused(f"`{method}` takes no positional arguments here.")
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise QueryRefused("`**kwargs` is not allowed.")
        if method in {"annotate", "aggregate"}:
            kwargs[keyword.arg] = _aggregate(keyword.value)
        else:
            kwargs[keyword.arg] = _value(keyword.value)
    if args:
        step["args"] = args
    if kwargs:
        step["kwargs"] = kwargs
    return step


def _value(node: ast.AST) -> Any:
    """A literal (or F("field")) from the code, as spec data."""
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, str | int | float | bool)
    ):
        return _number(node.value)
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        return _number(-node.operand.value)
    if isinstance(node, ast.List | ast.Tuple):
        if len(node.elts) > MAX_LIST_ITEMS:
            raise QueryRefused(f"A list may hold at most {MAX_LIST_ITEMS} values.")
        values = [_value(e) for e in node.elts]
        if any(isinstance(v, list | dict) for v in values):
            raise QueryRefused("Lists of lists are not allowed.")
        return values
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "F":
        if (
            len(node.args) != 1
            or node.keywords
            or not isinstance(node.args[0], ast.Constant)
            or not isinstance(node.args[0].value, str)
        ):
            raise QueryRefused('F() takes one field name, like F("created_at").')
        return {"f": node.args[0].value}
    raise QueryRefused(
        f'{_describe(node)} is not allowed: values must be literals (text, numbers, True/False/None, lists of them) or F("field").'
    )


def _number(value: Any) -> Any:
    """Refuse numbers no column holds: 1e999 is infinity, 10**30 overflows 64 bits."""
    if type(value) is float and not math.isfinite(value):
        raise QueryRefused(f"The number {value} is not allowed (it is not finite).")
    if type(value) is int and abs(value) > MAX_INT:
        raise QueryRefused("That number is too large for the database.")
    return value


def _q(node: ast.AST) -> dict[str, Any]:
    """A Q expression: Q(field=value, ...) combined with &, | and ~."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr | ast.BitAnd):
        # Walk the left-deep chain of one operator in a loop (it may be MAX_CONDITIONS long).
        op, operands = type(node.op), []
        while isinstance(node, ast.BinOp) and type(node.op) is op:
            operands.append(node.right)
            node = node.left
        operands.append(node)
        return {
            "op": "or" if op is ast.BitOr else "and",
            "children": [_q(operand) for operand in reversed(operands)],
        }
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        return {"op": "not", "children": [_q(node.operand)]}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Q":
        if node.args:
            return {
                "op": "and",
                "children": [_q(a) for a in node.args]
                + ([{"kwargs": _kwargs(node)}] if node.keywords else []),
            }
        return {"kwargs": _kwargs(node)}
    raise QueryRefused(
        f"{_describe(node)} is not allowed here: use Q(field=value) combined with &, | and ~."
    )


def _kwargs(call: ast.Call) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise QueryRefused("`**kwargs` is not allowed.")
        result[keyword.arg] = _value(keyword.value)
    return result


def _aggregate(node: ast.AST) -> dict[str, Any]:
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in AGGREGATES
    ):
        raise QueryRefused(
            f"{_describe(node)} is not allowed: annotate and aggregate take Count, Sum, Avg, Min or Max."
        )
    if (
        len(node.args) != 1
        or not isinstance(node.args[0], ast.Constant)
        or not isinstance(node.args[0].value, str)
    ):
        raise QueryRefused(f'{node.func.id}() takes one field name, like {node.func.id}("id").')
    spec: dict[str, Any] = {"agg": node.func.id, "field": node.args[0].value}
    for keyword in node.keywords:
        if keyword.arg == "distinct":
            spec["distinct"] = _value(keyword.value)
        elif keyword.arg == "filter":
            spec["filter"] = _q(keyword.value)
        else:
            raise QueryRefused(f"{node.func.id}() takes only `distinct` and `filter`.")
    return spec


# -- checking and building: spec → queryset ---------------------------------------------------


@dataclass
class Allowed:
    name: str
    model: type[models.Model]
    fields: frozenset[str]
    owner: str


def allowed_models() -> dict[str, Allowed]:
    result = {}
    for name, entry in settings.ACTIONS_QUERY_MODELS.items():
        result[name] = Allowed(
            name, apps.get_model(entry["model"]), frozenset(entry["fields"]), entry["owner"]
        )
    return result


class Checker:
    """Checks field paths against the allow-lists, for one query."""

    def __init__(self, root: Allowed, registry: dict[str, Allowed]) -> None:
        self.root = root
        self.by_model = {a.model: a for a in registry.values()}
        self.aliases: set[str] = set()

    def _deny(self, part: str) -> None:
        if part.startswith("_") or "__" in part or DENYLIST.search(part):
            raise QueryRefused(f"The field `{part}` is not allowed.")

    def path(self, path: str, *, lookups: bool) -> str:
        """Check `path` (field__relation__field[__transform][__lookup]); return it unchanged."""
        if not isinstance(path, str) or not path:
            raise QueryRefused("A field name must be a non-empty string.")
        parts = path.split("__")
        if parts[0] in self.aliases and len(parts) <= 2:
            if len(parts) == 2 and (not lookups or parts[1] not in LOOKUPS):
                raise QueryRefused(f"`{path}` is not allowed.")
            return path
        current = self.root
        for index, part in enumerate(parts):
            self._deny(part)
            if part == "pk":
                part = current.model._meta.pk.name
            if part not in current.fields:
                rest = parts[index:]
                if lookups and index > 0 and self._is_lookup_tail(rest):
                    return path
                raise QueryRefused(
                    f"The field `{part}` of {current.name} is not allowed (or does not exist)."
                )
            try:
                field = current.model._meta.get_field(part)
            except FieldDoesNotExist:
                raise QueryRefused(f"{current.name} has no field `{part}`.") from None
            if field.is_relation:
                related = self.by_model.get(field.related_model)
                if related is None:
                    raise QueryRefused(f"Following `{part}` from {current.name} is not allowed.")
                current = related
            elif index < len(parts) - 1:
                # `username__id`: a plain field has no fields of its own, only lookups.
                if lookups and self._is_lookup_tail(parts[index + 1 :]):
                    return path
                raise QueryRefused(f"`{path}` is not allowed: `{part}` is not a relation.")
        return path

    @staticmethod
    def _is_lookup_tail(rest: list[str]) -> bool:
        if len(rest) == 1:
            return rest[0] in LOOKUPS or rest[0] in TRANSFORMS
        if len(rest) == 2:
            return rest[0] in TRANSFORMS and rest[1] in LOOKUPS
        return False

    def value(self, value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) != {"f"}:
                raise QueryRefused('Values must be literals or F("field").')
            return F(self.path(value["f"], lookups=False))
        if isinstance(value, list):
            if len(value) > MAX_LIST_ITEMS:
                raise QueryRefused(f"A list may hold at most {MAX_LIST_ITEMS} values.")
            if any(isinstance(v, list | dict) for v in value):
                raise QueryRefused("Lists of lists are not allowed.")
            return value
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise QueryRefused('Values must be literals or F("field").')

    def kwargs(self, kwargs: Any) -> dict[str, Any]:
        if not isinstance(kwargs, dict):
            raise QueryRefused("Keyword arguments must be an object.")
        checked = {}
        for key, value in kwargs.items():
            path, value = self.path(key, lookups=True), self.value(value)
            lookup = path.rsplit("__", 1)[-1]
            if lookup == "in" and not isinstance(value, list):
                raise QueryRefused(f"`{path}` takes a list, like [1, 2, 3].")
            if lookup == "range" and not (isinstance(value, list) and len(value) == 2):
                raise QueryRefused(f"`{path}` takes a list of two values: [low, high].")
            checked[path] = value
        return checked

    def q(self, spec: Any, depth: int = 0) -> Q:
        if depth > 20 or not isinstance(spec, dict):
            raise QueryRefused("That Q expression is not allowed.")
        if "kwargs" in spec:
            return Q(**self.kwargs(spec["kwargs"]))
        op, children = spec.get("op"), spec.get("children")
        if op not in {"and", "or", "not"} or not isinstance(children, list) or not children:
            raise QueryRefused("That Q expression is not allowed.")
        built = [self.q(c, depth + 1) for c in children]
        if op == "not":
            return ~built[0]
        # One node holding every child: combining them pairwise (a | b | c ...) copies the
        # children at each step, quadratic in their number.
        return Q(*built, _connector=Q.OR if op == "or" else Q.AND)

    def aggregate(self, alias: str, spec: Any) -> Any:
        if not isinstance(alias, str) or not IDENTIFIER.match(alias) or DENYLIST.search(alias):
            raise QueryRefused(f"`{alias}` is not allowed as a name.")
        if alias in self.root.fields or alias in _model_names(self.root.model):
            raise QueryRefused(f"`{alias}` is already a field name; choose another.")
        if not isinstance(spec, dict) or spec.get("agg") not in AGGREGATES:
            raise QueryRefused("annotate and aggregate take Count, Sum, Avg, Min or Max.")
        extra: dict[str, Any] = {}
        if "distinct" in spec:
            if not isinstance(spec["distinct"], bool):
                raise QueryRefused("distinct must be True or False.")
            extra["distinct"] = spec["distinct"]
        if "filter" in spec:
            extra["filter"] = self.q(spec["filter"])
        unknown = set(spec) - {"agg", "field", "distinct", "filter"}
        if unknown:
            raise QueryRefused(f"{spec['agg']}() takes only a field, `distinct` and `filter`.")
        return AGGREGATES[spec["agg"]](self.path(spec.get("field"), lookups=False), **extra)


@dataclass
class Built:
    queryset: Any
    terminal: str | None
    terminal_arg: Any
    shape: str  # "values", "values_list", "flat", "model"
    columns: list[str]
    start: int
    stop: int | None


def build(spec: Any, user: Any) -> Built:
    """Check `spec` and build its queryset (not yet run); raise QueryRefused if not allowed."""
    if not isinstance(spec, dict):
        raise QueryRefused("The spec must be an object.")
    unknown = set(spec) - {"model", "steps", "slice"}
    if unknown:
        raise QueryRefused(f"Unknown spec keys: {sorted(unknown)}.")
    registry = allowed_models()
    name = spec.get("model")
    if not isinstance(name, str) or name not in registry:
        raise QueryRefused(
            f"The model `{name}` is not allowed. Allowed: {', '.join(sorted(registry))}."
        )
    root = registry[name]
    check = Checker(root, registry)
    queryset = root.model._default_manager.all()
    if not user.is_superuser:
        # Non-superusers only ever see rows they own.
        queryset = queryset.filter(**{root.owner: user.pk})
    steps = spec.get("steps", [])
    if not isinstance(steps, list) or len(steps) > MAX_STEPS:
        raise QueryRefused(f"A query has at most {MAX_STEPS} steps.")
    shape, columns = "model", sorted(f for f in root.fields if _is_plain_field(root.model, f))
    terminal: str | None = None
    terminal_arg: Any = None
    for step in steps:
        if not isinstance(step, dict) or not isinstance(step.get("method"), str):
            raise QueryRefused("Each step needs a `method`.")
        method = step["method"]
        args, kwargs = step.get("args", []), step.get("kwargs", {})
        if (
            not isinstance(args, list)
            or not isinstance(kwargs, dict)
            or set(step) - {"method", "args", "kwargs"}
        ):
            raise QueryRefused(f"The `{method}` step is not well formed.")
        if terminal is not None:
            raise QueryRefused(f"Nothing may follow `{terminal}()`.")
        if method in {"filter", "exclude"}:
            conditions = [check.q(a) for a in args]
            queryset = getattr(queryset, method)(*conditions, **check.kwargs(kwargs))
        elif method == "all":
            _no_args(method, args, kwargs)
        elif method == "order_by":
            _no_kwargs(method, kwargs)
            fields = []
            for field in args:
                if not isinstance(field, str) or field == "?":
                    raise QueryRefused("order_by takes field names, optionally with a leading `-`.")
                fields.append(
                    ("-" if field.startswith("-") else "")
                    + check.path(field.lstrip("-"), lookups=False)
                )
            queryset = queryset.order_by(*fields)
        elif method in {"values", "values_list"}:
            flat = False
            if method == "values_list":
                if set(kwargs) - {"flat"} or not isinstance(kwargs.get("flat", False), bool):
                    raise QueryRefused("values_list takes only `flat=True`.")
                flat = kwargs.get("flat", False)
                if flat and len(args) != 1:
                    raise QueryRefused("values_list(flat=True) takes exactly one field.")
            else:
                _no_kwargs(method, kwargs)
            fields = [check.path(f, lookups=False) for f in args]
            if not fields:
                fields = [f for f in columns if f not in check.aliases] + sorted(check.aliases)
            queryset = (
                queryset.values(*fields)
                if method == "values"
                else queryset.values_list(*fields, flat=flat)
            )
            shape, columns = ("flat" if flat else method), list(fields)
        elif method == "distinct":
            _no_args(method, args, kwargs)
            queryset = queryset.distinct()
        elif method == "annotate":
            if args or not kwargs:
                raise QueryRefused("annotate takes name=Aggregate(...) arguments.")
            built = {alias: check.aggregate(alias, agg) for alias, agg in kwargs.items()}
            check.aliases.update(built)
            queryset = queryset.annotate(**built)
            if shape in {"values", "model"}:
                columns += list(built)
        elif method == "aggregate":
            if args or not kwargs:
                raise QueryRefused("aggregate takes name=Aggregate(...) arguments.")
            terminal, terminal_arg = (
                method,
                {alias: check.aggregate(alias, agg) for alias, agg in kwargs.items()},
            )
        elif method in {"count", "first", "last", "exists"}:
            _no_args(method, args, kwargs)
            terminal = method
        else:
            raise QueryRefused(
                f"The method `{method}` is not allowed (read-only queryset methods only)."
            )
    start, stop = _checked_slice(spec.get("slice"))
    if terminal is not None and spec.get("slice"):
        raise QueryRefused(f"A slice cannot follow `{terminal}()`.")
    return Built(queryset, terminal, terminal_arg, shape, columns, start, stop)


def _model_names(model: type[models.Model]) -> set[str]:
    """Every name the model answers to (fields, their columns' attnames, reverse relations)."""
    names = set()
    for field in model._meta.get_fields():
        names.add(field.name)
        if getattr(field, "attname", None):
            names.add(field.attname)
    return names


def _is_plain_field(model: type[models.Model], name: str) -> bool:
    try:
        field = model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return field.concrete and not field.many_to_many and not DENYLIST.search(name)


def _no_args(method: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    if args or kwargs:
        raise QueryRefused(f"`{method}()` takes no arguments here.")


def _no_kwargs(method: str, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise QueryRefused(f"`{method}()` takes no keyword arguments.")


def _checked_slice(value: Any) -> tuple[int, int | None]:
    if value is None:
        return 0, None
    if not isinstance(value, dict) or set(value) - {"start", "stop"}:
        raise QueryRefused("A slice is {start, stop}.")
    start, stop = value.get("start"), value.get("stop")
    for bound in (start, stop):
        if bound is not None and (type(bound) is not int or bound < 0):
            raise QueryRefused("Slices take whole numbers of zero or more (no negative indexes).")
    start = start or 0
    limit = settings.ACTIONS_QUERY_MAX_OFFSET
    if start > limit or (stop is not None and stop > limit + settings.ACTIONS_QUERY_MAX_ROWS):
        raise QueryRefused(f"That slice is too large: rows past {limit:,} cannot be read.")
    if stop is not None and stop < start:
        raise QueryRefused("A slice's stop must not come before its start.")
    return start, stop


# -- running ------------------------------------------------------------------------------------


@dataclass
class Result:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "count": len(self.rows),
            "truncated": self.truncated,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def read_only_connection() -> Any:
    """The connection queries run on: the read-only alias, opened read-only by its settings
    (SQLite `mode=ro` + `query_only`, PostgreSQL `default_transaction_read_only`)."""
    return connections[settings.ACTIONS_QUERY_DATABASE]


@contextmanager
def read_only_transaction() -> Iterator[Any]:
    """A transaction on the read-only connection that is always rolled back and stopped at
    ACTIONS_QUERY_TIMEOUT_MS; yields the connection. Raises DatabaseError from the body as is."""
    connection = read_only_connection()
    try:
        with transaction.atomic(using=connection.alias):
            with connection.cursor() as cursor:
                _read_only(connection, cursor)
            yield connection
            transaction.set_rollback(True, using=connection.alias)
    finally:
        if connection.vendor == "sqlite" and connection.connection is not None:
            connection.connection.set_progress_handler(None, 0)


def _read_only(connection: Any, cursor: Any) -> None:
    """Make the current transaction read-only and bounded in time (belt and braces over the
    connection's own settings: the database refuses writes and stops the query at the limit)."""
    if connection.vendor == "postgresql":
        cursor.execute("SET TRANSACTION READ ONLY")
        cursor.execute("SET LOCAL statement_timeout = %s", [int(settings.ACTIONS_QUERY_TIMEOUT_MS)])
    elif connection.vendor == "sqlite":
        cursor.execute("PRAGMA query_only = ON")
        # SQLite has no statement timeout: a progress handler aborts the statement instead
        # (the statement fails with OperationalError "interrupted").
        deadline = time.monotonic() + settings.ACTIONS_QUERY_TIMEOUT_MS / 1000
        connection.connection.set_progress_handler(
            lambda: 1 if time.monotonic() > deadline else 0, 10_000
        )
    else:  # pragma: no cover - the panel supports SQLite and PostgreSQL
        raise QueryRefused("Queries need SQLite or PostgreSQL.")


# What Django raises while building or running a queryset from values a field cannot take:
# `filter(id="abc")` (ValueError), `created_at__gt="notadate"` (ValidationError),
# `id__in=5` (TypeError), a name clash (ValueError, FieldError). They are the query's fault.
BAD_VALUE_ERRORS = (ValueError, TypeError, ValidationError, FieldError, OverflowError)


def _bad_value(exc: BaseException) -> QueryRefused:
    detail = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    return QueryRefused(f"The query cannot run: {detail[:300]}")


def run(spec: Any, user: Any) -> Result:
    """Check, build and run `spec` on the read-only connection, in a transaction that is always
    rolled back; raise QueryRefused for anything not allowed, bad values, or a query the
    database refused or stopped at ACTIONS_QUERY_TIMEOUT_MS."""
    try:
        built = build(spec, user)
    except BAD_VALUE_ERRORS as exc:
        raise _bad_value(exc) from None
    built.queryset = built.queryset.using(settings.ACTIONS_QUERY_DATABASE)
    try:
        with read_only_transaction():
            result = _evaluate(built, settings.ACTIONS_QUERY_MAX_ROWS)
    except BAD_VALUE_ERRORS as exc:
        raise _bad_value(exc) from None
    except DatabaseError:
        raise QueryRefused(
            "The database refused or stopped the query (it may have taken too long)."
        ) from None
    return _cap_size(result)


def _evaluate(built: Built, max_rows: int) -> Result:
    qs = built.queryset
    if built.terminal == "count":
        return Result(["count"], [[qs.count()]], False)
    if built.terminal == "exists":
        return Result(["exists"], [[qs.exists()]], False)
    if built.terminal == "aggregate":
        values = qs.aggregate(**built.terminal_arg)
        return Result(list(values), [[_jsonable(v) for v in values.values()]], False)
    if built.shape == "model":
        qs = qs.values(*built.columns)
    if built.terminal in {"first", "last"}:
        item = getattr(qs, built.terminal)()
        items = [] if item is None else [item]
        truncated = False
    else:
        stop = (
            built.start + max_rows + 1
            if built.stop is None
            else min(built.stop, built.start + max_rows + 1)
        )
        items = list(qs[built.start : stop])
        truncated = len(items) > max_rows
        items = items[:max_rows]
    columns = list(built.columns)
    if items and isinstance(items[0], dict):
        columns = list(items[0])
        rows = [[_jsonable(item[c]) for c in columns] for item in items]
    else:
        rows = [
            [_jsonable(v) for v in item] if isinstance(item, tuple) else [_jsonable(item)]
            for item in items
        ]
    return Result(columns, rows, truncated)


def _cap_size(result: Result) -> Result:
    limit = settings.ACTIONS_QUERY_MAX_BYTES
    size = len(json.dumps(result.as_json(), default=str))
    if size <= limit:
        return result
    rows, total = [], len(json.dumps(result.columns)) + 64
    for row in result.rows:
        total += len(json.dumps(row, default=str)) + 1
        if total > limit:
            break
        rows.append(row)
    return Result(result.columns, rows, True)


def check(code: Any, user: Any) -> None:
    """Parse and check `code` for `user` without running it; raise QueryRefused when it could
    never run (outside the grammar, a model or field not allowed, a value a field refuses)."""
    try:
        build(parse(code), user)
    except BAD_VALUE_ERRORS as exc:
        raise _bad_value(exc) from None


def execute(code: Any, user: Any) -> Result:
    """Parse and run `code` for `user`; raise QueryRefused when it is not allowed."""
    return run(parse(code), user)
