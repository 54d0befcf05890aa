"""``KD.CUSTOM_IMPORTS``: user modules a config names, imported before the config is merged.

A module of the user's own package (outside kd_det) registers a loss with
``kd_det.losses.register_loss`` when it is imported; naming it in the config is all a run needs
(``docs/extending.md``). Both config loaders (detection: ``kd_det.config.detection.load_config``,
classification: ``kd_det.config.classification.load_cls_config``) call
:func:`import_custom_modules` first, so what a module registers is there when the config is
merged and the model is built, in every process. Never imports Detectron2.
"""
import ast
import importlib
from typing import List, Sequence

from ..errors import ConfigError
from ..config.yaml_chain import chain_value, yaml_chain

__all__ = ["import_custom_modules", "CUSTOM_IMPORTS_KEY"]

#: The config key (``KD.CUSTOM_IMPORTS``) listing the module names.
CUSTOM_IMPORTS_KEY = "KD.CUSTOM_IMPORTS"


def _names_in_file(config_file: str):
    """``KD.CUSTOM_IMPORTS`` as the merge will see it: the raw yaml through its ``_BASE_`` chain
    (a file's own value replaces its bases'); None when unset or when the file cannot be read
    (the merge that follows reports that with its own sentence)."""
    try:
        return chain_value(yaml_chain(config_file), CUSTOM_IMPORTS_KEY)[1]
    except Exception:  # noqa: BLE001 - unreadable yaml / missing _BASE_: the loader names it next
        return None


def _names_in_opts(opts: Sequence[str]):
    """The value of the last ``KD.CUSTOM_IMPORTS`` override in ``KEY VALUE`` pairs, or None."""
    found = None
    for key, value in zip(opts[0::2], opts[1::2]):
        if key == CUSTOM_IMPORTS_KEY:
            try:
                found = ast.literal_eval(value) if isinstance(value, str) else value
            except (ValueError, SyntaxError):
                found = value
    return found


def _import(name: str, source: str) -> None:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - also any error raised inside the user's module
        if isinstance(e, ModuleNotFoundError) and e.name and (name == e.name or name.startswith(e.name + ".")):
            raise ConfigError(f"{CUSTOM_IMPORTS_KEY} of {source} names module {name!r}, which Python cannot "
                              f"find ({e}); install its package or put its folder on PYTHONPATH.") from e
        raise ConfigError(f"{CUSTOM_IMPORTS_KEY} of {source}: importing module {name!r} failed with "
                          f"{type(e).__name__}: {e}.") from e


def import_custom_modules(config_file: str = "", opts: Sequence[str] = ()) -> List[str]:
    """Import every module ``KD.CUSTOM_IMPORTS`` names, before the config is merged.

    Args:
        config_file: the yaml file (its ``_BASE_`` chain is followed); "" = none.
        opts: ``KEY VALUE`` command-line overrides; a ``KD.CUSTOM_IMPORTS`` among them replaces the
            file's value, as it does in the merged config.

    Returns:
        the module names imported, in order.

    Raises:
        ConfigError: the value is not a list of module names, or a module cannot be imported (one
            sentence naming the config file and the module).
    """
    names, source = _names_in_opts(list(opts)), "the command-line overrides"
    if names is None:
        names, source = (_names_in_file(config_file) if config_file else None), f"config file {config_file}"
    if names is None:
        return []
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(
            isinstance(n, str) and n for n in names):
        raise ConfigError(f"{CUSTOM_IMPORTS_KEY} of {source} is {names!r}; it must be a list of module names, "
                          "e.g. [my_package.losses].")
    for name in names:
        _import(name, source)
    return list(names)
