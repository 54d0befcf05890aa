"""A yaml config and its ``_BASE_`` files as raw dicts: the one reader of the chain outside the config system.

Some questions must be answered before (or beside) a merge into a ``CfgNode``: which modules
``KD.CUSTOM_IMPORTS`` names (imported before the defaults are built), at which level of the chain a key
is set (the method label follows the losses only where they are set later), which task a file belongs
to and which stock recipe a row config starts from. They all read the chain here, resolved as
fvcore's ``CfgNode.load_yaml_with_base`` resolves it (a ``_BASE_`` relative to its file, ``~``
expanded, absolute paths as they are). Nothing here imports Detectron2 or torch.
"""
import copy
import math
import os
from typing import Any, Dict, List, Tuple

import yaml

from ..errors import ConfigError

__all__ = ["yaml_chain", "chain_value", "merged_chain"]

#: Longer chains are taken for a cycle.
MAX_DEPTH = 32
#: libyaml's safe loader where PyYAML has it (the same documents, parsed in C), else the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _base_path(base: str, of_file: str) -> str:
    base = os.path.expanduser(base)
    if base.startswith(("/", "https://", "http://")):
        return base
    return os.path.normpath(os.path.join(os.path.dirname(of_file), base))


def yaml_chain(path: str, missing_ok: bool = False) -> List[Tuple[str, Dict[str, Any]]]:
    """``[(file, raw dict), ...]`` of ``path`` and its ``_BASE_`` files, nearest first.

    Args:
        path: a yaml config file.
        missing_ok: stop at a ``_BASE_`` that does not exist instead of raising.

    Raises:
        FileNotFoundError: ``path`` or (unless ``missing_ok``) one of its ``_BASE_`` files does not exist.
        ConfigError: a file holds no mapping, or the chain loops.
    """
    chain: List[Tuple[str, Dict[str, Any]]] = []
    while path:
        if len(chain) >= MAX_DEPTH or any(os.path.abspath(path) == os.path.abspath(p) for p, _ in chain):
            raise ConfigError(f"Config file {chain[0][0]}: its _BASE_ chain loops at {path}.")
        if chain and missing_ok and not os.path.isfile(path):
            break
        with open(path) as f:
            data = yaml.load(f, Loader=_LOADER)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {path} does not hold a mapping of keys.")
        chain.append((path, data))
        base = data.get("_BASE_")
        path = _base_path(base, path) if isinstance(base, str) and base else ""
    return chain


def chain_value(chain: List[Tuple[str, Dict[str, Any]]], dotted: str) -> Tuple[float, Any]:
    """``(depth, value)`` of the nearest file in ``chain`` that sets ``dotted`` (e.g. ``"KD.LOSSES"``).

    ``depth`` is 1 for the file itself, 2 for its ``_BASE_``, ...; ``(math.inf, None)`` when no file sets it
    (a value of ``null`` counts as unset).
    """
    for depth, (_, data) in enumerate(chain, 1):
        node: Any = data
        for key in dotted.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return depth, node
    return math.inf, None


def _deep_update(into: Dict[str, Any], new: Dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def merged_chain(chain: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """The chain's dicts merged as fvcore merges them (a file's keys over its bases'), without ``_BASE_``."""
    merged: Dict[str, Any] = {}
    for _, data in reversed(chain):
        _deep_update(merged, copy.deepcopy({k: v for k, v in data.items() if k != "_BASE_"}))
    return merged
