"""Each command's options declared once: a dataclass whose fields carry their domain type and doc.

A command's options are one typed dataclass (`HpoOptions`, `ReportOptions`, ...). Its fields are the
flags: `add_options` hands each field to jsonargparse (`--field-name`, the field's type, default
and one-line doc become the flag, its check and its `--help`), and `from_args` builds the dataclass
from the parsed namespace. Downstream code takes the dataclass and never checks a value again: the
parser refused what the type does not allow.

    @dataclass
    class HpoOptions:
        trials: PositiveInt = option(50, "finished trials the study should hold")
        log_dir: Path = option(Path("logs/hpo"), "TensorBoard runs and study outputs")
        budget: NonEmptyStr = option(doc="2M, 20M, 200M, 2B, or a count such as 50K")
        configs: list[str] = option(list, flag=None)  # not a flag: set by the command

    add_options(parser, HpoOptions)
    options = from_args(parse(parser, argv), HpoOptions, configs=[...])

Flag shapes, read from the field's type: `bool` with default False is a switch (`store_true`);
`list[T]` (or `list[T] | None`) takes one or more values of T; anything else takes one value of
its type. A field whose `flag` is None is not a flag; the command sets it (`from_args(..., name=value)`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from jsonargparse import ArgumentParser, Namespace

T = TypeVar("T")
_AUTO = "auto"  # the flag is --<field name with dashes>


def option(default: Any = dataclasses.MISSING, doc: str = "", *, flag: str | None = _AUTO,
           metavar: str | None = None) -> Any:
    """A dataclass field that is also a command-line flag.

    Args:
        default: the value when the flag is not given (a list is copied for each object; a type such
            as `list` is a default factory); none: the flag is required.
        doc: the one-line `--help` text; a default other than None or False is appended to it.
        flag: the flag's name (default `--field-name`); None: not a flag, the command sets it.
        metavar: the value's name in `--help`.
    """
    metadata = {"doc": doc, "flag": flag, "metavar": metavar}
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata)
    if isinstance(default, list):  # each object gets its own copy
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag(f: dataclasses.Field) -> str | None:
    flag = f.metadata.get("flag", _AUTO)
    return "--" + f.name.replace("_", "-") if flag == _AUTO else flag


def _list_item(tp: Any) -> tuple[Any, bool] | None:
    """(item type, optional) when `tp` is `list[T]` or `list[T] | None`, else None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and typing.get_origin(inner[0]) is list:
            return typing.get_args(inner[0])[0], True
    if typing.get_origin(tp) is list:
        return args[0], False
    return None


def flags_of(cls: type) -> dict[str, str]:
    """{field name: flag} of the fields of `cls` that are flags."""
    return {f.name: flag for f in dataclasses.fields(cls) if (flag := _flag(f)) is not None}


def add_options(parser: ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add a flag to `parser` for each field of the dataclass `cls` that is one (not in `skip`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = _flag(f)
        if flag is None or f.name in skip:
            continue
        tp, doc, metavar = hints[f.name], f.metadata.get("doc", ""), f.metadata.get("metavar")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        kwargs: dict[str, Any] = {"dest": f.name, "help": _help(doc, default)}
        if tp is bool and default is False:
            parser.add_argument(flag, action="store_true", **kwargs)
            continue
        item = _list_item(tp)
        if item is not None:
            kwargs.update(nargs="+", type=item[0])
        else:
            kwargs.update(type=tp)
        if metavar:
            kwargs["metavar"] = metavar
        if required:
            parser.add_argument(flag, required=True, **kwargs)
        else:
            parser.add_argument(flag, default=default, **kwargs)


def _help(doc: str, default: Any) -> str:
    if default is None or default is False or default == [] or "default:" in doc:
        return doc
    shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
    return f"{doc} (default: {shown})"


def from_args(args: Namespace, cls: Callable[..., T], **given: Any) -> T:
    """The dataclass `cls` from a parsed namespace: each flag's value, plus the fields in `given`."""
    values = {name: args[name] for name in flags_of(cls) if name not in given and name in args}  # type: ignore[arg-type]
    return cls(**values, **given)
