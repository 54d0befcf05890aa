#!/usr/bin/env python
"""Install Detectron2 0.6 for kd_det, Python-only, without a compiler.

Usage: ``python tools/install_detectron2.py`` (the Makefile runs it inside .venv).

1. If ``import detectron2`` already works (e.g. a real source build on a GPU
   cluster), it is used untouched and nothing is installed.
2. Otherwise the source distribution ``pb1-detectron2==0.6`` (Detectron2 v0.6's
   Python files; its C++ sources are missing) is fetched from the package index
   pip is configured with, checked against a pinned SHA-256, and its setup.py is
   patched before ``pip install --no-build-isolation``:
     - the ``detectron2._C`` extension build is removed (``ext_modules=[]``):
       Faster R-CNN FPN calls no ``_C`` op, and kd_det/compat.py turns any call
       to one into a clear error;
     - the ``black==21.4b2`` pin is dropped (a formatter, conflicts with current
       packages) and ``iopath<0.1.10`` is relaxed (conflicts with fvcore's);
     - the ``panopticapi`` direct-URL extra is dropped (pip refuses direct URLs
       in index packages).
Idempotent: running it again when Detectron2 imports does nothing.
"""
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request

SDIST = "pb1-detectron2-0.6.tar.gz"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
PROJECT = "pb1-detectron2"

# (pattern, replacement, what it does) applied to the sdist's setup.py.
PATCHES = [
    (r"ext_modules=get_extensions\(\),", "ext_modules=[],", "drop the detectron2._C C++/CUDA extension"),
    (r'\s*"black==21\.4b2",', "", "drop the black==21.4b2 pin"),
    (r'"iopath>=0\.1\.7,<0\.1\.10"', '"iopath>=0.1.7"', "relax iopath<0.1.10"),
    (r'\s*"panopticapi @ [^"]+",', "", "drop the panopticapi direct-URL extra"),
]


def fail(msg):
    print(f"install_detectron2: {msg}", file=sys.stderr)
    sys.exit(1)


def detectron2_present():
    probe = "import detectron2, sys; sys.stdout.write(detectron2.__file__)"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def index_urls():
    """Index base URLs pip uses here: $PIP_INDEX_URL / pip config, then PyPI."""
    urls = []
    for key in ("PIP_INDEX_URL",):
        if os.environ.get(key):
            urls.append(os.environ[key])
    r = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                       capture_output=True, text=True)
    if r.returncode == 0 and r.stdout.strip():
        urls.append(r.stdout.strip())
    urls.append("https://pypi.org/simple")
    return [u.rstrip("/") for u in dict.fromkeys(urls)]


def download(dest):
    errors = []
    for base in index_urls():
        page = f"{base}/{PROJECT}/"
        try:
            html = urllib.request.urlopen(page, timeout=60).read().decode()
            links = re.findall(r'href="([^"#]*' + re.escape(SDIST) + r')[^"]*"', html)
            if not links:
                errors.append(f"{page}: no {SDIST}")
                continue
            url = urllib.parse.urljoin(page, links[0])
            data = urllib.request.urlopen(url, timeout=300).read()
        except Exception as e:  # network / index errors: try the next index
            errors.append(f"{page}: {e}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256:
            fail(f"{url} has SHA-256 {digest}, expected {SHA256}; refusing to install it.")
        with open(dest, "wb") as f:
            f.write(data)
        return
    fail(f"could not download {SDIST} from any package index ({'; '.join(errors)}).")


def patch_setup(path):
    with open(path) as f:
        src = f.read()
    for pattern, repl, what in PATCHES:
        src, n = re.subn(pattern, repl, src)
        if n != 1:
            fail(f"{path}: could not {what} (pattern {pattern!r} matched {n} times).")
    with open(path, "w") as f:
        f.write(src)


def main():
    where = detectron2_present()
    if where:
        print(f"install_detectron2: Detectron2 already importable ({where}); using it untouched.")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, SDIST)
        print(f"install_detectron2: fetching {SDIST} (Python-only Detectron2 0.6) ...")
        download(archive)
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = os.path.join(tmp, SDIST[: -len(".tar.gz")])
        patch_setup(os.path.join(src, "setup.py"))
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", src]
        if subprocess.run(cmd).returncode != 0:
            fail(f"`{' '.join(cmd)}` failed; torch and setuptools<81 must be installed first "
                 "(see requirements/torch.txt and the Makefile).")
    where = detectron2_present()
    if not where:
        fail("Detectron2 was installed but `import detectron2` still fails.")
    print(f"install_detectron2: installed Python-only Detectron2 0.6 at {where}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
