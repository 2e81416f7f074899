"""Build vpcnet's node image offline from Debian packages and PyPI: no Docker daemon, no registry.

    python scripts/image/build.py [--output vpcnet.oci.tar] [--name localhost/vpcnet:VERSION]
        [--version VERSION] [--stamp FILE [--reuse]]

1. wheels: vpcnet's own wheel, requirements-runtime.lock's wheels and pip's, from PyPI (or pip's cache);
2. root filesystem: mmdebstrap (minbase, Debian bookworm) with python3, iproute2, iptables, ipset, nftables,
   ca-certificates and the portmap/loopback CNI plugins, no docs, man pages or locales; then, in the chroot, a
   virtualenv at /opt/vpcnet/venv with exactly the runtime lock and vpcnet;
3. the CNI plugin laid out as it goes onto a node's /opt/cni/bin (the DaemonSet's init container copies
   /opt/cni/bin/* there): `vpcnet-cni`, the native client compiled here (static), whose fallback runs the
   node's /usr/bin/python3 on `vpcnet-shim/shim.py` (standard library only), and portmap/loopback;
4. an OCI archive packed by ocipack.py in two layers, Debian below and vpcnet above.

`--version` builds vpcnet's wheel under another version than pyproject's (a second, newer build of the same
source, as the upgrade test rolls to). `--stamp FILE` records a digest of everything the image is made from
(the sources, the lock, the build scripts, the options) next to the archive's digest; with `--reuse`, a
build whose inputs match the stamp and whose archive is still the one stamped is skipped.

Reproducible: SOURCE_DATE_EPOCH (default: the last commit's time) fixes every timestamp, PYTHONHASHSEED=0
keeps .pyc files stable, and .pyc files use checked hashes instead of mtimes. Runs as root (mmdebstrap's
root mode: chroot needs it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import ocipack  # noqa: E402

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "python3",
    "iproute2",
    "iptables",
    "ipset",
    "nftables",
    "ca-certificates",
    "containernetworking-plugins",  # only portmap and loopback are unpacked (DPKG_FILTERS)
)
# dpkg drops these at unpack time, so they never take space (the last matching rule wins).
DPKG_FILTERS = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/lib/cni/*",
    "path-include=/usr/lib/cni/portmap",
    "path-include=/usr/lib/cni/loopback",
)
VENV = "/opt/vpcnet/venv"
CNI_BIN = "/opt/cni/bin"  # the same path in the image and on the node
SHIM_DIR = f"{CNI_BIN}/vpcnet-shim"
NODE_PYTHON = "/usr/bin/python3"  # what the native client's fallback runs, on the node
AGENT_SOCKET = "/var/run/vpcnet/agent.sock"
NODE_INIT = "/usr/local/bin/vpcnet-node-init"  # the DaemonSet's init container runs it
EXTRA_CNI_PLUGINS = ("portmap", "loopback")
APP_LAYER = ("opt/vpcnet", "opt/cni", "usr/local/bin")
# Entries the build leaves that differ per run and mean nothing in an image.
VOLATILE = (
    "var/cache/ldconfig/aux-cache",
    "var/log/dpkg.log",
    "var/log/apt",
    "var/log/alternatives.log",
    "var/lib/dpkg/status-old",
    "var/lib/dpkg/diversions-old",
    "var/cache/debconf/config.dat-old",
    "var/cache/debconf/templates.dat-old",
    "etc/machine-id",
)


def run(argv: list[str], **kwargs: object) -> None:
    print("+", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, **kwargs)  # type: ignore[call-overload]


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


# What the image is made from, below ROOT (besides Debian's packages and PyPI's wheels, pinned by name).
INPUTS = ("pyproject.toml", "README.md", "requirements-runtime.lock", "vpcnet", "scripts/image")


def inputs_digest(options: dict[str, object]) -> str:
    """A digest of the input files' paths and contents and of the build's options."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for top in INPUTS:
        base = ROOT / top
        files = sorted(base.rglob("*")) if base.is_dir() else [base]
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"{path.relative_to(ROOT)}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def stamped(stamp: Path, inputs: str, output: Path) -> bool:
    """Whether output is the archive a build from these inputs wrote."""
    try:
        record = json.loads(stamp.read_text())
        return bool(record["inputs"] == inputs and record["archive"] == file_digest(output))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def source_tree(work: Path, new_version: str) -> Path:
    """A copy of vpcnet's source whose pyproject says new_version (what pip builds the wheel from)."""
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    for top in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / top, src / top)
    shutil.copytree(ROOT / "vpcnet", src / "vpcnet", ignore=shutil.ignore_patterns("__pycache__"))
    text = (src / "pyproject.toml").read_text()
    old = f'version = "{version()}"'
    if old not in text:
        raise SystemExit(f"{ROOT / 'pyproject.toml'}: no line {old!r} to set the version in")
    (src / "pyproject.toml").write_text(text.replace(old, f'version = "{new_version}"', 1))
    return src


def source_date_epoch() -> int:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    out = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"], capture_output=True, text=True, check=False
    )
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else 0


def fetch_wheels(wheels: Path, python: str, env: dict[str, str], source: Path) -> None:
    """vpcnet's wheel and the pinned runtime wheels (binary only: the image has no compiler)."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], env=env)
    lock = ["-r", str(ROOT / "requirements-runtime.lock"), f"pip=={pip_version(python)}"]
    run([*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *lock], env=env)
    shutil.copy(ROOT / "requirements-runtime.lock", wheels / "requirements-runtime.lock")


def pip_version(python: str) -> str:
    out = subprocess.run([python, "-m", "pip", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def customize_script(pip_wheel: str, vpcnet_version: str) -> str:
    """Run by mmdebstrap with the chroot's /proc and /dev mounted; $1 is the root."""
    # a clean environment: nothing of the builder's (PIP_*, locale, ...) reaches what goes into the image
    pycompile = "-i PATH=/usr/sbin:/usr/bin:/sbin:/bin SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH PYTHONHASHSEED=0"
    return f"""set -eu
root="$1"
chroot "$root" {NODE_PYTHON} -m venv --without-pip {VENV}
chroot "$root" env {pycompile} {VENV}/bin/python /tmp/wheels/{pip_wheel}/pip install \\
    --no-index --find-links /tmp/wheels --no-deps --disable-pip-version-check --no-warn-script-location -q \\
    -r /tmp/wheels/requirements-runtime.lock vpcnet=={vpcnet_version}
mkdir -p "$root/usr/local/bin"
ln -s {VENV}/bin/vpcnet "$root/usr/local/bin/vpcnet"
chmod 0755 "$root{NODE_INIT}"
chroot "$root" env {pycompile} {NODE_PYTHON} -c \\
    'import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True)' {SHIM_DIR}/shim.py
rm -rf "$root/tmp/wheels"
"""


def unmount_below(path: Path) -> list[str]:
    """Unmount whatever is mounted at or under path, deepest first. A build killed mid-way (SIGKILL:
    mmdebstrap cannot clean up) leaves the chroot's /sys, /dev/pts and /dev/shm mounted in the old
    rootfs; removing that tree without this would walk into them. Returns the points it unmounted."""
    root = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # field 5 is the mount point, with space, tab, newline and backslash octal-escaped
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                points.append(point)
    deepest_first = sorted(points, key=len, reverse=True)
    for point in deepest_first:
        subprocess.run(["umount", "--lazy", point], check=True)
    return deepest_first


def build_rootfs(rootfs: Path, wheels: Path, native: Path, env: dict[str, str], vpcnet_version: str) -> None:
    if rootfs.exists():
        unmount_below(rootfs)
    shutil.rmtree(rootfs, ignore_errors=True)
    script = rootfs.parent / "customize.sh"
    pip_wheel = next(wheels.glob("pip-*.whl")).name  # pip runs from its wheel
    script.write_text(customize_script(pip_wheel, vpcnet_version))
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        # /usr merged by the hook, not by the usrmerge package (which would pull in perl, ~50 MB)
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        "--include=" + ",".join(PACKAGES),
        *[f"--dpkgopt={f}" for f in DPKG_FILTERS],
        "--aptopt=APT::Install-Recommends false",
        f'--customize-hook=mkdir -p "$1/tmp/wheels" "$1{SHIM_DIR}"',
        f"--customize-hook=copy-in {' '.join(str(p) for p in sorted(wheels.iterdir()))} /tmp/wheels",
        f"--customize-hook=copy-in {ROOT / 'vpcnet/cni/shim.py'} {SHIM_DIR}",
        f"--customize-hook=copy-in {native} {CNI_BIN}",
        f"--customize-hook=copy-in {HERE / 'node-init.sh'} /usr/local/bin",
        f'--customize-hook=mv "$1/usr/local/bin/node-init.sh" "$1{NODE_INIT}"',
        *[f'--customize-hook=ln -s /usr/lib/cni/{p} "$1{CNI_BIN}/{p}"' for p in EXTRA_CNI_PLUGINS],
        f'--customize-hook=sh {script} "$1"',
        SUITE,
        str(rootfs),
        MIRROR,
    ]
    run(argv, env=env)
    for rel in VOLATILE:
        path = rootfs / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            path.mkdir()
        else:
            path.unlink(missing_ok=True)


def compile_native(out_dir: Path) -> Path:
    """The native client, built by the same rule install-cni uses, with the node's paths baked in."""
    from vpcnet.cni.install import install_native

    shutil.rmtree(out_dir, ignore_errors=True)
    return install_native(out_dir, AGENT_SOCKET, python=NODE_PYTHON, shim_dir=SHIM_DIR)


def image_config(vpcnet_version: str) -> dict[str, object]:
    path = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {
        "Entrypoint": ["vpcnet"],
        "Cmd": ["agent"],
        "Env": [f"PATH={path}", "PYTHONDONTWRITEBYTECODE=1"],
        "WorkingDir": "/",
        "Labels": {
            "org.opencontainers.image.title": "vpcnet",
            "org.opencontainers.image.version": vpcnet_version,
            "org.opencontainers.image.source": "https://github.com/vpcnet/vpcnet",
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--output", type=Path, default=ROOT / "vpcnet.oci.tar")
    parser.add_argument("--name", help="the image's name (default localhost/vpcnet:VERSION)")
    parser.add_argument("--version", help="vpcnet's version in the image (default pyproject's)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "image")
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose pip fetches wheels")
    parser.add_argument("--stamp", type=Path, help="record the inputs here, with the archive digest")
    parser.add_argument("--reuse", action="store_true", help="skip the build when --stamp matches")
    args = parser.parse_args(argv)
    if args.reuse and args.stamp is None:
        parser.error("--reuse needs --stamp FILE")
    vpcnet_version: str = args.version or version()
    name: str = args.name or f"localhost/vpcnet:{vpcnet_version.replace('+', '-')}"
    started = time.monotonic()
    epoch = source_date_epoch()
    options = {"name": name, "version": vpcnet_version, "epoch": epoch, "suite": SUITE, "mirror": MIRROR}
    inputs = inputs_digest(options) if args.stamp else ""
    if args.reuse and stamped(args.stamp, inputs, args.output):
        print(f"reused {args.output}: its stamp {args.stamp} matches the inputs")
        return 0
    if os.geteuid() != 0:
        parser.error("run as root: mmdebstrap's root mode chroots into the new filesystem")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = ROOT if args.version is None else source_tree(work, vpcnet_version)
    fetch_wheels(work / "wheels", args.python, env, source)
    native = compile_native(work / "native")
    build_rootfs(work / "rootfs", work / "wheels", native, env, vpcnet_version)
    layers = ocipack.pack_layers(
        work / "rootfs", [("vpcnet", APP_LAYER, "set"), ("debian", (), "clamp")], work / "layers", epoch
    )
    layers.reverse()  # bottom first: Debian, then vpcnet
    if args.stamp:
        args.stamp.unlink(missing_ok=True)  # the old stamp is void once the archive is rewritten
    digests = ocipack.write_archive(args.output, layers, image_config(vpcnet_version), name, epoch)
    for layer in layers:
        print(
            f"layer {layer.name}: {layer.blob.digest}"
            f" {layer.blob.size / 1e6:.1f} MB gzip, {layer.entries} entries"
        )
    size = args.output.stat().st_size
    print(f"image {name}: manifest {digests['manifest']}")
    print(f"wrote {args.output} ({size / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    if args.stamp:
        args.stamp.write_text(json.dumps({"inputs": inputs, "archive": file_digest(args.output)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
