"""Rewrite config files from the old forms to the one schema of :mod:`kd_det.config.schema`, keeping every comment.

Two old forms are rewritten (``tools/migrate_configs.py`` is the command line):

* detection's parallel loss keys, ``KD.LOSSES`` as names with ``KD.LOSS_WEIGHTS`` / ``KD.LOSS_START_ITERS``
  (by position) and ``KD.PARAMS.<name>`` / ``KD.INPUTS.<name>``, become one ``KD.LOSSES`` spec per line,
  ``- {name: dcd, weight: 1.0, params: {alpha: 0.5}}  # its comments``;
* classification's ``ROW.*`` -> ``KD.LABEL.*``, ``TEACHER.ARCH / WEIGHTS`` -> ``KD.TEACHER.*`` and the bool
  ``SOLVER.AMP`` -> ``SOLVER.AMP.ENABLED``.

The rewrite is textual (blocks of lines moved and re-indented), so comments and every other line stay;
a file in the new form is returned unchanged. :func:`upgrade_dict` does the same to a loaded yaml dict
(old run folders' ``config.yaml``, read by the reports).
"""
import re

import yaml

from ..errors import ConfigError
from ..losses.combine import spec_tag
from .schema import OLD_CLASSIFICATION_KEYS, flow, plain

__all__ = ["MigrationError", "migrate_text", "upgrade_dict", "legacy_specs"]

_KEY = re.compile(r"^( *)([A-Za-z_][\w-]*)\s*:(?:\s|$)")
_OLD_LOSS_KEYS = ("LOSSES", "LOSS_WEIGHTS", "LOSS_START_ITERS", "PARAMS", "INPUTS")
_COMMENT_KEYS = re.compile(r"(?<![\w.])(" + "|".join(re.escape(k) for k in OLD_CLASSIFICATION_KEYS) + r")(?!\.?\w)")


class MigrationError(ValueError):
    """A file that cannot be rewritten automatically (the message says why)."""


class _Node:
    """One key of a yaml block: its leading comment lines, its own line and the deeper lines under it."""

    def __init__(self, key, leading, header, body):
        self.key, self.leading, self.header, self.body = key, leading, header, body

    def lines(self):
        return self.leading + [self.header] + self.body

    def value_and_comment(self):
        """(value text, inline comment text without '#') of the key's own line."""
        text = self.header.split(":", 1)[1]
        code, comment = _split_comment(text)
        return code.strip(), comment

    def parsed(self):
        """The key's yaml value (its own line and the lines under it)."""
        lines = [self.header] + self.body
        indent = len(self.header) - len(self.header.lstrip())
        data = yaml.safe_load("\n".join(line[indent:] for line in lines)) or {}
        return data.get(self.key) if isinstance(data, dict) else None


def _indent(line):
    return len(line) - len(line.lstrip())


def _is_comment(line):
    return not line.strip() or line.lstrip().startswith("#")


def _split_comment(text):
    """(code, comment) of a yaml line part: the comment starts at the first ' #' outside quotes."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1:].strip()
    return text.rstrip(), ""


def _split(lines, indent):
    """(lines before the first key, [_Node]) of a block whose keys sit at ``indent`` spaces.

    A key's leading lines are the comment / blank lines right above it indented no deeper than it.
    """
    starts = [i for i, line in enumerate(lines) if (m := _KEY.match(line)) and len(m.group(1)) == indent]
    if not starts:
        return list(lines), []
    bounds = []
    for n, i in enumerate(starts):
        j = i
        while j > (starts[n - 1] + 1 if n else 0) and _is_comment(lines[j - 1]) and (
                not lines[j - 1].strip() or _indent(lines[j - 1]) <= indent):
            j -= 1
        bounds.append(j)
    pre = lines[:bounds[0]]
    nodes = []
    for n, (b, i) in enumerate(zip(bounds, starts)):
        end = bounds[n + 1] if n + 1 < len(bounds) else len(lines)
        nodes.append(_Node(_KEY.match(lines[i]).group(2), lines[b:i], lines[i], lines[i + 1:end]))
    return pre, nodes


def _shift(lines, by):
    return [(" " * by + line) if line.strip() else line for line in lines]


def _rename_in_comments(lines):
    """Old classification key names mentioned in comments -> their new names."""
    out = []
    for line in lines:
        code, comment = (line, "") if not line.lstrip().startswith("#") else ("", line)
        if not comment and " #" in line:
            at = len(_split_comment(line)[0])
            code, comment = line[:at], line[at:]
        out.append(code + _COMMENT_KEYS.sub(lambda m: OLD_CLASSIFICATION_KEYS[m.group(1)], comment))
    return out


# -- detection: the parallel loss keys ---------------------------------------------------------------------------

def _per_loss(node):
    """{loss name: (comment lines above it, inline comment, value text)} of a PARAMS / INPUTS node."""
    body = [line for line in node.body if line.strip()]
    child_indent = min((_indent(line) for line in body if not _is_comment(line)), default=None)
    value = node.parsed() or {}
    if child_indent is None:
        return {name: ([], "", flow(v)) for name, v in value.items()}
    pre, children = _split(node.body, child_indent)
    out = {}
    for child in children:
        text, comment = child.value_and_comment()
        verbatim = text.startswith("{") and not any(line.strip() and not _is_comment(line) for line in child.body)
        notes = [line for line in child.body if _is_comment(line) and line.strip()]
        out[child.key] = (child.leading + notes, comment, text if verbatim else flow(value.get(child.key) or {}))
    if children:  # comment lines above the first entry, deeper than it
        first = children[0].key
        out[first] = ([line for line in pre if line.strip()] + out[first][0],) + out[first][1:]
    return out


def _loss_lines(kd_children, where):
    """The new ``LOSSES:`` lines for the old loss nodes among ``kd_children`` (KD's children, indent 2)."""
    old = {n.key: n for n in kd_children if n.key in _OLD_LOSS_KEYS}
    if "LOSSES" not in old:
        raise MigrationError(f"{where}: KD.{', KD.'.join(old)} without KD.LOSSES in the same file; write its "
                             "KD.LOSSES specs by hand (docs: README 'How distillation is configured').")
    names = old["LOSSES"].parsed() or []
    if not all(isinstance(n, str) for n in names):
        raise MigrationError(f"{where}: KD.LOSSES mixes names and specs; write its specs by hand.")
    specs = [{"name": n} for n in names]
    for key, field in (("LOSS_WEIGHTS", "weight"), ("LOSS_START_ITERS", "start_iter")):
        values = old[key].parsed() if key in old else []
        if values and len(values) != len(names):
            raise MigrationError(f"{where}: KD.{key} has {len(values)} entries but KD.LOSSES has {len(names)}.")
        for spec, v in zip(specs, values or []):
            if field == "weight" or v:
                spec[field] = v
    shared, inline = [], {n: [] for n in names}
    for key in ("LOSSES", "LOSS_WEIGHTS", "LOSS_START_ITERS", "PARAMS", "INPUTS"):
        if key not in old:
            continue
        node = old[key]
        notes = node.leading + ([line for line in node.body if _is_comment(line) and line.strip()]
                                if key not in ("PARAMS", "INPUTS") else [])
        shared += [line.strip() for line in notes if line.strip()]
        _, comment = node.value_and_comment()
        if comment:
            what = {"LOSS_WEIGHTS": "weights: ", "LOSS_START_ITERS": "start_iter: "}.get(key, "")
            if len(names) == 1:
                inline[names[0]].append(comment)
            else:
                shared.append(f"# {what}{comment}")
    above = {n: [] for n in names}
    texts = {n: {} for n in names}
    for key, field in (("PARAMS", "params"), ("INPUTS", "inputs")):
        if key not in old:
            continue
        for name, (notes, comment, text) in _per_loss(old[key]).items():
            if name not in texts:
                raise MigrationError(f"{where}: KD.{key}.{name} is for a loss not in KD.LOSSES {names}.")
            above[name] += [line.strip() for line in notes if line.strip()]
            inline[name] += [comment] if comment else []
            texts[name][field] = text
    out = ["  " + line for line in shared]
    out.append("  LOSSES:")
    for spec in specs:
        name = spec["name"]
        parts = [f"name: {name}"] + [f"weight: {flow(spec['weight'])}" for _ in ("weight",) if "weight" in spec]
        parts += [f"{field}: {texts[name][field]}" for field in ("params", "inputs") if field in texts[name]]
        parts += [f"start_iter: {flow(spec['start_iter'])}" for _ in ("s",) if "start_iter" in spec]
        out += ["    " + line for line in above[name]]
        comment = "; ".join(inline[name])
        out.append("    - {" + ", ".join(parts) + "}" + (f"  # {comment}" if comment else ""))
    return out


def _migrate_kd(node, where):
    """KD's node with its old loss keys rewritten (unchanged when there are none)."""
    pre, children = _split(node.body, 2)
    old = [c for c in children if c.key in _OLD_LOSS_KEYS and c.key != "LOSSES"]
    losses = next((c for c in children if c.key == "LOSSES"), None)
    names = losses.parsed() if losses else None
    if not old and not (isinstance(names, list) and any(isinstance(n, str) for n in names)):
        return node
    new_lines = _loss_lines(children, where)
    body, placed = list(pre), False
    for child in children:
        if child.key in _OLD_LOSS_KEYS:
            if not placed:
                body += new_lines
                placed = True
        else:
            body += child.lines()
    return _Node(node.key, node.leading, node.header, body)


# -- classification: ROW / TEACHER / bool SOLVER.AMP ------------------------------------------------------------

def _sub_block(node, key):
    """A top-level node moved under KD as ``key`` (its lines re-indented by 2, trailing blank lines dropped)."""
    _, comment = node.value_and_comment()
    header = f"  {key}:" + (f"  # {comment}" if comment else "")
    body = list(node.body)
    while body and not body[-1].strip():
        body.pop()
    return _shift(node.leading, 2) + [header] + _shift(body, 2)


def _migrate_amp(node):
    out = []
    for line in node.body:
        m = re.match(r"^  AMP\s*:\s*(\S[^#]*?)\s*(#.*)?$", line)
        if m and _indent(line) == 2 and isinstance(yaml.safe_load(m.group(1)), bool):
            out += ["  AMP:", f"    ENABLED: {m.group(1)}" + (f"  {m.group(2)}" if m.group(2) else "")]
        else:
            out.append(line)
    return _Node(node.key, node.leading, node.header, out)


def migrate_text(text, where="<config>"):
    """The text of a config file in the new form (``text`` itself when it already is).

    Raises:
        MigrationError: a file this textual rewrite cannot handle, naming ``where`` and the reason.
    """
    lines = text.split("\n")
    pre, nodes = _split(lines, 0)
    by_key = {n.key: n for n in nodes}
    row, teacher = by_key.get("ROW"), by_key.get("TEACHER")
    for node in (row, teacher):
        if node is not None and node.value_and_comment()[0]:
            raise MigrationError(f"{where}: {node.key} is written inline; write it as a block to migrate it.")
    kd = by_key.get("KD")
    if kd is not None and kd.value_and_comment()[0]:
        raise MigrationError(f"{where}: KD is written inline; write it as a block to migrate it.")
    if kd is not None:
        kd = _migrate_kd(kd, where)
    if row is not None or teacher is not None:
        kd_children = {c.key for c in _split(kd.body, 2)[1]} if kd is not None else set()
        if (teacher is not None and "TEACHER" in kd_children) or (row is not None and "LABEL" in kd_children):
            raise MigrationError(f"{where}: both the old and the new key (TEACHER / KD.TEACHER, ROW / KD.LABEL) are "
                                 "set; merge them by hand.")
        head = _sub_block(teacher, "TEACHER") if teacher is not None else []
        tail = _sub_block(row, "LABEL") if row is not None else []
        if kd is None:
            kd = _Node("KD", [], "KD:", [])
        kd = _Node("KD", kd.leading, kd.header, head + kd.body + tail)
    # KD goes to its own place, else to the first old block's
    anchor = by_key.get("KD") or next((n for n in nodes if n.key in ("ROW", "TEACHER")), None)
    out, amp = [], False
    for node in nodes:
        if node.key == "SOLVER":
            new_node = _migrate_amp(node)
            amp, node = new_node.body != node.body, new_node
        if node is anchor:
            out += kd.lines()
        elif node.key not in ("ROW", "TEACHER", "KD"):
            out += node.lines()
    new = "\n".join(pre + out)
    if row is not None or teacher is not None or amp:
        new = "\n".join(_rename_in_comments(new.split("\n")))
    if new != text and text.endswith("\n"):
        new = new.rstrip("\n") + "\n"
    return new


def upgrade_dict(cfg):
    """A loaded config dict (e.g. an old run's ``config.yaml``) with the old classification keys and the old
    detection loss form moved to the new places, in place; returns it."""
    if not isinstance(cfg, dict):
        return cfg
    if any(k in cfg for k in ("ROW", "TEACHER")) and not isinstance(cfg.get("KD"), dict):
        cfg["KD"] = {}
    kd = cfg.get("KD")
    for old, new in OLD_CLASSIFICATION_KEYS.items():
        section, key = old.split(".")
        node = cfg.get(section)
        if not isinstance(node, dict) or key not in node or section == "SOLVER":
            continue
        _, new_section, new_key = new.split(".")
        kd.setdefault(new_section, {}).setdefault(new_key, node.pop(key))
    for section in ("ROW", "TEACHER"):
        if cfg.get(section) == {}:
            del cfg[section]
    solver = cfg.get("SOLVER")
    if isinstance(solver, dict) and isinstance(solver.get("AMP"), bool):
        solver["AMP"] = {"ENABLED": solver["AMP"], "PRECISION": ""}
    if isinstance(kd, dict) and any(isinstance(n, str) for n in kd.get("LOSSES") or []):
        kd["LOSSES"] = legacy_specs(kd)
        for key in ("LOSS_WEIGHTS", "LOSS_START_ITERS", "PARAMS", "INPUTS"):
            kd.pop(key, None)
    return cfg


def legacy_specs(kd):
    """Specs of the old detection form held by ``kd`` (a ``KD`` node), or None if it holds none.

    The old form is ``KD.LOSSES`` as names with the parallel ``KD.LOSS_WEIGHTS`` / ``KD.LOSS_START_ITERS``
    (by position) and ``KD.PARAMS.<name>`` / ``KD.INPUTS.<name>``. ``kd`` is not changed.

    Raises:
        ConfigError: lists of the wrong length, or PARAMS / INPUTS for a loss not listed.
    """
    old = {key: kd.get(key) for key in _OLD_LOSS_KEYS[1:] if kd.get(key)}
    names = list(kd.get("LOSSES") or [])
    if not old and not any(isinstance(n, str) for n in names):
        return None
    specs = [{"name": n} if isinstance(n, str) else dict(n) for n in names]
    tags = [spec_tag(s) for s in specs]
    for key, field, what in (("LOSS_WEIGHTS", "weight", "weight"), ("LOSS_START_ITERS", "start_iter",
                                                                      "start iteration")):
        values = list(old.get(key) or [])
        if values and len(values) != len(specs):
            raise ConfigError(f"KD.{key} has {len(values)} entries but KD.LOSSES has {len(specs)} "
                              f"({', '.join(tags)}); give one {what} per loss.")
        for spec, value in zip(specs, values):
            spec[field] = value
    for key, field in (("PARAMS", "params"), ("INPUTS", "inputs")):
        extra = sorted(set(old.get(key) or {}) - set(tags))
        if extra:
            raise ConfigError(f"KD.{key} has entries {extra} for losses not in KD.LOSSES {tags}.")
        for name, value in (old.get(key) or {}).items():
            spec = specs[tags.index(name)]
            spec[field] = {**plain(spec.get(field) or {}), **plain(value)}
    return specs
