"""Test helper, run inside the lab's server namespace: the server side of an install, composed from the
service modules the way `provision install` composes them (render -> boot files -> dhcpd -> TFTP + HTTP
-> dollyS once every node is ready -> flip each node to local boot as it reports done).

    ip netns exec pv-<server> python tests/lab_serve.py INVENTORY OUT_DIR STATE_FILE

Prints "SERVING" when all services are up; ends (stopping them) when stdin closes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

from provision.bootmode import BootMode
from provision.inventory import load_inventory
from provision.render import DHCPD_CONF, DOLLY_CONF, KICKSTART_DIR, TFTP_ROOT, render_to
from provision.services.dhcpd import DhcpdProcess
from provision.services.http import HttpServer
from provision.services.tftp import TftpServer, install_boot_files
from provision.state import NodeState, StateStore


def main(inventory: str, out: str, state_file: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    inv, out_dir = load_inventory(inventory), Path(out)
    modes = dict.fromkeys(inv.node_names, BootMode.INSTALL)
    render_to(out_dir, inv, boot_modes=modes)
    install_boot_files(out_dir / TFTP_ROOT, inv.boot)
    dhcpd = DhcpdProcess(out_dir / "live" / "dhcpd.conf", out_dir / "run", interfaces=["eth0"])
    dhcpd.install_and_reload(out_dir / DHCPD_CONF)
    store = StateStore(state_file)
    store.ensure(inv.node_names)
    flip_lock, all_ready = threading.Lock(), threading.Event()

    def on_report(name: str, state: NodeState, message: str) -> None:
        store.report(name, state, message)
        if state is NodeState.DONE:  # flip before answering: the node reboots right after this report
            with flip_lock:
                modes[name] = BootMode.LOCAL
                render_to(out_dir, inv, boot_modes=modes)
                dhcpd.install_and_reload(out_dir / DHCPD_CONF)
                store.set_boot([name], BootMode.LOCAL)
        records = store.load()
        if all(records[n].state is not NodeState.WAITING for n in inv.node_names):
            all_ready.set()

    tftp = TftpServer(out_dir / TFTP_ROOT, host=str(inv.server.ip), port=69).start()
    http = HttpServer(out_dir / KICKSTART_DIR, inv.node_names, on_report,
                      host=str(inv.server.ip), port=inv.server.http_port).start()
    print("SERVING", flush=True)

    def clone() -> None:
        all_ready.wait()
        dolly_s = str(Path(sys.executable).parent / "dollyS")
        rc = subprocess.run([dolly_s, "-v", "-f", str(out_dir / DOLLY_CONF), "--timeout", "10",
                             "--json", str(out_dir / "dolly-report.json")], stdout=sys.stderr).returncode
        print(f"DOLLYS {rc}", flush=True)

    threading.Thread(target=clone, daemon=True).start()
    try:
        sys.stdin.read()
    finally:
        http.stop()
        tftp.stop()
        dhcpd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
