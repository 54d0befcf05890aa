"""The weight files the shipped configs name: where they come from, how they are checked, how to get them.

``kd_det/data/weights.csv`` is the one source (``docs/weights.md`` is its rendering, :func:`render`):
one row per file under ``pretrained/`` with

* ``url``: where the file is published (the name there may differ from ``file``);
* ``hash_kind`` / ``hash``: ``sha256_prefix`` (torchvision: the SHA-256 prefix in the name),
  ``md5_prefix`` (Detectron2 model zoo: the MD5 prefix in the name) or ``pinned_sha256`` (MSRA
  ImageNet backbones, no published hash: the SHA-256 of the first fetch is recorded in
  ``DEST/SHA256SUMS`` and every later fetch must equal it);
* ``size_mb``: the size where its publisher states one (torchvision's weight metadata);
* ``conversion``: ``torchvision`` (a torchvision state dict turned into Detectron2 backbone weights by
  :func:`kd_det.classification.convert.convert_checkpoint`), ``rename`` (a model-zoo file stored under the
  name the configs use) or ``none``;
* ``configs``: the shipped configs naming ``pretrained/<file>`` (a test keeps it true).

:func:`fetch` downloads with urllib (``file://`` URLs included), verifies, converts, places the file
atomically and reads it back; nothing is placed and no partial file is left when anything fails.
:func:`missing_weights_error` is the sentence for a weights file that is not there: the fetch command for a
catalog file, the command that trains an ``output/...`` teacher. Nothing here imports Detectron2.
"""
import csv
import glob
import hashlib
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from . import REPO_ROOT
from .core import atomic_write, atomic_write_text
from .errors import ConfigError, UserError

__all__ = ["CATALOG", "DOC", "DEFAULT_DEST", "SUMS", "Entry", "read_catalog", "configs_naming", "render",
           "fetch", "mirror_url", "missing_weights_error", "require_weights"]

CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "weights.csv")
DOC = os.path.join(REPO_ROOT, "docs", "weights.md")
DEFAULT_DEST = "pretrained"
#: File in the destination folder holding the SHA-256 pinned at the first fetch (``sha256sum`` format).
SUMS = "SHA256SUMS"
HASH_KINDS = ("sha256_prefix", "md5_prefix", "pinned_sha256")
CONVERSIONS = ("torchvision", "rename", "none")
#: ``output/...`` weights a make target writes (other ``output/`` files: the config whose OUTPUT_DIR holds them).
TRAINED_BY = {"output/demo/teacher/model_final.pth": "make demo"}


@dataclass(frozen=True)
class Entry:
    """One row of the catalog."""

    file: str
    url: str
    hash_kind: str
    hash: str
    size_mb: str
    conversion: str
    configs: Tuple[str, ...]


def read_catalog(path: str = CATALOG) -> Dict[str, Entry]:
    """file -> :class:`Entry`, in the csv's order.

    Raises:
        ConfigError: a row with an unknown hash kind or conversion, or without the hash its kind needs.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for r in rows:
        e = Entry(r["file"], r["url"], r["hash_kind"], r["hash"], r["size_mb"], r["conversion"],
                  tuple(r["configs"].split()))
        if e.hash_kind not in HASH_KINDS or e.conversion not in CONVERSIONS or \
                (e.hash_kind != "pinned_sha256") != bool(re.fullmatch(r"[0-9a-f]+", e.hash)):
            raise ConfigError(f"Weights catalog {path}: row {e.file} needs hash_kind in {HASH_KINDS}, a hex hash "
                              f"unless pinned, and conversion in {CONVERSIONS}.")
        out[e.file] = e
    return out


def configs_naming(root: str = REPO_ROOT) -> Dict[str, List[str]]:
    """file -> sorted configs (relative to ``root``) whose text names ``pretrained/<file>``."""
    out: Dict[str, List[str]] = {}
    for cfg in sorted(glob.glob(os.path.join(root, "configs", "**", "*.yaml"), recursive=True)):
        with open(cfg) as f:
            for name in set(re.findall(r"pretrained/([^\"'\s]+)", f.read())):
                out.setdefault(name, []).append(os.path.relpath(cfg, root))
    return out


def render(entries: Dict[str, Entry]) -> str:
    """The text of docs/weights.md for ``entries``."""
    kind = {"sha256_prefix": "SHA-256 prefix `{}` (torchvision's name)", "md5_prefix": "MD5 prefix `{}` "
            "(model-zoo name)", "pinned_sha256": "none published: pinned at the first fetch in `pretrained/SHA256SUMS`"}
    conv = {"torchvision": "converted by `kd_det.classification.convert` (as `tools/convert_backbone.py`)",
            "rename": "stored under the config's name", "none": "stored as published"}
    lines = ["# Weights: the files the shipped configs name",
             "",
             "Generated from `kd_det/data/weights.csv` (`python tools/fetch_weights.py --render`); a test keeps",
             "them equal and checks the catalog names every `pretrained/` file a shipped config names.",
             "",
             "```bash",
             "python tools/fetch_weights.py --list                      # this table",
             "python tools/fetch_weights.py                             # every file into pretrained/",
             "python tools/fetch_weights.py R-18.pkl --dest pretrained  # one file",
             "python tools/fetch_weights.py --mirror /data/weights      # a folder or URL holding the published names",
             "```",
             "",
             "A download whose hash differs is refused and nothing is placed; files are written atomically and",
             "read back (readability only: loading into the model checks the tensors). Files already in the",
             "destination are kept. Output folders `output/...` (teachers) are trained, not downloaded: a missing one",
             "gets the command that trains it (`make demo` for `output/demo/teacher/model_final.pth`).",
             "",
             "| file | url | hash | size (MB) | placed | configs |",
             "|---|---|---|---|---|---|"]
    for e in entries.values():
        lines.append(f"| `pretrained/{e.file}` | {e.url} | {kind[e.hash_kind].format(e.hash)} | "
                     f"{e.size_mb or 'not published'} | {conv[e.conversion]} | "
                     + "<br>".join(f"`{c}`" for c in e.configs) + " |")
    return "\n".join(lines) + "\n"


def mirror_url(url: str, mirror: Optional[str]) -> str:
    """``url`` with its part up to the last ``/`` replaced by ``mirror`` (a URL, or a folder -> ``file://``)."""
    if not mirror:
        return url
    if "://" not in mirror:
        mirror = "file://" + os.path.abspath(mirror)
    return mirror.rstrip("/") + "/" + url.rsplit("/", 1)[1]


def _writable_dest(dest: str) -> None:
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as e:
        raise UserError(f"--dest {dest} cannot be created ({e.strerror}); give a folder you can write to.") from None
    if not os.access(dest, os.W_OK | os.X_OK):
        raise UserError(f"--dest {dest} is not writable; give a folder you can write to.")


def _download(url: str, mirror: Optional[str], f) -> Tuple[str, str]:
    """Stream ``url`` into the open binary file ``f``; returns (sha256, md5) hex digests."""
    sha, md5 = hashlib.sha256(), hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                sha.update(chunk)
                md5.update(chunk)
                f.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        hint = (f"check --mirror {mirror}" if mirror
                else "check the network or give --mirror URL|DIR (a copy under that name)")
        raise UserError(f"Could not download {url} ({reason}); {hint}.") from None
    f.flush()
    return sha.hexdigest(), md5.hexdigest()


def _read_sums(dest: str) -> Dict[str, str]:
    path = os.path.join(dest, SUMS)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {name: digest for digest, name in (line.split(None, 1) for line in f if line.strip())
                for name in [name.strip()]}


def _check_hash(e: Entry, url: str, dest: str, sha: str, md5: str) -> None:
    if e.hash_kind == "pinned_sha256":
        pinned = _read_sums(dest).get(e.file)
        if pinned and pinned != sha:
            raise UserError(f"Downloaded {url} has SHA-256 {sha[:16]}… but {os.path.join(dest, SUMS)} pinned "
                            f"{pinned[:16]}… for {e.file} at its first fetch; nothing was placed (the file changed "
                            "upstream or on the mirror: check it, then delete its line to pin the new one).")
        return
    digest, name = (sha, "SHA-256") if e.hash_kind == "sha256_prefix" else (md5, "MD5")
    if not digest.startswith(e.hash):
        raise UserError(f"Downloaded {url} has {name} {digest[:16]}… but its published prefix is {e.hash}; nothing "
                        f"was placed in {dest} (a damaged download or a wrong mirror file: fetch it again).")


def _place(e: Entry, tmp: str, dst: str) -> None:
    from .safe_load import read_detectron2_weights

    if e.conversion == "torchvision":
        from .classification.convert import convert_checkpoint

        convert_checkpoint(tmp, dst)  # atomic itself
    else:
        with open(tmp, "rb") as src:
            atomic_write(dst, lambda f: shutil.copyfileobj(src, f, 1 << 20))
    try:
        read_detectron2_weights(dst, "Fetched file")
    except UserError:
        os.remove(dst)
        raise


def fetch(names: List[str], dest: str = DEFAULT_DEST, mirror: Optional[str] = None,
          catalog: str = CATALOG) -> List[str]:
    """Download, verify, convert and place ``names`` (all catalog files if empty) in ``dest``.

    Returns:
        one line per file saying what was done.

    Raises:
        UserError: an unknown name (listing the known ones), ``dest`` not writable, a URL that cannot be
            reached, a hash that differs; nothing is placed for that file and no partial file is left.
    """
    entries = read_catalog(catalog)
    names = [os.path.basename(n) for n in names] or list(entries)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise UserError(f"Unknown weights file {unknown[0]!r}; the catalog {catalog} knows "
                        + ", ".join(entries) + ".")
    _writable_dest(dest)
    done = []
    for name in names:
        e, dst = entries[name], os.path.join(dest, name)
        if os.path.exists(dst):
            done.append(f"{dst}: already there, kept (delete it to fetch it again)")
            continue
        url = mirror_url(e.url, mirror)
        with tempfile.NamedTemporaryFile(dir=dest, prefix=f".{name}.", suffix=".part") as f:
            sha, md5 = _download(url, mirror, f)
            _check_hash(e, url, dest, sha, md5)
            _place(e, f.name, dst)
        how = {"torchvision": "verified, converted", "rename": "verified, renamed", "none": "verified"}[e.conversion]
        if e.hash_kind == "pinned_sha256":
            sums = _read_sums(dest)
            how = f"checked against {SUMS}" if e.file in sums else f"pinned in {SUMS} (first fetch)"
            sums[e.file] = sha
            atomic_write_text(os.path.join(dest, SUMS), "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
        done.append(f"{dst}: {how} (from {url}, sha256 {sha[:12]}…)")
    return done


def _trained_by(path: str, teacher_config: str = "") -> Optional[str]:
    """The command that writes the ``output/...`` file ``path``, or None if ``path`` is not under output/."""
    rel = os.path.normpath(os.path.relpath(path, REPO_ROOT) if os.path.isabs(path) else path)
    if rel.split(os.sep)[0] != "output":
        return None
    if rel in TRAINED_BY:
        return TRAINED_BY[rel]
    folder = os.path.dirname(rel)
    for cfg in sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)):
        with open(cfg) as f:
            m = re.search(r"^OUTPUT_DIR:\s*[\"']?([^\"'\s#]+)", f.read(), re.M)
        if m and os.path.normpath(m.group(1)) == folder:
            cfg = os.path.relpath(cfg, REPO_ROOT)
            tool = "train_cls.py --config" if cfg.startswith("configs/classification") else "train_net.py --config-file"
            return f"python tools/{tool} {cfg}"
    if teacher_config:
        return f"python tools/train_net.py --config-file {teacher_config} OUTPUT_DIR {folder}"
    return None


def missing_weights_error(key: str, path: str, teacher_config: str = "") -> ConfigError:
    """The sentence for ``key`` naming the missing file ``path``: how to fetch or train it where kd_det knows.

    ``teacher_config``: the config that trains ``path`` when no shipped config's OUTPUT_DIR holds it.
    """
    name, folder = os.path.basename(path), os.path.dirname(path)
    if name in read_catalog() and _trained_by(path) is None:
        dest = "" if os.path.normpath(folder or ".") == DEFAULT_DEST else f" --dest {folder or '.'}"
        return ConfigError(f"{key} {path} does not exist; fetch it with `python tools/fetch_weights.py {name}{dest}`.")
    command = _trained_by(path, teacher_config)
    if command:
        return ConfigError(f"{key} {path} does not exist; train it with `{command}`.")
    return ConfigError(f"{key} {path} does not exist.")


def require_weights(key: str, path: str) -> None:
    """Raise :func:`missing_weights_error` when the local file ``path`` (not empty, not a URL) is missing."""
    if path and "://" not in path and not os.path.isfile(path):
        raise missing_weights_error(key, path)
