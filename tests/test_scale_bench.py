"""bench/scale_bench.py: the whole workflow in the lab at N nodes, where the time goes (from the install log's
timestamps) and what each kind of process costs (from /proc). The pure parts here; a 2-node run as root (the
big N are a bench: bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from datetime import datetime

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location("scale_bench", REPO / "bench" / "scale_bench.py")
sb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sb)

LOG = """provision: dhcpd serving 10.77.0.0/24 (pid 1); 2 node(s) to install, 0 done before
2026-12-06 10:00:01,000 provision.tftp: tftp: sent lpxelinux.0 to 10.77.0.11:4000: 75072 bytes in 0.011 s
2026-12-06 10:00:02,000 provision.http: http: sent boot/initrd.img to 10.77.0.11: 149 bytes in 0.00 s
2026-12-06 10:00:04,500 provision.http: http: sent boot/initrd.img to 10.77.0.12: 149 bytes in 0.00 s
2026-12-06 10:00:05,000 provision.http: http: node n001 reports ready: dollyC listening on port 9998
2026-12-06 10:00:06,000 provision.http: http: node n002 reports ready: dollyC listening on port 9998
2026-12-06 10:00:16,000 provision.http: http: node n001 reports cloning: image received
2026-12-06 10:00:17,000 provision.http: http: node n002 reports cloning: image received
2026-12-06 10:00:17,500 provision.http: http: node n001 reports done: cloned
2026-12-06 10:00:18,000 provision.http: http: node n002 reports done: cloned
2026-12-06 10:00:21,000 provision.tftp: tftp: sent pxelinux.cfg/01-02-77-00-00-00-01 to 10.77.0.11:5: 175 bytes
2026-12-06 10:00:22,000 provision.tftp: tftp: sent pxelinux.cfg/01-02-77-00-00-00-02 to 10.77.0.12:6: 175 bytes
"""


def test_each_phase_ends_at_the_last_log_line_of_its_kind():
    at = datetime(2026, 12, 6, 10, 0, 0).timestamp()
    split = sb.phases(LOG, started=at - 3, reset=at, ended=at + 25)
    assert split == pytest.approx({"lab up": 3, "boot files": 4.5, "ready wait": 1.5, "ring": 11,
                                   "identity+flip": 1, "reboot": 4, "check+down": 3})
    assert list(split) == list(sb.PHASES)


def test_when_the_last_nodes_host_keys_were_made():
    at = datetime(2026, 12, 6, 10, 0, 0).timestamp()
    log = LOG + ("2026-12-06 10:00:03,000 provision.host_keys: host keys: made n001's (rsa, ecdsa, ed25519)\n"
                 "2026-12-06 10:00:03,250 provision.host_keys: host keys: made n002's (rsa, ecdsa, ed25519)\n")
    assert sb.keys_made(log, reset=at) == pytest.approx(3.25)
    assert sb.keys_made(LOG, reset=at) is None


def test_processes_are_told_apart_by_their_command_line():
    py = "/work/main/.venv/bin/python"
    assert sb.kind_of([py, "/work/main/.venv/bin/dollyC", "--listen", "0.0.0.0:9998"]) == "dollyC"
    assert sb.kind_of([py, "/work/main/.venv/bin/dollyS", "-f", "ring.conf"]) == "dollyS"
    assert sb.kind_of([py, "-m", "provision", "install", "--inventory", "x.yaml"]) == "provision install"
    assert sb.kind_of([py, "-m", "provision", "status", "--json"]) is None
    assert sb.kind_of([py, "-m", "provision.lab.node", "--name", "n001"]) == "node player"
    assert sb.kind_of(["/usr/sbin/dhcpd", "-4", "-f"]) == "dhcpd"
    assert sb.kind_of(["ssh-keygen", "-q", "-t", "rsa"]) == "ssh-keygen"


def test_over_multicast_the_boot_files_end_with_atftpds_last_transfer(tmp_path):
    at = datetime(2026, 12, 6, 10, 0, 0).timestamp()
    log = tmp_path / "atftpd.log"
    log.write_text("Dec 06 10:00:01 vm atftpd[1.2]: Serving boot/initrd.img to 10.77.0.11:2070\n"
                   "Dec 06 10:00:02 vm atftpd[1.2]: End of multicast transfer\n"
                   "Dec 06 10:00:03 vm atftpd[1.2]: End of multicast transfer\n")
    boot_end = sb.multicast_end(log, 2026)
    assert boot_end == at + 3.5 and sb.multicast_end(tmp_path / "none.log", 2026) is None
    over_multicast = LOG.replace("sent boot/initrd.img", "sent nothing")  # no TFTP/HTTP line of the initrd
    split = sb.phases(over_multicast, started=at - 3, reset=at, ended=at + 25, boot_end=boot_end)
    assert (split["boot files"], split["ready wait"]) == pytest.approx((3.5, 2.5))
    assert sb.kind_of(["curl", "-fsS", "http://10.77.0.1:8080/boot/vmlinuz"]) is None


@pytest.mark.root
def test_two_nodes_with_a_boot_payload_and_a_faster_server_link(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "scale_bench.py"), "--nodes", "2",
                           "--rate", "100mbit", "--server-rate", "1gbit", "--image-mib", "4", "--boot-kb", "300",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "scale_bench.json").read_text())
    row = results["rows"][0]
    assert (results["server_rate"], row["n"], row["as_expected"]) == ("1gbit", 2, True)
    assert row["boot_bytes"] == pytest.approx(300_000, rel=0.005)
    assert all(seconds >= 0 for seconds in row["phases"].values()) and row["phases"]["ring"] > 0
    assert row["seconds"] == pytest.approx(sum(row["phases"][p] for p in sb.PHASES[1:-1]))
    assert row["host_keys_made"] is not None  # the nodes' keys made by the server during the install
    processes = row["processes"]
    assert processes["dollyC"]["processes"] == 2 and processes["node player"]["processes"] == 2
    assert processes["dollyC"]["peak_rss_mb"] > 5 and processes["provision install"]["peak_rss_mb"] > 5
    assert processes["provision install"]["cpu_s"] > 0
    assert (tmp_path / "scale_bench.png").stat().st_size > 10_000
