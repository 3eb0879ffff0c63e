"""YAML 1.2 scalars for params.yaml, through PyYAML.

DVC writes ``params.yaml`` back (``dvc exp run -S key=value``, ``dvc exp apply``) with ruamel.yaml,
which follows YAML 1.2 and so drops the quotes of strings that are plain strings in 1.2 but
numbers or booleans in YAML 1.1, PyYAML's dialect: ``"16:9"`` comes back as ``16:9``, which
PyYAML reads as the base-60 integer 969. :class:`Yaml12Loader` is PyYAML's safe loader with the
YAML 1.2 core schema's booleans, integers and floats (no base 60, no ``yes``/``no``/``on``/``off``,
no ``_`` in numbers, no dates), so a file reads the same before and after DVC writes it, and the
same as DVC itself reads it (``dvc params diff``).
"""

from __future__ import annotations

import re
from typing import IO, Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class Yaml12Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 core-schema scalar resolution (module docstring)."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text)  # decimal, leading zeros included (YAML 1.1 read 010 as octal 8)


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
Yaml12Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
Yaml12Loader.add_constructor(_INT, _construct_int)


def load_yaml(stream: str | IO[str]) -> Any:
    """Parse one YAML document with YAML 1.2 scalars (``yaml.safe_load``'s other behaviour)."""
    return yaml.load(stream, Loader=Yaml12Loader)  # noqa: S506 - a SafeLoader subclass
