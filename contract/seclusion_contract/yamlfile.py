"""YAML for the files people write (site files, profiles, device files): the safe loader, refusing a
key given twice in one mapping. Plain YAML keeps the last silently: a second `rooms:` dropped every
room above it, a `lapse_grace_s` given twice ran on the later, a pin given twice read the wrong one."""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["KeyGivenTwice", "load_yaml"]


class KeyGivenTwice(yaml.YAMLError):
    """A key given twice in one mapping, with the lines (from 1) of both."""

    def __init__(self, key: str, first_line: int, second_line: int) -> None:
        super().__init__(f"{key}: given twice (lines {first_line} and {second_line})")
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _OnceLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: the safe loader's own error says so below
                continue
            if first != line:
                raise KeyGivenTwice(str(key), first, line)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        # YAML 1.1 (PyYAML's) reads `027` as octal (23) and `9:50` as base 60 (590): a zero-padded
        # pin (`pin: 027`) would be wired as another GPIO, a time of the timetable as a number. Read as
        # written instead, as YAML 1.2 does: `027` is 27, `9:50` the text "9:50".
        text = str(self.construct_scalar(node))
        digits = text.replace("_", "")
        if _ZERO_PADDED.fullmatch(digits):
            return int(digits, 10)
        if ":" in digits:
            return text
        return super().construct_yaml_int(node)


_ZERO_PADDED = re.compile(r"[-+]?0[0-9]+")
_OnceLoader.add_constructor("tag:yaml.org,2002:int", _OnceLoader.construct_yaml_int)


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, but a key given twice in one mapping is a KeyGivenTwice (a yaml.YAMLError)."""
    return yaml.load(text, Loader=_OnceLoader)  # noqa: S506 (a SafeLoader)
