"""A diskless lab node: PXE as a lab node (provision.lab.node: udhcpc, tftp-hpa, curl), then what the diskless
initramfs does, with its own script (provision/scripts/diskless-fetch.sh under busybox sh and busybox wget),
and the identity applied to the image unpacked with unsquashfs (a namespace mounts nothing).

    ip netns exec pv-n01 python -m provision.lab.diskless_node --name n01 --mac 02:77:00:00:00:01 --work DIR

Steps and their files go to <work>/result.json (exit 0 only if the image was verified and the identity
applied). `--tries N` bounds the fetch script's tries (a wrong image: N refusals, then exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from provision.errors import ProvisionError
from provision.lab.node import BootResult, LabNode


def _arg(append: str, key: str) -> str:
    for arg in append.split():
        name, _, value = arg.partition("=")
        if name == key:
            return value
    raise ProvisionError(f"PXE APPEND has no {key}=: {append!r}")


def boot_diskless(node: LabNode, tries: int, retry_seconds: float) -> BootResult:
    """DHCP and PXE; the diskless entry's kernel and initramfs; the fetch script; unsquashfs; the identity."""
    result = node.result
    try:
        lease = node.dhcp()
        entry = node.pxe(lease)
        result.first_entry = entry.label
        if entry.label != "diskless":
            raise ProvisionError(f"PXE config boots {entry.label}, not diskless")
        started = time.monotonic()
        for file in (entry.kernel, entry.initrd):
            node.fetch_boot_file(lease.next_server, file)
        node.step("kernel", started, f"{entry.kernel} and {entry.initrd} fetched")
        root_url, identity_url = _arg(entry.append, "provision.root"), _arg(entry.append, "provision.identity")
        fetched = node.work / "diskless"
        shutil.rmtree(fetched, ignore_errors=True)
        fetched.mkdir()
        script = node.work / "diskless-fetch.sh"
        script.write_bytes(resources.files("provision").joinpath("scripts/diskless-fetch.sh").read_bytes())
        busybox = shutil.which("busybox")
        if busybox is None:
            raise ProvisionError("busybox not found (Debian package busybox): the initramfs's shell and wget")
        bin_dir = node.work / "busybox-bin"  # busybox's applets first on PATH, as in the initramfs
        bin_dir.mkdir(exist_ok=True)
        for applet in ("sh", "wget", "sha256sum", "cut", "grep", "wc", "rm", "sleep"):
            (bin_dir / applet).unlink(missing_ok=True)
            (bin_dir / applet).symlink_to(busybox)
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "PROVISION_TRIES": str(tries),
               "PROVISION_RETRY_SECONDS": f"{retry_seconds:g}"}
        started = time.monotonic()
        proc = subprocess.run([busybox, "sh", str(script), root_url, identity_url, str(fetched)], env=env,
                              capture_output=True, text=True, timeout=600)
        node.say(proc.stdout.strip())
        node.step("fetch", started, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "no output")
        if proc.returncode != 0:
            raise ProvisionError(f"diskless-fetch exit {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}")
        started = time.monotonic()
        root = node.work / "root"
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(root), str(fetched / "root.squashfs")], check=True,
                       capture_output=True)
        applied = subprocess.run([busybox, "sh", str(fetched / "identity"), str(root)], env=env,
                                 capture_output=True, text=True, timeout=60)
        node.step("identity", started, (applied.stdout + applied.stderr).strip().replace("\n", "; "))
        if applied.returncode != 0:
            raise ProvisionError(f"identity script exit {applied.returncode}: {applied.stderr.strip()}")
        result.ok = True
    except (ProvisionError, OSError, subprocess.SubprocessError) as exc:
        result.error = str(exc)
        node.say(f"FAILED: {exc}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provision.lab.diskless_node", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--mac", required=True)
    parser.add_argument("--work", required=True, type=Path, help="directory for downloads, log, result.json")
    parser.add_argument("--dhcp-wait", type=float, default=60.0, help="seconds to keep asking for a lease")
    parser.add_argument("--tries", type=int, default=1, help="tries of the fetch script (default 1)")
    parser.add_argument("--retry-seconds", type=float, default=1.0, help="between tries (default 1)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    node = LabNode(args.name, args.mac, args.work / "no-disk", args.work, args.dhcp_wait, sys.stdout)
    result = boot_diskless(node, args.tries, args.retry_seconds)
    (args.work / "result.json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
