"""Print pip requirement lines, pinned and with every hash, for the named packages of uv.lock:
how an image build installs uv itself, hash-checked, before uv installs the rest.

    python locked.py uv.lock uv > uv.txt && pip install --require-hashes -r uv.txt
"""

import sys

import tomllib

with open(sys.argv[1], "rb") as handle:
    packages = {p["name"]: p for p in tomllib.load(handle)["package"]}
for name in sys.argv[2:]:
    package = packages[name]
    files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
    hashes = " ".join(f"--hash={f['hash']}" for f in files)
    print(f"{name}=={package['version']} {hashes}")
