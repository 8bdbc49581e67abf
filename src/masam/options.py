"""Settings declared once: a dataclass field carries its default, help text and command-line group,
and the ``masam`` command line is generated from the dataclasses.

Declare a setting::

    @dataclass
    class TrainConfig:
        lr: float = setting(8e-4, "peak learning rate", "optimisation")

gives ``--lr`` in the "optimisation" group of ``masam train --help`` with "(default: 0.0008)".
Options the user gave are told apart from defaults: every generated option defaults to
``argparse.SUPPRESS``, so the parsed namespace holds exactly the given ones
(:func:`given_settings`). Presets are named partial dicts checked against the field names
(:func:`check_presets`). Imports nothing from the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

_MISSING = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    help: str = "",  # noqa: A002 - argparse's own name
    group: str = "runtime",
    *,
    flag: str | None = None,
    short: str | None = None,
    choices: typing.Sequence[Any] | None = None,
    metavar: str | tuple[str, ...] | None = None,
    default_text: str | None = None,
    required: bool = False,
    cli: bool = True,
    positional: bool = False,
) -> Any:
    """A dataclass field with its command-line description.

    ``default`` MISSING, or ``required``: a required option (``required`` keeps a dataclass default
    for use from Python). ``flag``: the option's name when not ``--field-name`` (e.g.
    ``--no-augment`` for a boolean that defaults to True). ``default_text``: how ``--help`` shows
    the default when the value alone would not say it (e.g. None meaning "read from the dataset").
    ``cli`` False: a setting without a command-line option. ``positional``: a required positional
    argument named after the field (e.g. ``masam prepare btcv SRC DST``)."""
    meta = {"help": help, "group": group, "flag": flag, "short": short, "choices": choices, "metavar": metavar}
    meta.update(default_text=default_text, required=required, cli=cli, positional=positional)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that have a command-line option."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)]


def option_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return _MISSING


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _value_type(hint: Any) -> Any:
    """The scalar type of an annotation: ``int | None`` -> int, ``tuple[float, float]`` -> float."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return _value_type(args[0])
    if typing.get_origin(hint) in (tuple, list):
        return args[0]
    return hint


def _shown_default(f: dataclasses.Field, hint: Any, preset: tuple[str, dict] | None) -> str | None:
    """How ``--help`` shows a field's default: its value, or the preset's (``--preset NAME --help``).
    A boolean option is a flag: its default is whether the flag is in effect (``--no-augment
    (default: off)``), never the field's value, which reads backwards for a flag that clears it."""
    meta, default = f.metadata, _default(f)
    value, source = default, ""
    if preset is not None and f.name in preset[1]:
        value, source = preset[1][f.name], f", preset {preset[0]}"
    if not source and meta.get("default_text"):
        return meta["default_text"]
    if _value_type(hint) is bool:
        return ("on" if bool(value) != bool(default) else "off") + source
    if not source and (default is _MISSING or meta.get("required", False)):
        return None
    return _show(value) + source


def _argument(f: dataclasses.Field, hint: Any, preset: tuple[str, dict] | None = None) -> tuple[list[str], dict]:
    """The names and keyword arguments of ``add_argument`` for one field."""
    meta, default = f.metadata, _default(f)
    names = [n for n in (meta.get("short"), option_name(f)) if n]
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
    required = default is _MISSING or meta.get("required", False)
    shown = _shown_default(f, hint, preset)
    kwargs["help"] = meta["help"] + (f" (default: {shown})" if shown is not None else "")
    if _value_type(hint) is bool:
        kwargs["action"] = "store_false" if default is True else "store_true"
        return names, kwargs
    if meta.get("positional"):
        names, required = [f.name], False  # argparse: positionals are required and take no dest
        kwargs.pop("dest")
    kwargs["type"] = _value_type(hint)
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        kwargs["nargs"] = "+" if args[-1] is Ellipsis else len(args)
    elif typing.get_origin(hint) is list:  # issue 16: one or more values (-m RUN_A RUN_B)
        kwargs["nargs"] = "+"
    if required:
        kwargs["required"] = True
    for key in ("choices", "metavar"):
        if meta.get(key) is not None:
            kwargs[key] = list(meta[key]) if key == "choices" else meta[key]
    if meta.get("flag") and "metavar" not in kwargs and "choices" not in kwargs:  # --processes N, not the field name
        kwargs["metavar"] = meta["flag"].lstrip("-").replace("-", "_").upper()
    return names, kwargs


def add_settings(
    parser: argparse.ArgumentParser, *classes: type, groups: dict | None = None, preset: tuple[str, dict] | None = None
) -> dict:
    """Add an option for every command-line field of ``classes``, in argument groups named by the
    fields (created on first use, in order). ``preset``: ``(name, values)`` whose values the help
    shows as the defaults. Returns the groups, to add more options to them."""
    groups = {} if groups is None else groups
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in cli_fields(cls):
            name = f.metadata["group"]
            if name not in groups:
                groups[name] = parser.add_argument_group(name)
            names, kwargs = _argument(f, hints[f.name], preset)
            groups[name].add_argument(*names, **kwargs)
    return groups


def given_settings(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (nothing else), lists made tuples."""
    values = {}
    for f in dataclasses.fields(cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def settings_from(cls: type, *layers: dict[str, Any]) -> Any:
    """An instance of ``cls``: its defaults, updated by each layer in turn (a preset, then what was
    given, ...)."""
    check_presets(cls, {f"layer {i}": layer for i, layer in enumerate(layers)})
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer)
    return cls(**values)


def check_presets(cls: type, presets: dict[str, dict[str, Any]]) -> None:
    """Raise when a preset names a field ``cls`` does not have (called at import time)."""
    known = {f.name for f in dataclasses.fields(cls)}
    for name, values in presets.items():
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"preset {name!r}: {cls.__name__} has no fields {unknown}")
