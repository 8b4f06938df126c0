"""Command-line flags derived from a config dataclass: one `--flag-name` per field.

A flag's type, choices and help come from the field's annotation and `metadata`
(`rllib_o2o.config.option`), so a new config field is a new flag without a line here.
Flags default to None in the parsed namespace, so `given_values` tells the flags a user
typed from the ones left out, and those override a `--config` file; the help shows the
field's real default instead.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, Field, fields

from rllib_o2o.config import annotation_kinds, check_type

_SCALARS = {"int": (int, "N"), "float": (float, "X"), "str": (str, None)}


def add_config_flags(parser: argparse.ArgumentParser, cls, alternative: tuple[str, object] | None = None) -> None:
    """Adds a flag for every field of the dataclass `cls`.

    `alternative` is (label, instance): another set of defaults, shown beside a field's
    own where it differs (e.g. ("without a dataset", embedded_default_config())).
    """
    label, other = alternative or (None, None)
    for f in fields(cls):
        default = _default(f)
        note = f"default: {_shown(default)}"
        if other is not None and getattr(other, f.name) != default:
            note += f"; {label}: {_shown(getattr(other, f.name))}"
        text = f.metadata.get("help", "")
        kwargs = {"dest": f.name, "default": None, "help": f"{text} ({note})".strip().replace("%", "%%")}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument("--" + f.name.replace("_", "-"), **_parsing(f), **kwargs)


def given_values(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` whose flag was given on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}


def _parsing(f: Field) -> dict:
    """argparse's type (or action) and metavar for the field's annotation; the field's `check` runs on
    the parsed value, so a bad value is a usage error."""
    kinds = annotation_kinds(f.type) - {"None"}
    if kinds == {"bool"}:
        return {"action": argparse.BooleanOptionalAction}
    scalar = _SCALARS.get(next(iter(kinds))) if len(kinds) == 1 else None
    convert, metavar = scalar or (_structured(f.name, f.type), "JSON|YAML")  # dict, list, int | str, ...
    return {"type": _checked(convert, f.metadata.get("check")), "metavar": f.metadata.get("metavar", metavar)}


def _structured(name: str, annotation: str):
    """JSON or YAML text ('[64, 64]', '{"a": 1}', '{a: 1}', 'auto', '4') of a value of `annotation`."""
    def parse(text: str):
        import yaml

        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"not JSON or YAML ({err})") from None
        check_type(name, value, annotation)
        return value

    return parse


def _checked(convert, check):
    def parse(text: str):
        try:
            value = convert(text)
            if check is not None:
                check(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
        return value

    return parse


def _default(f: Field):
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _shown(value) -> str:
    if value is None:
        return "none"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
