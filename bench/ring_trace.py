"""Where one ring run's time goes, member by member (`ring_bench.py --trace`).

dollyS and every dollyC run with -v under WRAPPER, which stamps each log line with the wall clock (one clock
for all the lab's namespaces) and logs four moments the tools do not: a member's link to its successor up,
the END report in and on, and END at the server's tail. `split()` reads the stamped logs back and splits the
run's time into start-up (the last member's SETUP), data (the last member's verdict: its last chunk written
and fsync'ed) and the END report's trip (from the last verdict to the tail), with the mean cost of one hop of
each. Instrumentation for a bench: the tools' own code and options are unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median

# python -c WRAPPER {server|client} ARGS: dolly_core.cli with stamped log lines and the four moments
WRAPPER = r"""
import logging, sys
from dolly_core import cli, downlink, node, server
_format = logging.Formatter.format
logging.Formatter.format = lambda self, record: f"@{record.created:.6f} " + _format(self, record)

def traced(cls, name, what):
    original = getattr(cls, name)
    def wrapper(self, *args):
        result = original(self, *args)
        self.log.info("trace: %s", what)
        return result
    setattr(cls, name, wrapper)

def before(cls, name, what):
    original = getattr(cls, name)
    def wrapper(self, *args):
        self.log.info("trace: %s", what)
        return original(self, *args)
    setattr(cls, name, wrapper)

traced(downlink.Downlink, "_connect", "linked")
before(node.Node, "_on_end", "END in")
before(node.Node, "_end_body", "END out")
before(server.Server, "_on_end", "END at tail")
tool = sys.argv.pop(1)
sys.exit(cli.server_main() if tool == "server" else cli.client_main())
"""

STAMP = re.compile(r"^@(\d+\.\d+) .*?: (?:INFO|WARNING|ERROR): (.*)$")


def moments(path: Path) -> dict[str, float]:
    """The first time each kind of stamped line appears in one tool's log."""
    found: dict[str, float] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        at, text = float(m.group(1)), m.group(2)
        for key, prefix in (("start", "sending "), ("joined", "joined run"), ("linked", "trace: linked"),
                            ("verdict", "verified "), ("end_in", "trace: END in"), ("end_out", "trace: END out"),
                            ("tail", "trace: END at tail")):
            if text.startswith(prefix):
                found.setdefault(key, at)
    return found


@dataclass(frozen=True)
class Split:
    """One run's seconds from dollyS's start (t0): until the last member joined (start-up), until the last
    verdict (data), until END at the tail (total); per hop: SETUP to SETUP, END out to the next END in."""

    members: int
    startup: float
    data: float
    total: float
    startup_hop_ms: float   # median of joined[j+1] - joined[j]
    link_ms: float          # median of linked[j] - joined[j]: SETUP in to the successor's RESUME
    end_hop_ms: float       # mean of end_in[j+1] - end_out[j]
    end_wait_ms: float      # median of end_out[j] - end_in[j]: END held for the member's own verdict

    @property
    def end_trip(self) -> float:
        return self.total - self.data

    def line(self) -> str:
        return (f"N={self.members}: {self.total:.2f} s = start-up {self.startup:.2f} (hop {self.startup_hop_ms:.1f} ms,"
                f" link {self.link_ms:.1f} ms) + data to the last verdict {self.data - self.startup:.2f} + END trip "
                f"{self.end_trip:.2f} (hop {self.end_hop_ms:.2f} ms, held {self.end_wait_ms:.1f} ms)")


def split(server_log: Path, client_logs: list[Path]) -> Split:
    """The run's split from dollyS's log and its members' logs, in ring order."""
    srv = moments(server_log)
    t0 = srv["start"]
    nodes = [moments(path) for path in client_logs]
    joined = [m["joined"] - t0 for m in nodes]
    gaps = [b - a for a, b in zip(joined, joined[1:])] or [0.0]
    end_hops = [b["end_in"] - a["end_out"] for a, b in zip(nodes, nodes[1:])]
    end_hops.append(srv["tail"] - nodes[-1]["end_out"])
    return Split(len(nodes), max(joined), max(m["verdict"] for m in nodes) - t0, srv["tail"] - t0,
                 1000 * median(gaps), 1000 * median(m["linked"] - m["joined"] for m in nodes),
                 1000 * mean(end_hops), 1000 * median(m["end_out"] - m["end_in"] for m in nodes))
