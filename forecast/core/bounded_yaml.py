"""Bounded YAML: how every config file, flag value, grid and search space is read.

`safe_load` refuses duplicate keys (with their line), documents whose aliases would expand past
`MAX_NODES` nodes (counted on the composed node graph, before anything is constructed), recursive
aliases, nesting past `MAX_DEPTH` levels, and numbers that are not finite (`1.0e+400` reads as inf). `forecast.core.allowlist.install`
registers it as jsonargparse's YAML loader (`set_loader`), so every parser reads through it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from forecast.core.errors import ForecastError

MAX_NODES = 10_000  # YAML nodes after alias expansion; our largest config has ~100
MAX_DEPTH = 64  # nested mappings/lists; our deepest config has 5 (the composer recurses per level)


class UnsafeYAML(yaml.YAMLError):
    """A YAML document this program refuses to construct (duplicate key, alias bomb, non-finite number)."""

# Linear in the message's length (a value of 100,000 characters without a space is quoted whole): a
# token is tried only from its start (the lookbehind), and a duplicate key's text is bounded.
_UNSAFE = re.compile(r"duplicate key [^\n]{0,400}? \(first at line \d+\)|the document expands to more than [\d,]+ "
                     r"nodes|recursive alias at line \d+|nested more than \d+ levels deep at line \d+"
                     r"|(?<!\S)\S+ at line \d+ is not a finite number")


def unsafe_reason(message: str) -> str | None:
    """Our YAML refusal inside a longer parser message (which may quote the whole document), or None."""
    found = _UNSAFE.search(message)
    return None if found is None else found.group(0)


class _Loader(yaml.SafeLoader):
    """SafeLoader with jsonargparse's scalar rules (`1e-3` is a float, dates stay strings), duplicate
    keys refused, and a bound on alias expansion checked on the composed graph."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise UnsafeYAML(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                 f"(first at line {seen[key]})")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise UnsafeYAML(f"{node.value} at line {node.start_mark.line + 1} is not a finite number")
        return value

_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)

for _first, _mappings in list(_Loader.yaml_implicit_resolvers.items()):
    _Loader.yaml_implicit_resolvers = {**_Loader.yaml_implicit_resolvers}
    _Loader.yaml_implicit_resolvers[_first] = [
        (tag, regexp) for tag, regexp in _mappings
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:float")]

# YAML 1.1 reads 1e-3 as a string; jsonargparse's own loader (and so every config we ship) reads it as
# a float. The same pattern as jsonargparse's, so switching loaders changes no value.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def expanded_size(root: yaml.Node, limit: int = MAX_NODES) -> int:
    """Nodes of the document once every alias is expanded, counted on the shared graph (each node
    once, memoised), so a billion-laughs document costs its own size to measure, not its expansion.

    Raises:
        UnsafeYAML: the count passes `limit`, or an alias refers to a node that contains it.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise UnsafeYAML(f"recursive alias at line {node.start_mark.line + 1}")
        active.add(id(node))
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in node.value)
        else:
            total = 1
        active.discard(id(node))
        if total > limit:
            raise UnsafeYAML(f"the document expands to more than {limit:,} nodes through its aliases "
                             f"(at line {node.start_mark.line + 1}); write the values out instead")
        sizes[id(node)] = total
        return total

    return size(root)


def check_depth(text: str, limit: int = MAX_DEPTH) -> None:
    """Refuse a document nested deeper than `limit` levels, counted on the parser's event stream
    (which does not recurse) before the composer, which does, would hit Python's recursion limit.

    Raises:
        UnsafeYAML: too deep; yaml.YAMLError for what is not YAML at all.
    """
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > limit:
                raise UnsafeYAML(f"nested more than {limit} levels deep at line {event.start_mark.line + 1}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def safe_load(text: str, path: str = "") -> Any:
    """Parse one YAML document under the rules above.

    Args:
        text: the document.
        path: where it came from (named in the message).

    Raises:
        UnsafeYAML: a duplicate key, an alias expansion past `MAX_NODES`, a recursive alias, nesting
            past `MAX_DEPTH`, a non-finite number; yaml.YAMLError for what is not YAML at all.
    """
    loader = _Loader(text)
    try:
        check_depth(text)
        root = loader.get_single_node()
        if root is None:
            return None
        expanded_size(root)
        return loader.construct_document(root)
    except UnsafeYAML as err:
        raise UnsafeYAML(f"{path}: {err}" if path else str(err)) from None
    finally:
        loader.dispose()


def load_value(value: str, path: str = "") -> Any:
    """jsonargparse's YAML loader contract (`set_loader`): `safe_load`, plus its rule that a bare
    `key:` or `{a, b}` given as a flag value stays the string it was."""
    loaded = safe_load(value, str(path) if path else "")
    if isinstance(loaded, dict) and loaded and all(v is None for v in loaded.values()):
        if len(loaded) == 1 and value.strip() == f"{next(iter(loaded))}:":
            return value
        keys = set(value.strip(" {}").replace(" ", "").split(","))
        if keys == {str(k) for k in loaded}:
            return value
    return loaded


def check_config_text(text: str, path: str) -> dict[str, Any]:
    """A `--config` file's text: safe YAML holding a mapping of options; else one line naming the file."""
    try:
        doc = safe_load(text)
    except UnsafeYAML as err:
        raise ForecastError(f"config file {path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ForecastError(f"config file {path} is not valid YAML{where}: "
                            f"{getattr(err, 'problem', None) or err}") from None
    if doc is None:
        raise ForecastError(f"config file {path} is empty (or holds only comments): it sets nothing")
    if not isinstance(doc, dict):
        raise ForecastError(f"config file {path} is not a mapping of options (got {type(doc).__name__})")
    return doc


def non_finite(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys of a nested config (dicts, lists, namespaces as dicts) whose value is a NaN or
    infinite float: no setting of this program means anything with one."""
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in non_finite(value, f"{prefix}{key}.")]
    if isinstance(node, list | tuple):
        return [k for i, value in enumerate(node) for k in non_finite(value, f"{prefix}{i}.")]
    return [f"{prefix[:-1]}={node}"] if isinstance(node, float) and not math.isfinite(node) else []


def read_yaml(path: Any, what: str) -> Any:
    """A YAML file of ours or the user's (search space, grid), read under the rules of `safe_load`.

    Args:
        path: the file.
        what: what it is, for the message ("search space").

    Raises:
        ForecastError: unreadable, not YAML, or refused by `safe_load`; one line naming the file.
    """
    try:
        return safe_load(open(path, encoding="utf-8").read(), str(path))
    except UnsafeYAML as err:
        raise ForecastError(f"{what} {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ForecastError(f"{what} {path} is not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ForecastError(f"{what} {path} cannot be read: {err}") from None
