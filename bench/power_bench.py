"""`provision power` against N real BMCs (OpenIPMI ipmi_sim, IPMI over LAN / RMCP+), each one's "machine" a
sleeping process its chassis control starts and ends (provision/lab/bmc.py), against the peer an admin has
without a tool: ipmitool in a shell loop, one BMC after another.

    python bench/power_bench.py [--nodes 16] [--parallel 16] [--rtt MS]

With --rtt 0 (the default) the BMCs on loopback answer at once. A real BMC's slow CPU and a management network
make each RMCP+ exchange take longer: --rtt MS puts a UDP relay on 127.0.0.2 in front of them that delays every
datagram by MS/2 ms each way.

Per verb: wall seconds for `provision power VERB --all` (a bounded pool of --parallel BMCs at once) and for the
loop, and the loop's time over provision's. Prints a Markdown table (for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from provision.lab import bmc as lab_bmc

USER, PASSWORD = "admin", "bench-Pw1"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inventory_text(address: str, ports: list[int], secret: Path) -> str:
    nodes = "".join(f'  - {{name: m{i:03d}, mac: "02:00:00:00:{i >> 8:02x}:{i & 255:02x}", ip: 10.9.{i >> 8}.{i & 255}, '
                    f"bmc: {{address: {address}, port: {port}}}}}\n" for i, port in enumerate(ports, 1))
    return f"""cluster: powerbench
server: {{name: srv, ip: 10.9.255.254}}
network: {{subnet: 10.9.0.0/16}}
boot: {{kernel: /nonexistent/vmlinuz, initrd: /nonexistent/initrd.img}}
images:
  - {{source: /nonexistent/image.raw, target: /dev/sda1}}
defaults:
  bmc: {{type: ipmi, user: {USER}, password_file: {secret}}}
nodes:
{nodes}"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return time.monotonic() - started


def ipmitool_loop(address: str, ports: list[int], action: list[str], env: dict[str, str]) -> float:
    """What an admin types without a tool: ipmitool per BMC, one after another (lanplus, cipher suite 3)."""
    script = "; ".join(f"ipmitool -I lanplus -C 3 -H {address} -p {port} -U {USER} -E {' '.join(action)} "
                       f">/dev/null || exit 1" for port in ports)
    return timed(["sh", "-c", script], {**env, "IPMI_PASSWORD": PASSWORD})


class DelayRelay:
    """A UDP relay on 127.0.0.2 in front of each BMC port of 127.0.0.1 that holds every datagram for half the
    round trip each way: a management network and a BMC slower than loopback (tc netem is not in this kernel)."""

    def __init__(self, ports: list[int], rtt_ms: float):
        self.delay = rtt_ms / 2000
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ports,), daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self, ports: list[int]) -> None:
        asyncio.set_event_loop(self.loop)
        for port in ports:
            self.loop.run_until_complete(self._listen(port))
        self.ready.set()
        self.loop.run_forever()

    async def _listen(self, port: int) -> None:
        relay = self
        clients: dict[int, asyncio.DatagramTransport] = {}

        class Front(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                relay.loop.call_later(relay.delay, self.forward, data, addr)

            def forward(self, data, addr):
                back = clients.get(addr[1])
                if back is None:
                    relay.loop.create_task(self.open_back(data, addr))
                else:
                    back.sendto(data)

            async def open_back(self, data, addr):
                front = self.transport

                class Back(asyncio.DatagramProtocol):
                    def datagram_received(self, reply, _):
                        relay.loop.call_later(relay.delay, front.sendto, reply, addr)
                back, _ = await relay.loop.create_datagram_endpoint(Back, remote_addr=("127.0.0.1", port))
                clients[addr[1]] = back
                back.sendto(data)

        await self.loop.create_datagram_endpoint(Front, local_addr=("127.0.0.2", port))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--rtt", type=float, default=0.0, metavar="MS",
                        help="round-trip delay added to every exchange with a BMC (default 0: loopback only)")
    args = parser.parse_args()
    relay = None
    with tempfile.TemporaryDirectory(prefix="power-bench-") as tmp:
        work = Path(tmp)
        secret = work / "bmc.secret"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        sims, ports = [], []
        try:
            for i in range(1, args.nodes + 1):
                port = free_udp_port()
                directory = work / f"bmc-{i}"
                sims.append((lab_bmc.start(lab_bmc.LabBmc(f"m{i}", "127.0.0.1", port, USER, PASSWORD, directory),
                                           ["sleep", "3600"]), directory))
                ports.append(port)
            address = "127.0.0.1"
            if args.rtt:
                relay, address = DelayRelay(ports, args.rtt), "127.0.0.2"
            inventory = work / "powerbench.yaml"
            inventory.write_text(inventory_text(address, ports, secret))
            env = {**os.environ, "PROVISION_STATE_DIR": str(work / "state")}
            provision = [sys.executable, "-m", "provision", "power"]
            common = ["--all", "--inventory", str(inventory), "--parallel", str(args.parallel)]
            rows = []
            for verb, loop_action in (("status", ["chassis", "power", "status"]), ("on", ["chassis", "power", "on"]),
                                      ("cycle", ["chassis", "power", "cycle"]), ("off", ["chassis", "power", "off"])):
                ours = timed([*provision, verb, *common], env)
                loop = ipmitool_loop(address, ports, loop_action, env)
                rows.append((verb, ours, loop))
            ours = timed([*provision, "cycle", "--pxe-once", *common], env)
            loop = ipmitool_loop(address, ports, ["chassis", "bootdev", "pxe"], env) + ipmitool_loop(
                address, ports, ["chassis", "power", "cycle"], env)
            rows.append(("cycle --pxe-once (install --power-cycle)", ours, loop))
        finally:
            for proc, directory in sims:
                lab_bmc.stop_machine(directory)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            if relay is not None:
                relay.close()
    load = os.getloadavg()[0]
    where = f"behind a {args.rtt:g} ms round trip (a delaying UDP relay)" if args.rtt else "on loopback"
    print(f"{args.nodes} ipmi_sim BMCs {where}, --parallel {args.parallel}, load average {load:.1f}\n")
    print("| verb, all nodes | provision power (s) | ipmitool loop (s) | loop / provision |")
    print("|---|---:|---:|---:|")
    for verb, ours, loop in rows:
        print(f"| {verb} | {ours:.2f} | {loop:.2f} | {loop / ours:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
