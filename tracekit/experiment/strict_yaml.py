"""Experiment YAML, read strictly: ``text -> (document, unquoted scalars read as non-text)``.

input:  the text of an experiment file, or of one ``-e KEY=VALUE`` value
output: the document, made of JSON's types only (mappings with text keys,
        lists, strings, numbers, booleans, null), and for each path whose
        value was written unquoted but read as something else than text,
        the text as written: ``0x0`` read as the number 0, ``on`` as true,
        ``1:30`` as 90, so that an error can tell to quote it

Refused with the line it is on (StrictYamlError): anchors and aliases (a
600-byte "billion laughs" of aliases expands to gigabytes), tags other
than the plain types' (``!!python/...``, ``!!binary``, ``!!set``), keys
that are lists or mappings, duplicate keys (YAML keeps the last one
silently), nesting deeper than MAX_DEPTH (the parser recurses) and texts
longer than MAX_CHARS. Keys are kept as written (``on:`` is the key
'on', not true); dates stay text (no key of an experiment is a date).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_CHARS = 1_000_000  # an experiment is a page of YAML
MAX_DEPTH = 32  # the schema nests five deep; free-form tags get the rest
_CORE = "tag:yaml.org,2002:"
_PLAIN_TAGS = {f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")} | {"!"}
KeyPath = tuple[str | int, ...]  # keys and list indexes from the top


class StrictYamlError(Exception):
    """What is refused, and its line (1-based; None for the whole text)."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line


def _line(mark: Any) -> int | None:
    return mark.line + 1 if mark is not None else None


class _Loader(yaml.SafeLoader):
    # Dates stay text: the resolvers of SafeLoader, less the timestamp's.
    yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag != f"{_CORE}timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = _line(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            raise StrictYamlError(line, f"*{event.anchor}: YAML aliases are not allowed in an experiment "
                                        "(a few of them expand to gigabytes); write the value out")  # fmt: skip
        if getattr(event, "anchor", None) is not None:
            raise StrictYamlError(line, f"&{event.anchor}: YAML anchors and aliases are not allowed in an "
                                        "experiment; write each value out")  # fmt: skip
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS:
            shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
            raise StrictYamlError(line, f"{shown}: YAML tags are not allowed in an experiment; "
                                        "write a plain value (quoted, for text)")  # fmt: skip
        if self._depth >= MAX_DEPTH:
            raise StrictYamlError(line, f"nested more than {MAX_DEPTH} levels deep; an experiment is flatter")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
        # No merge keys ('<<' needs an alias, refused) and keys as written.
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = _line(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                raise StrictYamlError(line, "a key must be a word, not a list or a mapping")
            key = key_node.value
            if key in mapping:
                raise StrictYamlError(line, f"{key}: duplicate key (YAML would keep only the last); keep one")
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _unquoted_non_text(node: Any, path: KeyPath, found: dict[KeyPath, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            _unquoted_non_text(value_node, (*path, key_node.value), found)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _unquoted_non_text(item, (*path, index), found)
    elif node.style is None and node.tag != f"{_CORE}str":
        found[path] = node.value


def load(text: str) -> tuple[Any, dict[KeyPath, str]]:
    """The document, and path -> text of each unquoted scalar YAML did not read as text.

    Raises StrictYamlError for what is refused, yaml.YAMLError for what is not YAML.
    """
    if len(text) > MAX_CHARS:
        raise StrictYamlError(None, f"{len(text):,} characters; an experiment has at most {MAX_CHARS:,}")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        document = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    found: dict[KeyPath, str] = {}
    if node is not None:
        _unquoted_non_text(node, (), found)
    return document, found
