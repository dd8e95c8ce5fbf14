"""The PEP 517 build backend of the `plexus` Python package.

`pip install ./bindings/python` calls `build_wheel`, which
1. takes libplexus from `$PLEXUS_LIBRARY` if that names a prebuilt file, or else builds it
   with `cargo build --release -p plexus-ffi` in the repository this directory sits in
   (`$PLEXUS_SOURCE_DIR` names another checkout; `$CARGO` another cargo), and
2. writes a wheel holding the pure-Python package plus the library, tagged
   `py3-none-<platform>` because it carries native code but no CPython extension.

The platform tag is this interpreter's (`linux_x86_64`) unless the `plat-name` config
setting (`pip wheel -C plat-name=...`) or `$PLEXUS_WHEEL_PLATFORM` names another: a wheel whose
library was built for an older glibc or for musl (scripts/build-wheel.sh) is tagged
`manylinux_2_17_x86_64` or `musllinux_1_2_x86_64` that way.

It needs nothing but the standard library, so pip's isolated build environment downloads
nothing. `build_sdist` packs the Python sources and the Rust sources of libplexus (crates
`plexus` and `plexus-ffi` in a workspace of their own under `rust/`), so the sdist installs
wherever cargo is. `build_editable` (PEP 660) builds the library into the source tree and
installs a path entry pointing at it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

NAME = "plexus"
VERSION = "0.1.0"
HERE = Path(__file__).resolve().parent.parent  # bindings/python
PACKAGE = HERE / NAME
LIB_NAMES = ("libplexus.so", "libplexus.dylib")
# Where an sdist keeps the Rust sources of libplexus.
SDIST_RUST = "rust"
# The crates libplexus is built from: the sdist's workspace holds these and nothing else.
RUST_CRATES = ("core", "ffi")

SUMMARY = "gRPC channels over libplexus (ctypes), shaped like grpcio's, with asyncio"


# --------------------------------------------------------------------------- metadata


def _metadata() -> str:
    readme = HERE / "README.md"
    body = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {NAME}",
        f"Version: {VERSION}",
        f"Summary: {SUMMARY}",
        "License: Apache-2.0",
        "Requires-Python: >=3.9",
        "Provides-Extra: grpcio",
        'Requires-Dist: grpcio; extra == "grpcio"',
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + body


def _wheel_file(tag: str) -> str:
    return f"Wheel-Version: 1.0\nGenerator: plexus_build\nRoot-Is-Purelib: false\nTag: {tag}\n"


PLATFORM_ENV = "PLEXUS_WHEEL_PLATFORM"
# A platform tag as PEP 425 spells one: lower-case letters, digits and underscores.
_PLATFORM_TAG = re.compile(r"[a-z0-9_]+")


def _platform_tag(config_settings=None) -> str:
    """The wheel's platform tag: `plat-name` from the config settings, else
    $PLEXUS_WHEEL_PLATFORM, else this interpreter's platform."""
    given = (config_settings or {}).get("plat-name") or os.environ.get(PLATFORM_ENV)
    if not given:
        return sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if not isinstance(given, str) or not _PLATFORM_TAG.fullmatch(given):
        raise RuntimeError(
            f"plexus: platform tag {given!r} (plat-name or {PLATFORM_ENV}) is not a wheel "
            "platform tag such as manylinux_2_17_x86_64 or musllinux_1_2_x86_64"
        )
    return given


def _dist_info() -> str:
    return f"{NAME}-{VERSION}.dist-info"


# --------------------------------------------------------------------------- the library


def _workspace() -> Path:
    override = os.environ.get("PLEXUS_SOURCE_DIR")
    if override:
        root = Path(override).resolve()
    elif (HERE / SDIST_RUST / "Cargo.toml").is_file():
        root = HERE / SDIST_RUST  # an unpacked sdist
    else:
        root = HERE.parent.parent  # bindings/python in a checkout
    if not (root / "Cargo.toml").is_file() or not (root / "ffi" / "Cargo.toml").is_file():
        where = f"PLEXUS_SOURCE_DIR={override}" if override else f"{root}"
        raise RuntimeError(
            f"plexus: no plexus cargo workspace at {where} (expected Cargo.toml and "
            "ffi/Cargo.toml). Build from a checkout of the repository, point "
            "PLEXUS_SOURCE_DIR at one, or set PLEXUS_LIBRARY to a prebuilt libplexus.so."
        )
    return root


def _cargo_build() -> Path:
    root = _workspace()
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        raise RuntimeError(
            "plexus: cargo is not on PATH; install Rust (https://rustup.rs) or set "
            "PLEXUS_LIBRARY to a prebuilt libplexus.so"
        )
    cmd = [
        cargo,
        "build",
        "--release",
        "-p",
        "plexus-ffi",
        "--message-format=json-render-diagnostics",
    ]
    print(f"plexus: building libplexus: {' '.join(cmd)} (in {root})", file=sys.stderr)
    proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, check=False)
    found = None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("reason") != "compiler-artifact":
            continue
        target = message.get("target", {})
        if target.get("name") == "plexus" and "cdylib" in target.get("kind", []):
            for filename in message.get("filenames", []):
                if os.path.basename(filename) in LIB_NAMES:
                    found = Path(filename)
    if proc.returncode != 0:
        raise RuntimeError(f"plexus: cargo build failed with exit code {proc.returncode}")
    if found is None or not found.is_file():
        raise RuntimeError("plexus: cargo built no libplexus cdylib (see the output above)")
    return found


def _library() -> Path:
    prebuilt = os.environ.get("PLEXUS_LIBRARY")
    if prebuilt:
        path = Path(prebuilt)
        if not path.is_file():
            raise RuntimeError(f"plexus: PLEXUS_LIBRARY={prebuilt!r} is not a file")
        print(f"plexus: using the prebuilt {path}", file=sys.stderr)
        return path
    return _cargo_build()


# --------------------------------------------------------------------------- wheels


class _WheelWriter:
    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records: list[tuple[str, str, str]] = []

    def add(self, name: str, data: bytes, executable: bool = False) -> None:
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = (0o755 if executable else 0o644) << 16
        self.zip.writestr(info, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        self.records.append((name, f"sha256={digest.decode()}", str(len(data))))

    def close(self, record_name: str) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows(self.records)
        writer.writerow((record_name, "", ""))
        info = zipfile.ZipInfo(record_name, date_time=(2020, 1, 1, 0, 0, 0))
        self.zip.writestr(info, out.getvalue())
        self.zip.close()


def _package_files():
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts:
            continue
        if path.suffix in (".pyc", ".pyo") or path.name in LIB_NAMES:
            continue
        yield path


def _write_dist_info(wheel: _WheelWriter, tag: str) -> str:
    info = _dist_info()
    wheel.add(f"{info}/METADATA", _metadata().encode("utf-8"))
    wheel.add(f"{info}/WHEEL", _wheel_file(tag).encode("utf-8"))
    wheel.add(f"{info}/top_level.txt", f"{NAME}\n".encode())
    return f"{info}/RECORD"


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    """Builds the wheel (with libplexus) into `wheel_directory`; returns its file name."""
    tag = f"py3-none-{_platform_tag(config_settings)}"
    library = _library()
    filename = f"{NAME}-{VERSION}-{tag}.whl"
    wheel = _WheelWriter(Path(wheel_directory) / filename)
    for path in _package_files():
        wheel.add(path.relative_to(HERE).as_posix(), path.read_bytes())
    wheel.add(f"{NAME}/{library.name}", library.read_bytes(), executable=True)
    wheel.close(_write_dist_info(wheel, tag))
    return filename


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 660: builds libplexus into the source package and installs a path entry to it."""
    tag = f"py3-none-{_platform_tag(config_settings)}"
    library = _library()
    target = PACKAGE / library.name
    shutil.copyfile(library, target)
    os.chmod(target, 0o755)
    filename = f"{NAME}-{VERSION}-{tag}.whl"
    wheel = _WheelWriter(Path(wheel_directory) / filename)
    wheel.add(f"__editable__.{NAME}.pth", f"{HERE}\n".encode())
    wheel.close(_write_dist_info(wheel, tag))
    return filename


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    """Writes the .dist-info directory without building the library."""
    info = Path(metadata_directory) / _dist_info()
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(_metadata(), encoding="utf-8")
    (info / "WHEEL").write_text(
        _wheel_file(f"py3-none-{_platform_tag(config_settings)}"), encoding="utf-8"
    )
    (info / "top_level.txt").write_text(f"{NAME}\n", encoding="utf-8")
    return info.name


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def get_requires_for_build_wheel(config_settings=None):
    """Nothing to install: the backend uses the standard library only."""
    return []


get_requires_for_build_editable = get_requires_for_build_wheel
get_requires_for_build_sdist = get_requires_for_build_wheel


def _rust_files(root: Path):
    """The files of the crates libplexus is built from (RUST_CRATES), build outputs left out."""
    for crate in RUST_CRATES:
        for path in sorted((root / crate).rglob("*")):
            parts = path.relative_to(root).parts
            if path.is_dir() or "target" in parts or "__pycache__" in parts:
                continue
            yield path


def _sdist_manifest(root: Path) -> bytes:
    """The workspace's Cargo.toml with its members cut down to RUST_CRATES, so that the
    workspace settings (dependency versions, lints, the release profile) come along and the
    crates the sdist leaves out are not looked for."""
    text = (root / "Cargo.toml").read_text(encoding="utf-8")
    members = ", ".join(f'"{crate}"' for crate in RUST_CRATES)
    text, count = re.subn(r"(?m)^members\s*=\s*\[[^\]]*\]", f"members = [{members}]", text)
    if count != 1:
        raise RuntimeError(
            f"plexus: found no single `members = [...]` line in {root / 'Cargo.toml'} to "
            "narrow to the crates of libplexus"
        )
    return text.encode("utf-8")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_sdist(sdist_directory, config_settings=None):
    """Packs the Python sources and, under `rust/`, the Rust sources of libplexus with the
    workspace's Cargo.toml and Cargo.lock: a wheel built from it needs only cargo."""
    root = _workspace()
    base = f"{NAME}-{VERSION}"
    filename = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / filename, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        files = [HERE / "pyproject.toml", HERE / "README.md"]
        files += sorted((HERE / "build_backend").glob("*.py"))
        files += list(_package_files())
        for path in files:
            if path.is_file():
                tar.add(path, arcname=f"{base}/{path.relative_to(HERE).as_posix()}")
        rust = f"{base}/{SDIST_RUST}"
        _add_bytes(tar, f"{rust}/Cargo.toml", _sdist_manifest(root))
        tar.add(root / "Cargo.lock", arcname=f"{rust}/Cargo.lock")
        for path in _rust_files(root):
            tar.add(path, arcname=f"{rust}/{path.relative_to(root).as_posix()}")
        _add_bytes(tar, f"{base}/PKG-INFO", _metadata().encode("utf-8"))
    return filename
