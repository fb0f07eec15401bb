"""Model arguments (the Train tool's ``arguments`` value table): declared types and parsing.

ArcGIS passes model arguments as strings (``"scales" "1, 0.7937, 0.6300"``); Python callers
pass values. :func:`resolve_arguments` accepts both, checks names against a model's declared
arguments and returns the full set with defaults filled in.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rasterlearn.errors import ParameterError

_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off", ""}


@dataclass(frozen=True)
class ModelArgument:
    """One model argument.

    Attributes:
        name: Argument name, as ArcGIS spells it.
        type: ``bool``, ``int``, ``float``, ``str`` or ``tuple`` (a list of ``item_type``).
        default: Default value (a tuple for list arguments).
        doc: What it does.
        item_type: Element type of a ``tuple`` argument (``int`` or ``float``).
        choices: Allowed values of a ``str`` argument (compared case-insensitively).
        arcgis: True when ArcGIS offers the argument; False for rasterlearn additions.
    """

    name: str
    type: type
    default: Any
    doc: str = ""
    item_type: type | None = None
    choices: tuple[str, ...] = ()
    arcgis: bool = True

    def parse(self, value: Any) -> Any:
        """Convert a value (or its string form) to this argument's type.

        Raises:
            ParameterError: when the value does not fit.
        """
        try:
            parsed = self._parse(value)
        except (ValueError, TypeError, SyntaxError) as exc:
            raise ParameterError(
                f"model argument {self.name}={value!r} is not a valid {self._type_name()}",
                self.doc or None,
            ) from exc
        if self.choices:
            lowered = {c.lower(): c for c in self.choices}
            if str(parsed).lower() not in lowered:
                raise ParameterError(
                    f"model argument {self.name}={value!r} is not allowed",
                    f"use one of {', '.join(self.choices)}",
                )
            parsed = lowered[str(parsed).lower()]
        return parsed

    def _type_name(self) -> str:
        if self.type is tuple:
            return f"list of {getattr(self.item_type, '__name__', 'values')}"
        return self.type.__name__

    def _parse(self, value: Any) -> Any:
        kind = self.type
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool):
                raise TypeError(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError(value)
            return float(value)
        if kind is str:
            if not isinstance(value, str):
                raise TypeError(value)
            return value.strip()
        if kind is tuple:
            return self._parse_list(value)
        raise TypeError(kind)  # pragma: no cover - declarations only use the types above

    def _parse_list(self, value: Any) -> tuple[Any, ...]:
        item = self.item_type or float
        if isinstance(value, str):
            text = value.strip()
            if text in ("", "None", "[]", "()"):
                return ()
            if text[0] not in "[(":
                text = f"[{text}]"
            value = ast.literal_eval(text)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (value,)
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise TypeError(value)
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(v)
            if item is int and not float(v).is_integer():
                raise ValueError(v)
            out.append(item(v))
        return tuple(out)


def resolve_arguments(
    model_type: str,
    declared: Sequence[ModelArgument],
    given: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Check given arguments against the declared ones and fill in defaults.

    Names match case-insensitively. String values are parsed to the declared type.

    Args:
        model_type: For messages.
        declared: The model's arguments.
        given: Values from the user (or None).

    Returns:
        Every declared argument, by its declared name, in declaration order.

    Raises:
        ParameterError: for unknown names (listing the valid ones) or values that do not fit.
    """
    by_name = {a.name.lower(): a for a in declared}
    values = {a.name: a.default for a in declared}
    unknown = []
    for name, value in (given or {}).items():
        arg = by_name.get(str(name).strip().lower())
        if arg is None:
            unknown.append(str(name))
            continue
        values[arg.name] = arg.parse(value)
    if unknown:
        valid = ", ".join(a.name for a in declared) or "none"
        raise ParameterError(
            f"unknown model argument{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u) for u in unknown)} for {model_type}",
            f"valid arguments: {valid}",
        )
    return values


__all__ = ["ModelArgument", "resolve_arguments"]
