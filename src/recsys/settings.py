"""What values a config setting takes, declared once by the class that owns it.

The class that is the ``_target_`` of a config group (a model, its encoder, a DataModule, a sampler) declares its
settings as a class attribute, ``settings = {"embedding_dim": POSITIVE_INT, ...}`` (a subclass extends its base's:
``{**Base.settings, ...}``), and checks across settings as ``relations``. Its constructor checks its arguments with
:func:`check_settings`; :func:`recsys.validation.validate_config` runs the same declaration on the composed config
node before any work. Either way a bad value is one ``ConfigError``:
``{group}.{key}={value}: must be {description}``. A leaf module: imports only the standard library and
:mod:`recsys.errors`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recsys.errors import ConfigError


@dataclass(frozen=True)
class Values:
    """The values a setting takes: ``test(value)``, and what they are (the end of "must be …")."""

    test: Callable[[Any], bool]
    description: str


@dataclass(frozen=True)
class Relation:
    """``key`` checked against other settings of its group, ``others``: ``test(values)`` runs once every value has
    passed its own check and all of ``key`` and ``others`` are given. ``description`` names the others as
    ``{other}`` placeholders, shown as ``group.other=value`` (``"a divisor of {embedding_dim}"``)."""

    key: str
    others: tuple[str, ...]
    test: Callable[[Mapping[str, Any]], bool]
    description: str


#: the ``settings`` attribute of an owning class: setting name → what values it takes
Settings = Mapping[str, Values]


def is_int(v: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite real number that is not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def is_list(v: Any) -> bool:
    """A list or tuple (any sequence but a string)."""
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def optional(values: Values) -> Values:
    """``null`` or ``values``."""
    return Values(lambda v: v is None or values.test(v), f"null or {values.description}")


def one_of(*choices: str) -> Values:
    """One of the strings ``choices``."""
    return Values(lambda v: isinstance(v, str) and v in choices,
                  choices[0] if len(choices) == 1 else f"one of {', '.join(choices)}")


def either(first: Values, second: Values) -> Values:
    """A value of ``first`` or of ``second``."""
    return Values(lambda v: first.test(v) or second.test(v), f"{first.description} or {second.description}")


def list_of(item: Values, description: str, empty: bool = False) -> Values:
    """A list (non-empty unless ``empty``) whose every element is an ``item``."""
    return Values(lambda v: is_list(v) and (empty or len(v) > 0) and all(item.test(x) for x in v), description)


POSITIVE_INT = Values(lambda v: is_int(v) and v > 0, "an integer > 0")
NON_NEGATIVE_INT = Values(lambda v: is_int(v) and v >= 0, "an integer >= 0")
POSITIVE_NUMBER = Values(lambda v: is_number(v) and v > 0, "a number > 0")
NON_NEGATIVE_NUMBER = Values(lambda v: is_number(v) and v >= 0, "a number >= 0")
UNIT_INTERVAL = Values(lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
FRACTION = Values(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
#: p = 1 would drop everything
DROP_RATE = Values(FRACTION.test, "a drop rate in [0, 1)")
DROP_RATES = either(DROP_RATE, list_of(DROP_RATE, "a list of them"))
POSITIVE_INTS = list_of(POSITIVE_INT, "a non-empty list of integers > 0")


def show(value: Any) -> str:
    """A value as the command line writes it: lists as ``[1,2]``, None as ``null``."""
    if is_list(value):
        return "[" + ",".join(show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def invalid(key: str, value: Any, description: str) -> ConfigError:
    """The one message of a bad setting ``key`` (dotted, ``group.name``): ``{key}={value}: must be {description}``."""
    return ConfigError(f"{key}={show(value)}: must be {description}")


def check_settings(group: str, values: Mapping[str, Any], *owners: type) -> None:
    """Raise :func:`invalid` for the first of ``values`` (a config node's or a constructor's arguments, of the config
    group ``group``) that the ``settings`` of ``owners`` refuse, then for the first of their ``relations`` that
    fails. Keys no owner declares, and declared keys missing from ``values``, are not checked."""
    for owner in owners:
        for key, allowed in getattr(owner, "settings", {}).items():
            if key in values and not allowed.test(values[key]):
                raise invalid(f"{group}.{key}", values[key], allowed.description)
    for owner in owners:
        for rel in getattr(owner, "relations", ()):
            if all(k in values for k in (rel.key, *rel.others)) and not rel.test(values):
                shown = {k: f"{group}.{k}={show(values[k])}" for k in rel.others}
                raise invalid(f"{group}.{rel.key}", values[rel.key], rel.description.format(**shown))


def declared_keys(*owners: type) -> list[str]:
    """Every key the ``settings`` and ``relations`` of ``owners`` read, in declaration order."""
    keys: dict[str, None] = {}
    for owner in owners:
        keys.update(dict.fromkeys(getattr(owner, "settings", {})))
        for rel in getattr(owner, "relations", ()):
            keys.update(dict.fromkeys((rel.key, *rel.others)))
    return list(keys)
