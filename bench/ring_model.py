#!/usr/bin/env python3
"""A model of the dolly_core ring for 100 to 10,000 nodes, calibrated from the lab's measured figures.

    python bench/ring_model.py [--image-gb 4.5] [--rate 1gbit,10gbit] [--nodes 100,300,1000,3000,10000]
                               [--failure 0,0.001,0.01] [--rings K] [--server-rate RATE] [--node-rate GB/s]
                               [--timeout 10] [--wait 60] [--reset-share 0] [--samples S] [--simulate]
                               [--startup-hop H0] [--end-protocol 4|3]
    python bench/ring_model.py --calibrate     # predicted against measured, the lab (bench/RESULTS.md)
    python bench/ring_model.py --versus bench/results/ring_bench.json bench/results/scale_bench.json
    python bench/ring_model.py --check         # the closed form against the chunk-level simulation
    python bench/ring_model.py --burst 48      # 48 neighbours in the ring die at once, mid-run

What it models (docs/ring-cloner.md, dolly_core/downlink.py, uplink.py, node.py, window.py):

- Start-up is serial: a member dials its successor only after its own SETUP came (node.py serve ->
  Downlink.run), so the link into member j is up at s_j = s_(j-1) + h(n), h(n) = h0 + n x (SETUP's bytes
  per member / link rate + SETUP's encode and check per member); h0 is the lab's traced start-up hop
  (ring_bench.py --trace). The lab's links are token buckets that pass 128 KiB at once when idle, so there a
  SETUP and a piece take no time on the wire (`burst`, `lab_params`); on real links (burst 0) they do.
- Data: chunk c is in member j (every piece checked) at A[j][c] = max(A[j-1][c] + lam, A[j][c-1] +
  chunk / r), A[j][-1] = s_j: cut-through, so one hop costs lam = piece / r + wire delay, and r = min(link
  goodput, node processing rate, server uplink / rings). A member runs at most `ahead` (16 MiB) and the
  socket buffers (10 MiB) ahead of its successor: the window's back-pressure. With equal rates the last
  chunk's arrival has a closed form, F_j = image / r + the largest of s_i + (j - i) lam (i <= j) and, back
  from later members, s_i - (i - j) x slack / r (`_data_model`, failures added as further terms);
  `--simulate` and `--check` run the chunk-level recurrence itself (numpy, one row of chunks per member).
- END: after the last chunk the report travels the ring; member j waits for its own verdict (last write,
  fsync) and adds it, so the END it sends carries j verdicts: each hop parses, copies and re-encodes them.
  Protocol 4 (dolly_core/verdicts.py) carries a verified member's verdict as its seconds in a run (~7 bytes,
  ~0.04 us of CPU per verdict and hop; protocol 3 carried ~174 bytes and ~4 us whole: `--end-protocol 3`),
  so the END phase still grows as N^2 / 2, 25 times more slowly.
- A node fails with probability f per run, at a time uniform over the failure-free run. Before the link
  into it is up, its upstream keeps dialling for --wait (60 s) (only the first dial of a member waits; a
  further dead one costs a refused connect, or an ARP time-out for a dead machine). Later, its upstream
  notices at once (a reset: the process died) or after --timeout (a hung or dead machine), dials the
  next member (h(n) again), which answers RESUME with the byte it needs, and the stream goes on from the
  upstream's window: everything after the dead node pauses for detection + h(n) (the bytes sent again are
  bytes the successor has not had, so sending them costs no extra time at equal rates). A short-cut whose
  successor needs a chunk that left the upstream's window (keep 24 chunks behind the forwarder) skips that
  successor and, since every later member is further behind, all members after it (downlink.py
  SuccessorDead "needs chunk N, which no longer is in our window"): they are reported failed.
- K rings (--rings) of N / K members each, started together by one server whose uplink the K streams
  share; the run ends with the slowest ring.

Not modelled: the boot before the ring starts, the disk (fold it into --node-rate if it is slower), the
heartbeats' CPU (N entries every 0.5 s at the first node), losses and retransmissions, a switch's fabric.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass, replace

import numpy as np

KiB, MiB = 1 << 10, 1 << 20
INF = math.inf

# dolly_core's defaults, as the code has them (tests/test_ring_model.py checks them against dolly_core)
CHUNK = 4 * MiB                  # dollyS --chunk-size
PIECE = 128 * KiB                # protocol.PIECE
WINDOW_KEEP = 96 * MiB           # node.WINDOW_KEEP_BYTES: kept behind the forwarder, for short-cuts
WINDOW_AHEAD = 16 * MiB          # node.WINDOW_AHEAD_BYTES
TIMEOUT = 10.0                   # dollyS --timeout
WAIT = 60.0                      # dollyS --wait

# Measured in the lab with `ring_bench.py --trace` (bench/RESULTS.md, "Follow-up: 100 Mbit/s to 100 nodes"): a
# bridge and tc-shaped veths, random image, targets on tmpfs, dollyS --timeout 3, no secret; dolly_core of
# commit 310f5df, 2026-12-06 20:02-20:09 UTC. Per link rate: the image (MiB), one TCP stream of it on one link
# (s), and per N: T(N) s, the traced start-up s (until the last member's SETUP) and its median hop in ms.
LAB_TRACE = {
    10e6: {"image_mib": 20, "raw": 17.48,
           "runs": {1: (17.48, 0.01, 0.0), 16: (17.73, 0.08, 4.96), 32: (18.23, 0.18, 5.81),
                    64: (18.13, 0.34, 5.46), 100: (18.71, 0.60, 6.20), 200: (26.09, 1.74, 7.34)}},
    100e6: {"image_mib": 64, "raw": 5.60,
            "runs": {1: (5.66, 0.01, 0.0), 2: (5.66, 0.01, 3.2), 16: (6.42, 0.11, 5.9), 32: (6.87, 0.37, 9.2),
                     64: (12.26, 5.81, 44.5), 100: (29.10, 12.13, 40.1)}},
}
# From this N on the lab's 2 cores (shared with other work), not the links, set T: at 100 Mbit/s N x 12 MB/s
# checked and forwarded by Python processes and carried through the kernel's bridge and token buckets
LAB_CPU_BOUND = {10e6: 200, 100e6: 16}
# The same day, 10 Mbit/s, 20 MiB, N = 100: members SIGKILLed at 30 % of the image (T without a kill 18.71 s)
LAB_KILLS = {(51,): 18.35, (17, 34, 51, 67, 84): 18.79}
LAB_1GBIT = {1: 0.93, 4: 1.05}   # --rate 1gbit, 100 MiB, commit 0266633 (N = 16: 4.37 s, the 2 cores are the limit)


def lab_burst(rate_bps: float) -> float:
    """Bytes the lab's token bucket passes at once on an idle link (ring_bench's Rig: 4 ms, at least 128 KiB)."""
    return max(rate_bps / 8 / 250, 128 * KiB)


# TCP goodput / line rate on the lab's links (one stream of the image): 0.959 at 10 and 100 Mbit/s
EFFICIENCY = float(np.mean([lab["image_mib"] * MiB / lab["raw"] / (rate / 8) for rate, lab in LAB_TRACE.items()]))

# The START-UP and END costs per member, measured on the build machine with dolly_core's own encoders
# (RunSetup.to_body / from_body, protocol.control / parse_control, verdicts.add), best of 15, for rings of
# 100 to 10,000 members: SETUP 32 bytes and 1.5-1.7 us per member; END per verdict and hop (decode, add one,
# encode) with protocol 4's compact verdicts 7 bytes and 0.04 us, protocol 3's whole ones 174 bytes and
# 2.9-4.3 us (commit 310f5df). `--measure` measures them again.
SETUP_BYTES = 32.0
SETUP_CPU = 1.65e-6
END_COSTS = {4: (7.0, 0.04e-6), 3: (174.0, 4.0e-6)}   # protocol: (bytes, seconds of CPU) per verdict and hop
VERDICT_BYTES, VERDICT_CPU = END_COSTS[4]


@dataclass(frozen=True)
class Params:
    image: float = 4.5e9              # bytes
    link_bps: float = 1e9             # every node's link, bits/s
    efficiency: float = EFFICIENCY    # TCP goodput of a link / its line rate
    node_rate: float = 1.2e9          # bytes/s a node receives, checks, writes and forwards
    server_bps: float = 0.0           # the server's uplink, bits/s (0: the same as a node's link)
    rings: int = 1
    chunk: int = CHUNK
    piece: int = PIECE
    keep: int = WINDOW_KEEP // CHUNK  # chunks the window keeps behind the forwarder (24)
    ahead: int = WINDOW_AHEAD // CHUNK
    wire_delay: float = 50e-6         # per hop: switch, wire and the two stacks, for a piece's last byte
    burst: float = 0.0                # bytes an idle link passes at once (the lab's token bucket; a real link: 0)
    # Calibrated from the lab (`calibrate()`; tests check these are its result): the traced start-up and T(1)
    server_start: float = 0.0150      # the server's own start before it dials the first client
    startup_hop: float = 0.00555      # h0: connect + handshake + SETUP + RESUME, and the node's set-up
    setup_bytes: float = SETUP_BYTES
    setup_cpu: float = SETUP_CPU
    end_hop: float = 0.001            # an END frame's hop: wire, thread wake-ups
    verdict_bytes: float = VERDICT_BYTES
    verdict_cpu: float = VERDICT_CPU
    verdict_delay: float = 0.005      # after the last chunk: its write, fsync, the verdict
    timeout: float = TIMEOUT
    wait: float = WAIT
    reset_detect: float = 0.001       # a reset or refused connect is seen at once
    dead_connect: float = 3.0         # dialling a machine that is off: the ARP request times out
    reset_share: float = 0.0          # of failures, the share that resets the connection (a killed process)
    buffer_lag: float = 10 * MiB      # bytes a hung successor leaves unread in the two socket buffers (4 + 6)
    hop_lag: float = 0.5 * MiB        # in flight per further dead member (cut-through)
    worst_lag: bool = False           # every dead member holds a full `ahead` and full buffers

    # ---- derived ---------------------------------------------------------------------------------------
    @property
    def link_goodput(self) -> float:
        return self.link_bps / 8 * self.efficiency

    @property
    def server_goodput(self) -> float:
        return (self.server_bps or self.link_bps) / 8 * self.efficiency

    @property
    def rate(self) -> float:
        """Bytes/s of one ring: the slowest of a link, a node, and the server's share."""
        return min(self.link_goodput, self.node_rate, self.server_goodput / self.rings)

    @property
    def data_seconds(self) -> float:
        return self.image / self.rate

    def wire(self, nbytes: float) -> float:
        """Seconds a frame of `nbytes` takes on an idle link: what its burst does not pass at once."""
        return max(0.0, nbytes - self.burst) / self.link_goodput

    @property
    def lam(self) -> float:
        """A hop's latency for the stream (cut-through: one piece, checked, then sent on)."""
        return max(0.0, self.piece - self.burst) / self.rate + self.wire_delay

    def hop(self, n: int) -> float:
        """h(n): the start-up of one member of a ring of n clients (SETUP lists n + 2 members)."""
        return self.startup_hop + (n + 2) * self.setup_cpu + self.wire((n + 2) * self.setup_bytes)

    def detect(self, reset: bool) -> float:
        return self.reset_detect if reset else self.timeout

    def dial_dead(self, reset: bool) -> float:
        return self.reset_detect if reset else self.dead_connect

    @property
    def slack(self) -> float:
        """Bytes a member can be ahead of its successor before its window stops it: `ahead` and the
        socket buffers between them (back-pressure)."""
        return self.ahead * self.chunk + self.buffer_lag

    def lag(self, skipped: int, reset: bool) -> float:
        """Bytes the first live member after `skipped` dead ones lacks of what the upstream has sent."""
        if self.worst_lag:
            return skipped * (self.ahead * self.chunk + self.buffer_lag)
        first = 2 * self.piece if reset else self.buffer_lag
        return first + (skipped - 1) * self.hop_lag


@dataclass
class Run:
    """One ring's run."""
    seconds: float
    startup: float          # until the link into the server's tail is up
    end_phase: float        # from the last client's last chunk to the report at the tail
    shortcuts: int          # failures after their link came up that delayed something
    misses: int             # failures before their link came up (the upstream dials for --wait)
    cut: int                # live members skipped because their chunk had left the window
    failed: int             # failed nodes (dead or cut)


# ---- one ring ---------------------------------------------------------------------------------------------
def _startup(p: Params, n: int, fail: np.ndarray, reset: np.ndarray, h: float):
    """The serial start-up. Returns s (the link into member j is up; nan if never), the first feeder of
    every member, which members died before their link came up or while dialling on (removed), how many
    died before their link (misses) and how many while dialling on (short-cuts of the start)."""
    s = np.full(n + 2, np.nan)
    feeder = np.full(n + 2, -1, dtype=np.int64)
    removed = np.zeros(n + 2, dtype=bool)
    s[0] = p.server_start
    u, a, first = 0, p.server_start, True   # who dials next, when, and whether it is its first dial
    misses = early = 0
    j = 1
    for d in [*np.flatnonzero(np.isfinite(fail)).tolist(), n + 1]:
        if d > j:   # members j..d-1 do not fail: each dials on as soon as its SETUP came
            k = np.arange(1, d - j + 1)
            s[j:d] = a + k * h
            feeder[j] = u
            feeder[j + 1:d] = np.arange(j, d - 1)
            u, a, first = d - 1, s[d - 1], True
            j = d
        if d == n + 1:
            break
        if fail[d] < a + h:   # dead before its link is up: the first dial waits --wait, a later one fails fast
            a += p.wait if first else p.dial_dead(bool(reset[d]))
            first = False
            removed[d] = True
            misses += 1
        else:
            s[d], feeder[d] = a + h, u
            if fail[d] < s[d] + h:   # dies while dialling its own successor: its upstream short-cuts
                removed[d] = True
                a, first = max(a, fail[d] + p.detect(bool(reset[d]))), False
                early += 1
            else:
                u, a, first = d, s[d], True
        j = d + 1
    s[n + 1], feeder[n + 1] = a + h, u
    return s, feeder, removed, misses, early


@dataclass
class Event:
    t: float        # when member d died
    d: int
    x: int          # the first live member after d when the short-cut is made
    t_res: float    # the short-cut is done: the link into x is up again
    feeder: int     # who sends to x from then on (d's upstream at t)
    cut: bool       # x's chunk had left the window: x and every member after it are skipped


def _events(p: Params, n: int, fail: np.ndarray, reset: np.ndarray, removed: np.ndarray,
            feeder0: np.ndarray, h: float) -> tuple[list[Event], np.ndarray, int]:
    """The short-cuts of failures after the start, in time order; every member dead or cut at the end;
    how many live members were cut."""
    removed = removed.copy()
    cut_live = 0
    late = [d for d in np.flatnonzero(np.isfinite(fail)).tolist() if not removed[d]]
    feeds = {j: int(feeder0[j]) for j in range(1, n + 2)}
    events: list[Event] = []
    for d in sorted(late, key=lambda m: fail[m]):
        if removed[d]:
            continue   # already skipped by an earlier short-cut
        t = float(fail[d])
        ready = t + p.detect(bool(reset[d]))
        x, skipped, extra = d + 1, 1, 0.0
        while x <= n and (removed[x] or fail[x] <= ready):
            if not removed[x]:   # dead, not yet short-cut: dialled in vain
                removed[x] = True
                skipped += 1
                extra += p.dial_dead(bool(reset[x]))
            x += 1
        removed[d] = True
        u = feeds[d]
        cut = x <= n and p.lag(skipped, bool(reset[d])) > p.keep * p.chunk
        t_res = ready + extra + h
        if cut:   # every later member is skipped too (a refused dial once they have given up)
            left = n + 1 - x
            t_res += min(left * h, 3 * p.timeout + 2 + left * p.reset_detect)
            cut_live += int((~removed[x:n + 1] & ~np.isfinite(fail[x:n + 1])).sum())
            removed[x:n + 1] = True
            for m in range(x, n + 1):
                feeds[m] = -1
            x = n + 1
        feeds[x] = u
        events.append(Event(t, d, x, t_res, u, cut))
    return events, removed, cut_live


def _hops(removed: np.ndarray) -> np.ndarray:
    """Hop index of every member along the final ring (a dead member is no hop)."""
    return np.cumsum(~removed) - 1.0


def _data_model(p: Params, n: int, s: np.ndarray, events: list[Event], hops: np.ndarray):
    """The closed form: every constraint on member j's stream is arrival_j(b) >= K + b for the stream's
    bytes b (in seconds at rate r) from some point on. A member's start (link up at s_i) and a short-cut
    into x (from the byte x had, on from t_res) are such constraints; each reaches the members after it
    one hop (lam) later, and the members before it through the windows' back-pressure (a member runs at
    most `slack` ahead of its successor). F_j, the last chunk at j, is the largest of them at b = image / r.
    Returns F and the events that delayed data (the others found their successor complete)."""
    lam, back, tau = p.lam, p.slack / p.rate, p.data_seconds
    live = np.flatnonzero(~np.isnan(s[:n + 1]))     # the server's head and the clients that came up
    src_i = live.astype(np.int64)
    src_h = hops[live]
    src_r = np.zeros(len(live))
    src_k = s[live].astype(float)
    data_events = []
    for e in events:
        if e.x > n:
            continue
        x, hx = e.x, hops[e.x]
        fwd = src_i <= x
        bound = np.where(fwd, np.maximum(src_r, e.t - src_k - (hx - src_h) * lam),
                         np.maximum(src_r + (src_h - hx) * back, e.t - src_k + (src_h - hx) * back))
        pos = min(tau, max(0.0, float(bound.min())))
        if pos >= tau:
            continue   # x has every chunk: only the END waits for the short-cut
        src_i = np.append(src_i, x)
        src_h = np.append(src_h, hx)
        src_r = np.append(src_r, pos)
        src_k = np.append(src_k, e.t_res - pos)
        data_events.append(e)
    fwd_pts = np.full(n + 2, -INF)
    np.maximum.at(fwd_pts, src_i, src_k - src_h * lam)
    forward = hops * lam + np.maximum.accumulate(fwd_pts)
    # Back-pressure reaches as far back as the members' lead fits in the stream: from a start (at byte 0)
    # (tau / back) hops, from a short-cut at byte r (tau - r) / back hops.
    starts = np.full(n + 2, -INF)
    starts[live] = s[live] - hops[live] * back
    reach = np.searchsorted(hops, hops + tau / back, side="left") - 1   # the farthest member in reach
    backward = _window_max(starts, np.minimum(reach, n)) + hops * back
    for x, hx, r, k in zip(src_i[len(live):], src_h[len(live):], src_r[len(live):], src_k[len(live):]):
        first = int(np.searchsorted(hops, hx - (tau - r) / back, side="right"))
        span = slice(first, x + 1)
        backward[span] = np.maximum(backward[span], k - (hx - hops[span]) * back)
    return tau + np.maximum(forward, backward), data_events


def _window_max(values: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """max(values[j:ends[j] + 1]) for every j (a sparse table: log2(n) levels of numpy maxima)."""
    n = len(values)
    levels = [values]
    while (1 << len(levels)) <= n:
        k = 1 << (len(levels) - 1)
        last = levels[-1]
        levels.append(np.maximum(last, np.concatenate((last[k:], np.full(k, -INF)))))
    j = np.arange(n)
    ends = np.maximum(ends, j)
    width = ends - j + 1
    level = np.floor(np.log2(width)).astype(np.int64)
    out = np.full(n, -INF)
    for lv in np.unique(level):
        pick = level == lv
        table = levels[lv]
        out[pick] = np.maximum(table[j[pick]], table[ends[pick] - (1 << lv) + 1])
    return out


def _data_sim(p: Params, n: int, s: np.ndarray, feeder0: np.ndarray, removed_start: np.ndarray,
              events: list[Event], sweeps: int = 40, keep_rows: dict | None = None):
    """The chunk-level recurrence itself: a row of chunk arrival times per member. Forward, in ring order:
    A[j][c] = max(A[feeder][c] + lam, A[j][c-1] + chunk / r), from s_j on; a short-cut re-feeds the rest
    of x's row from the upstream, from the byte x had at the failure, not before the short-cut is done.
    Backward, against ring order: a member cannot take byte b before its successor took byte b - slack
    (its window and socket buffers are full). Sweeps until nothing moves. Returns F_j and the events that
    delayed data."""
    r = p.rate
    sizes = np.full(int(math.ceil(p.image / p.chunk)), float(p.chunk))
    sizes[-1] = p.image - p.chunk * (len(sizes) - 1)
    cum = np.cumsum(sizes) / r                    # stream time at the end of each chunk
    prev = np.concatenate(([0.0], cum[:-1]))
    lam, back = p.lam, p.slack / r
    members = [j for j in range(1, n + 1) if not removed_start[j]]
    by_x: dict[int, list[Event]] = {}
    for e in events:
        if e.x <= n:
            by_x.setdefault(e.x, []).append(e)
    first_succ = {int(feeder0[j]): j for j in members}   # whom each member dialled at the start
    rows: dict[int, np.ndarray] = {0: s[0] + cum}
    floors: dict[int, np.ndarray] = {}

    def serial(row: np.ndarray, c0: int = 0) -> np.ndarray:
        out = row.copy()
        out[c0:] = cum[c0:] + np.maximum.accumulate(row[c0:] - cum[c0:])
        return out

    def feed(row: np.ndarray, up: np.ndarray, floor: float, pos: float, extra) -> np.ndarray:
        c0 = min(int(np.searchsorted(cum, pos, side="right")) if pos > 0 else 0, len(cum) - 1)
        out = row.copy()
        out[c0:] = np.maximum(up[c0:] + lam, floor - pos + cum[c0:])
        if extra is not None:
            out[c0:] = np.maximum(out[c0:], extra[c0:])
        return serial(out, c0)

    def arrival(row: np.ndarray, at: np.ndarray) -> np.ndarray:
        """When byte `at` (stream seconds) was in: the chunk's offset plus the byte."""
        c = np.minimum(np.searchsorted(cum, at, side="left"), len(cum) - 1)
        return np.where(at > 0, row[c] - cum[c] + at, -INF)

    delayed: list[Event] = []
    for _ in range(sweeps):
        before = {j: rows[j].copy() for j in members if j in rows}
        delayed = []
        succ: dict[int, list[tuple[float, int]]] = {0: [(0.0, first_succ.get(0, -1))]}
        for j in members:
            succ.setdefault(j, [(0.0, first_succ.get(j, -1))])
            extra = floors.get(j)
            row = feed(np.empty_like(cum), rows[int(feeder0[j])], s[j], 0.0, extra)
            for e in by_x.get(j, []):
                c = int(np.searchsorted(row, e.t, side="right"))
                if c >= len(cum):
                    continue   # complete before the failure
                pos = min(cum[c], max(prev[c], e.t - (row[c] - cum[c])))
                row = feed(row, rows[e.feeder], e.t_res, pos, extra)
                succ.setdefault(e.feeder, [(0.0, first_succ.get(e.feeder, -1))]).append((pos, j))
                delayed.append(e)
            rows[j] = row
        for j in reversed([0, *members]):   # back-pressure
            bound = np.full(len(cum), -INF)
            segs = succ.get(j, [])
            for k, (start, m) in enumerate(segs):
                if m < 0 or m not in rows:
                    continue
                stop = segs[k + 1][0] if k + 1 < len(segs) else INF
                mask = (cum > start) & (cum <= stop) if k else cum <= stop
                bound = np.where(mask, np.maximum(bound, arrival(rows[m], cum - back)), bound)
            if j == 0:
                continue
            floors[j] = bound
            rows[j] = serial(np.maximum(rows[j], bound))
        if all(j in before and np.allclose(before[j], rows[j], rtol=0, atol=1e-9) for j in members):
            break
    finish = np.full(n + 2, np.nan)
    for j in members:
        finish[j] = rows[j][-1]
    if keep_rows is not None:
        keep_rows.update(rows, cum=cum)
    return finish, delayed


def _end_phase(p: Params, n: int, finish: np.ndarray, s: np.ndarray, removed: np.ndarray,
               events: list[Event]) -> tuple[float, np.ndarray]:
    """The END report around the ring: member j sends it on at X_j = max(END in, own verdict) + its CPU,
    it reaches the next live member at max(X_j, that link is up) + the hop. A member that died before it
    sent END on is out of the chain (its upstream's short-cut brings END past it)."""
    r_link = p.link_goodput
    alive = ~removed.copy()
    alive[0] = alive[n + 1] = True
    link_up = np.where(np.isnan(s), -INF, s)
    pending = sorted(events, key=lambda e: e.d)
    ready = finish + p.verdict_delay
    ready[0] = p.server_start + p.data_seconds

    def chain():
        members = np.flatnonzero(alive)
        k = np.arange(len(members), dtype=float)           # verdicts in the END each member sends on
        k[-1] = 0.0
        cpu = k * p.verdict_cpu
        wire = p.end_hop + np.maximum(0.0, k * p.verdict_bytes - p.burst) / r_link
        v = ready[members]
        q = link_up[members]
        g = cpu[:-1] + wire[:-1]
        z = np.maximum(v[:-1] + g, q[1:] + wire[:-1])
        big_g = np.concatenate(([0.0], np.cumsum(g)))
        e_in = np.full(len(members), -INF)
        e_in[1:] = big_g[1:] + np.maximum.accumulate(z - big_g[1:])
        x = np.maximum(e_in, v) + cpu
        return members, e_in, x

    members, e_in, x_out = chain()
    for e in pending:
        where = int(np.searchsorted(members, e.d))
        if e.t < x_out[where]:   # it died before it sent END on
            alive[e.d] = False
            link_up[e.x] = max(link_up[e.x], e.t_res)
            members, e_in, x_out = chain()
    tail_parse = (len(members) - 2) * p.verdict_cpu / 2
    return float(e_in[-1] + tail_parse), alive


def run_ring(p: Params, n: int, fail: np.ndarray | None = None, reset: np.ndarray | None = None,
             simulate: bool = False) -> Run:
    """One ring of n clients. fail[j] (j = 1..n) is when client j dies (inf: never); reset[j] whether its
    death resets the connection (seen at once) or leaves it silent (seen after --timeout)."""
    if fail is None:
        fail = np.full(n + 2, INF)
    if reset is None:
        reset = np.zeros(n + 2, dtype=bool)
    fail = fail.astype(float).copy()
    fail[0] = fail[n + 1] = INF
    h = p.hop(n)
    s, feeder0, removed_start, misses, early = _startup(p, n, fail, reset, h)
    events, removed_all, cut = _events(p, n, fail, reset, removed_start, feeder0, h)
    if simulate:
        finish, _ = _data_sim(p, n, s, feeder0, removed_start, events)
    else:
        finish, _ = _data_model(p, n, s, events, _hops(removed_all))
    # Whether a member that died after the start was still in the END's way is for the END phase to say.
    removed_for_end = removed_all.copy()
    for e in events:
        removed_for_end[e.d] = False
    seconds, alive = _end_phase(p, n, finish, s, removed_for_end, events)
    shortcuts = early + sum(1 for e in events if not alive[e.d])
    last = max((j for j in range(n, 0, -1) if not removed_all[j]), default=0)
    failed = int(np.isfinite(fail[1:n + 1]).sum()) + cut
    return Run(seconds, float(s[n + 1] - s[0]), seconds - float(finish[last]) if last else 0.0,
               shortcuts, misses, cut, failed)


# ---- many rings, many runs ----------------------------------------------------------------------------------
def ring_sizes(n: int, rings: int) -> list[int]:
    return [n // rings + (1 if k < n % rings else 0) for k in range(rings)]


@dataclass
class Cell:
    n: int
    rings: int
    failure: float
    t0: float                 # no failures
    mean: float
    p95: float
    shortcuts: float          # expected short-cuts that delay the run
    misses: float             # expected failures before their link was up
    p_cut: float              # chance of a run where a short-cut fell outside the window (Monte Carlo)
    p_cut_bound: float        # the same, from the analytic bound
    cost: float               # mean extra seconds per failure
    startup: float
    end_phase: float


def _samples_for(n: int, samples: int | None) -> int:
    return samples or int(min(300, max(60, 300_000 // max(n, 1))))


def predict(p: Params, n: int, failure: float, samples: int | None = None, seed: int = 1,
            simulate: bool = False) -> Cell:
    """Expected T(n) with failures, by Monte Carlo over which nodes fail and when, conditioned on at least
    one failure (the run without one is computed once), so rare failures still get enough samples."""
    sizes = ring_sizes(n, p.rings)
    base = {m: run_ring(p, m, simulate=simulate) for m in set(sizes)}
    t0 = max(base[m].seconds for m in sizes)
    first = base[sizes[0]]
    if failure <= 0 or n == 0:
        return Cell(n, p.rings, failure, t0, t0, t0, 0.0, 0.0, 0.0, 0.0, 0.0, first.startup, first.end_phase)
    rng = np.random.default_rng(seed)
    count = _samples_for(n, samples)
    p_none = (1 - failure) ** n
    # k >= 1 failures among all n nodes, by the binomial law
    kmax = int(min(n, max(10, n * failure + 12 * math.sqrt(n * failure + 1))))
    ks = np.arange(1, kmax + 1)
    logp = (np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in ks])
            + ks * math.log(failure) + (n - ks) * math.log1p(-failure))
    weights = np.exp(logp - logp.max())
    weights /= weights.sum()
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    totals, cuts, sc, ms, failures = [], 0, 0.0, 0.0, 0
    for _ in range(count):
        k = int(rng.choice(ks, p=weights))
        who = rng.choice(n, size=k, replace=False)
        worst = 0.0
        any_cut = False
        for ring, m in enumerate(sizes):
            mine = who[(who >= offsets[ring]) & (who < offsets[ring + 1])] - offsets[ring] + 1
            if len(mine) == 0:
                worst = max(worst, base[m].seconds)
                continue
            fail = np.full(m + 2, INF)
            fail[mine] = rng.uniform(0.0, base[m].seconds, size=len(mine))
            reset = rng.random(m + 2) < p.reset_share
            run = run_ring(p, m, fail, reset, simulate=simulate)
            worst = max(worst, run.seconds)
            any_cut |= run.cut > 0
            sc += run.shortcuts
            ms += run.misses
        failures += k
        totals.append(worst)
        cuts += any_cut
    totals_a = np.array(totals)
    mean = p_none * t0 + (1 - p_none) * float(totals_a.mean())
    level = (0.95 - p_none) / (1 - p_none)
    p95 = t0 if level <= 0 else float(np.quantile(totals_a, level))
    expected_k = n * failure
    per_failure = float(totals_a.mean() - t0) / (failures / count)
    return Cell(n, p.rings, failure, t0, mean, p95,
                (1 - p_none) * sc / count, (1 - p_none) * ms / count,
                (1 - p_none) * cuts / count, p_cut_bound(p, n, failure, t0),
                per_failure if expected_k else 0.0, first.startup, first.end_phase)


def k_min(p: Params) -> int:
    """The fewest neighbours that must be dead at one short-cut for the successor's chunk to have left
    the upstream's window (lag > keep chunks); a reset needs more, a hung node is the worst."""
    limit = p.keep * p.chunk
    k = 1
    while p.lag(k, False) <= limit and k < 1_000_000:
        k += 1
    return k


def p_cut_bound(p: Params, n: int, failure: float, horizon: float) -> float:
    """Chance of a run in which k_min neighbours are dead within one short-cut's span: the first fails
    (n f), each of the k - 1 next fails too, inside the detection time of the one before it."""
    k = k_min(p)
    span = min(1.0, (p.timeout + p.hop(n)) / max(horizon, 1e-9))
    return min(1.0, n * failure * (failure * span) ** (k - 1))


# ---- calibration ---------------------------------------------------------------------------------------------
def lab_params(rate_bps: float = 100e6, image_mib: float = 100, **kw) -> Params:
    """The lab: shaped links whose token bucket passes a piece and a SETUP at once, dollyS --timeout 3, the
    node's CPU not the limit (the model has no 2 shared cores)."""
    return replace(Params(), image=float(image_mib * MiB), link_bps=rate_bps, node_rate=1e12, timeout=3.0,
                   burst=lab_burst(rate_bps), **kw)


def traced_hops() -> list[float]:
    """h0 as each traced run of N >= 16 that the links pace (not the 2 cores) shows it: its median start-up
    hop less SETUP's check of N + 2 members (the lab's token bucket passes the SETUP frame at once)."""
    return [hop_ms / 1e3 - (n + 2) * SETUP_CPU for rate, lab in LAB_TRACE.items()
            for n, (_, _, hop_ms) in lab["runs"].items() if 16 <= n < LAB_CPU_BOUND[rate]]


def calibrate() -> tuple[float, float]:
    """(server_start, startup_hop): h0 the median of the traced hops; the server's start so that the model
    gives the lab's T(1), the mean over the traced rates (at least 0)."""
    h0 = float(np.median(traced_hops()))
    gaps = [lab["runs"][1][0] - run_ring(lab_params(rate, lab["image_mib"], server_start=0.0, startup_hop=h0),
                                         1).seconds for rate, lab in LAB_TRACE.items()]
    return max(0.0, float(np.mean(gaps))), h0


def startup_of(p: Params, n: int) -> float:
    """Seconds from the server's start until the link into member n is up (its SETUP came): the trace's start-up."""
    return float(_startup(p, n, np.full(n + 2, INF), np.zeros(n + 2, bool), p.hop(n))[0][n] - p.server_start)


def killed(p: Params, n: int, victims: list[int], before: bool = False) -> Run:
    """A ring of n with members `victims` (1-based) SIGKILLed (the kernel resets their connections) at 30 % of
    their data, or with `before` at the start, before their upstream dials them."""
    s = _startup(p, n, np.full(n + 2, INF), np.zeros(n + 2, bool), p.hop(n))[0]
    fail, reset = np.full(n + 2, INF), np.zeros(n + 2, dtype=bool)
    for j in victims:
        fail[j], reset[j] = 0.0 if before else s[j] + 0.30 * p.data_seconds, True
    return run_ring(p, n, fail, reset)


def calibration_rows(p: Params | None = None) -> list[tuple[str, float, float]]:
    """(what, predicted s, measured s) for the lab's traced figures: T(N), the start-up, the kill cases."""
    base = p or Params()
    rows = []
    for rate, lab in LAB_TRACE.items():
        q = lab_params(rate, lab["image_mib"], server_start=base.server_start, startup_hop=base.startup_hop)
        for n, (seconds, startup, _) in lab["runs"].items():
            cores = " (2 cores)" if n >= LAB_CPU_BOUND[rate] else ""
            rows.append((f"N = {n}, {rate_name(rate)}{cores}", run_ring(q, n).seconds, seconds))
            if n >= 16:
                rows.append((f"N = {n}, {rate_name(rate)}{cores}: start-up", startup_of(q, n), startup))
    q = lab_params(10e6, LAB_TRACE[10e6]["image_mib"], server_start=base.server_start, startup_hop=base.startup_hop)
    plain = run_ring(q, 100).seconds
    for victims, seconds in LAB_KILLS.items():
        run = killed(q, 100, list(victims)).seconds
        rows.append((f"N = 100, 10 Mbit/s, {len(victims)} killed at 30 %", run, seconds))
        rows.append((f"N = 100, 10 Mbit/s, {len(victims)} killed: extra s", run - plain,
                     seconds - LAB_TRACE[10e6]["runs"][100][0]))
    g = lab_params(1e9, server_start=base.server_start, startup_hop=base.startup_hop)
    rows += [(f"N = {n}, 1 Gbit/s, 100 MiB (commit 0266633)", run_ring(g, n).seconds, measured)
             for n, measured in LAB_1GBIT.items()]
    return rows


def versus_rows(results: dict, p: Params | None = None) -> list[tuple[str, float, float]]:
    """(what, predicted s, measured s) for a saved bench result: bench/ring_bench.py's (every ring size,
    every kill case: the dead nodes SIGKILLed at 30 % of the image, or before dollyS started) or
    bench/scale_bench.py's (the ring's part, the slowest node's clone seconds; the lab's time-out grows with
    N / 16), on the lab's links (`lab_params`). The model knows nothing of the lab's 2 shared cores: where
    they are the limit, measured exceeds predicted."""
    base = p or Params()
    rate = parse_rate(results["rate"])
    q = replace(lab_params(rate, server_start=base.server_start, startup_hop=base.startup_hop),
                server_bps=parse_rate(results.get("server_rate") or results["rate"]))
    if "ring" not in results:  # scale_bench
        q = replace(q, image=results["image_mib"] * MiB)
        return [(f"whole workflow, N = {r['n']}: ring part", run_ring(q, r["n"]).seconds, r["ring_seconds"])
                for r in results["rows"]]
    q = replace(q, image=results["size_mib"] * MiB)
    rows = [(f"N = {r['n']}", run_ring(q, r["n"]).seconds, r["seconds"]) for r in results["ring"]]
    kills = results.get("kill", [])
    for k in [kills] if isinstance(kills, dict) else kills:
        n, before = k["n"], k.get("before_start", False)
        q = replace(q, timeout=k.get("timeout", q.timeout), wait=k.get("wait") or q.wait)
        victims = [int(name.rsplit(".", 1)[1]) - 10 for name in k["dead"]]  # ring_bench: member j is 10.77.0.(10 + j)
        when = f"before the start (--wait {q.wait:g})" if before else "at 30 %"
        rows.append((f"N = {n}, {len(k['dead'])} killed {when}", killed(q, n, victims, before).seconds, k["seconds"]))
    return rows


def show_versus(paths: list[str], p: Params) -> None:
    import json
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        size = results.get("size_mib") or results.get("image_mib")
        print(f"\n{path}: {results['rate']} links, {size} MiB image")
        print(table(["lab run", "predicted s", "measured s", "measured / predicted"],
                    [[what, f"{pred:.2f}", f"{meas:.2f}", f"{meas / pred:.2f}"]
                     for what, pred, meas in versus_rows(results, p)]))


# ---- command line ---------------------------------------------------------------------------------------------
def parse_rate(text: str) -> float:
    """'100mbit', '1gbit', '10gbit', '2.5e9' -> bits/s."""
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmg]?)(?:bit)?(?:/s)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (e.g. 100mbit, 1gbit, 10gbit)")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def rate_name(bps: float) -> str:
    return f"{bps / 1e9:g} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:g} Mbit/s"


def clock(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("--:" if i else "--" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def show_calibration(p: Params) -> None:
    s0, h0 = calibrate()
    hops = ", ".join(f"{h * 1e3:.2f}" for h in traced_hops())
    print(f"calibrated: server start {s0 * 1e3:.1f} ms, per-hop start-up h0 {h0 * 1e3:.2f} ms, the median of "
          f"{hops} ms (in use: {p.server_start * 1e3:.1f} ms, {p.startup_hop * 1e3:.2f} ms)\n")
    rows = []
    for what, predicted, measured in calibration_rows(p):
        if "extra" in what:
            rows.append([what, f"{predicted:+.2f}", f"{measured:+.2f}", ""])
        else:
            rows.append([what, f"{predicted:.2f}", f"{measured:.2f}", f"{(predicted - measured) / measured:+.1%}"])
    print(table(["lab run", "predicted s", "measured s", "error"], rows))


def show_check(p: Params, seed: int = 3, random_rings: int = 40) -> None:
    """The closed form against the chunk-level recurrence, with and without failures; then `random_rings`
    random rings (N = 5-300, 1-8 % failures, half of them resets)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, failure in ((10, 0.0), (100, 0.0), (1000, 0.0), (100, 0.05), (300, 0.02), (1000, 0.01)):
        fail = np.full(n + 2, INF)
        t0 = run_ring(p, n).seconds
        if failure:
            who = np.flatnonzero(rng.random(n) < failure) + 1
            fail[who] = rng.uniform(0, t0, len(who))
        reset = rng.random(n + 2) < 0.5
        t = time.perf_counter()
        a = run_ring(p, n, fail, reset).seconds
        ta = time.perf_counter() - t
        t = time.perf_counter()
        b = run_ring(p, n, fail, reset, simulate=True).seconds
        tb = time.perf_counter() - t
        rows.append([f"{n}", f"{int(np.isfinite(fail).sum())}", f"{a:.3f}", f"{b:.3f}", f"{a - b:+.4f}",
                     f"{ta * 1e3:.1f} / {tb * 1e3:.0f}"])
    print(f"{rate_name(p.link_bps)}:")
    print(table(["N", "failures", "closed form s", "chunk simulation s", "difference s", "ms (closed / sim)"],
                rows))
    worst = 0.0
    for _ in range(random_rings):
        n = int(rng.integers(5, 301))
        fail = np.full(n + 2, INF)
        who = np.flatnonzero(rng.random(n) < rng.choice([0.01, 0.03, 0.08])) + 1
        fail[who] = rng.uniform(0, run_ring(p, n).seconds, len(who))
        reset = rng.random(n + 2) < 0.5
        a, b = run_ring(p, n, fail, reset).seconds, run_ring(p, n, fail, reset, simulate=True).seconds
        worst = max(worst, abs(a - b) / b)
    print(f"{random_rings} random rings (N = 5-300, 1-8 % failures): largest difference {worst:.2%}\n")


def failure_costs(p: Params, n: int) -> dict[str, float]:
    """Extra seconds of one failure, halfway through a node's data: of the last client's upstream (nothing
    after it to absorb the pause) by a reset and silently, of the middle client silently (the start-up
    lag of the members after it absorbs part of the pause), and of the middle client before its link is
    up (its upstream dials it for --wait)."""
    t0 = run_ring(p, n).seconds
    s = _startup(p, n, np.full(n + 2, INF), np.zeros(n + 2, bool), p.hop(n))[0]

    def one(d: int, at: float, reset: bool) -> float:
        fail = np.full(n + 2, INF)
        fail[d] = at
        kinds = np.zeros(n + 2, dtype=bool)
        kinds[d] = reset
        return run_ring(p, n, fail, kinds).seconds - t0
    last, mid = max(n - 1, 1), max(n // 2, 1)
    return {"reset": one(last, s[last] + p.data_seconds / 2, True),
            "silent": one(last, s[last] + p.data_seconds / 2, False),
            "silent, mid-ring": one(mid, s[mid] + p.data_seconds / 2, False),
            "before its link": one(mid, 0.0, False)}


def show_costs(p: Params, nodes: list[int]) -> None:
    rows = []
    for n in nodes:
        c = failure_costs(p, n)
        rows.append([f"{n:,}", f"{p.hop(n) * 1e3:.1f}", f"{c['reset']:.2f}", f"{c['silent']:.2f}",
                     f"{c['silent, mid-ring']:.2f}", f"{c['before its link']:.1f}"])
    print(table(["N", "h(N) ms", "killed process, at the end of the ring", "hung or dead machine, same place",
                 "hung or dead, mid-ring", "dead before its link is up"], rows))


def show_burst(p: Params, n: int, burst: int) -> None:
    """`burst` neighbours die at once in the middle of the data (a switch losing power)."""
    rows = []
    for worst in (False, True):
        q = replace(p, worst_lag=worst)
        t0 = run_ring(q, n)
        s = _startup(q, n, np.full(n + 2, INF), np.zeros(n + 2, bool), q.hop(n))[0]
        first = n // 2
        fail = np.full(n + 2, INF)
        fail[first:first + burst] = s[first] + q.data_seconds / 2
        run = run_ring(q, n, fail)
        rows.append(["full buffers in every dead node" if worst else "cut-through (buffers drain)",
                     f"{q.lag(burst, False) / MiB:.0f} MiB", f"{q.keep * q.chunk / MiB:.0f} MiB",
                     f"{run.seconds - t0.seconds:.1f}", f"{run.cut}"])
    print(f"{burst} neighbours of {n} die at once, halfway through the data, {rate_name(p.link_bps)}:")
    print(table(["lag model", "lag", "window keeps", "extra s", "live nodes cut"], rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-gb", type=float, default=4.5, help="image size in GB (10^9 bytes; default 4.5)")
    ap.add_argument("--rate", default="1gbit,10gbit", help="link rates, comma-separated (default 1gbit,10gbit)")
    ap.add_argument("--nodes", default="100,300,1000,3000,10000", help="ring sizes, comma-separated")
    ap.add_argument("--failure", default="0,0.001,0.01", help="chance a node fails during a run, comma-separated")
    ap.add_argument("--rings", default="1", help="K rings of N/K started together, comma-separated (default 1)")
    ap.add_argument("--server-rate", default="", help="the server's uplink (default: the link rate); "
                    "the K rings share it")
    ap.add_argument("--node-rate", type=float, default=1.2, help="GB/s one node receives, checks, writes and "
                    "forwards (default 1.2)")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="dollyS --timeout (default 10)")
    ap.add_argument("--wait", type=float, default=WAIT, help="dollyS --wait (default 60)")
    ap.add_argument("--startup-hop", type=float, default=None, help="h0 in seconds (default: calibrated)")
    ap.add_argument("--end-protocol", type=int, choices=sorted(END_COSTS), default=4, help="END's verdicts as "
                    "dolly protocol 4 carries them (compact, the default) or 3 (whole)")
    ap.add_argument("--reset-share", type=float, default=0.0, help="share of failures that reset the "
                    "connection (seen at once); the rest are hung or dead machines (default 0)")
    ap.add_argument("--worst-lag", action="store_true", help="every dead node holds a full window 'ahead' "
                    "and full socket buffers")
    ap.add_argument("--samples", type=int, default=0, help="Monte Carlo runs per cell (default: by N)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--simulate", action="store_true", help="the chunk-level recurrence instead of the "
                    "closed form (slower)")
    ap.add_argument("--calibrate", action="store_true", help="predicted against measured for the lab")
    ap.add_argument("--check", action="store_true", help="closed form against chunk-level simulation")
    ap.add_argument("--burst", type=int, default=0, help="R neighbours die at once mid-run (with the "
                    "first --nodes and --rate)")
    ap.add_argument("--measure", action="store_true", help="measure SETUP and END costs with dolly_core")
    ap.add_argument("--versus", nargs="+", metavar="JSON", help="predicted against measured for saved "
                    "bench/ring_bench.py or bench/scale_bench.py results (bench/results/*.json)")
    args = ap.parse_args(argv)

    p = replace(Params(), image=args.image_gb * 1e9, node_rate=args.node_rate * 1e9, timeout=args.timeout,
                wait=args.wait, reset_share=args.reset_share, worst_lag=args.worst_lag)
    p = replace(p, verdict_bytes=END_COSTS[args.end_protocol][0], verdict_cpu=END_COSTS[args.end_protocol][1])
    if args.startup_hop is not None:
        p = replace(p, startup_hop=args.startup_hop)
    if args.measure:
        measure()
        return 0
    if args.calibrate:
        show_calibration(p)
        return 0
    if args.versus:
        show_versus(args.versus, p)
        return 0
    try:
        rates = [parse_rate(x) for x in args.rate.split(",")]
        server = parse_rate(args.server_rate) if args.server_rate else 0.0
        nodes = [int(x) for x in args.nodes.replace("_", "").split(",")]
        failures = [float(x) for x in args.failure.split(",")]
        ring_counts = [int(x) for x in args.rings.split(",")]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        ap.error(str(exc))
    if args.check:
        for bps in rates:
            show_check(replace(p, link_bps=bps))
        return 0
    if args.burst:
        show_burst(replace(p, link_bps=rates[0]), nodes[0], args.burst)
        return 0
    started = time.perf_counter()
    for bps in rates:
        for rings in ring_counts:
            q = replace(p, link_bps=bps, rings=rings, server_bps=server or bps)
            print(f"\n{rate_name(bps)} links, server uplink {rate_name(q.server_bps)}, {rings} ring(s), "
                  f"{args.image_gb:g} GB image, node {args.node_rate:g} GB/s: ring rate {q.rate / 1e6:.0f} MB/s, "
                  f"data alone {q.data_seconds:.1f} s; --timeout {q.timeout:g}, --wait {q.wait:g}, "
                  f"h0 {q.startup_hop * 1e3:.1f} ms")
            rows = []
            for n in nodes:
                for f in failures:
                    c = predict(q, n, f, args.samples or None, args.seed, args.simulate)
                    rows.append([f"{n:,}", f"{f:.1%}" if f else "0", clock(c.mean), clock(c.p95),
                                 f"{c.startup:.1f}" if not f else "", f"{c.end_phase:.1f}" if not f else "",
                                 f"{c.shortcuts:.2f}" if f else "", f"{c.misses:.2f}" if f else "",
                                 f"{c.cost:.1f}" if f else "", _chance(c.p_cut_bound) if f else ""])
            print(table(["N", "failures", "T mean", "T p95", "start-up s", "END s", "short-cuts",
                         "start-up skips", "s per failure", "P(cut)"], rows))
            if rings == 1:
                print(f"\nOne failure, extra seconds ({rate_name(bps)}):")
                show_costs(q, nodes)
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


def _chance(x: float) -> str:
    if x < 1e-6:
        return "< 1e-6"
    return f"{x:.1e}" if x < 0.01 else f"{x:.1%}"


def measure() -> None:
    """SETUP and END costs per member with dolly_core's own code (best of 15)."""
    import uuid
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dolly_core import protocol as pr
    from dolly_core import verdicts
    from dolly_core.ring import FileSpec, Member, Ring, RunSetup

    def best(fn, reps=15):
        out = INF
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t)
        return out
    rows = []
    for n in (100, 1000, 10000):
        members = ([Member("head", "10.0.0.1", 9999)]
                   + [Member(f"node{i:05d}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 9998)
                      for i in range(1, n + 1)] + [Member("head", "10.0.0.1", 9999)])
        setup = RunSetup(uuid.uuid4().hex, Ring(tuple(members)),
                         (FileSpec("/srv/images/golden.img", "/dev/sda", False, 4_500_000_000),), CHUNK, 10.0, 60.0)
        frame = pr.control(pr.Kind.SETUP, setup.to_body(1, 2))
        head = pr.unpack_header(frame[:pr.HEADER_LEN])
        body = frame[pr.WIRE_HEADER_LEN:]
        enc = best(lambda: pr.control(pr.Kind.SETUP, setup.to_body(1, 2)))
        dec = best(lambda: RunSetup.from_body(pr.parse_control(head, body)).plan)
        server = {"sha256": ["ab" * 32], "digest": ["cd" * 32]}
        end: dict = {"server": server, "verdicts": {}}
        for i in range(1, n + 1):   # what the last member receives: every member before it verified
            end = verdicts.add(end, i, verdicts.verified(setup, server, round(40 + i * 0.0042, 3)), setup)
        mine = verdicts.verified(setup, server, 41.234)
        end_frame = pr.control(pr.Kind.END, end)
        end_head = pr.unpack_header(end_frame[:pr.HEADER_LEN])

        def hop():
            got = pr.parse_control(end_head, end_frame[pr.WIRE_HEADER_LEN:])
            pr.control(pr.Kind.END, verdicts.add(got, n + 1, mine, setup))
        rows.append([f"{n:,}", f"{len(frame) / n:.1f}", f"{(enc + dec) / n * 1e6:.2f}",
                     f"{len(end_frame) / n:.0f}", f"{best(hop) / n * 1e6:.2f}"])
    print(table(["members", "SETUP bytes/member", "SETUP us/member", "END bytes/verdict", "END us/verdict/hop"],
                rows))


if __name__ == "__main__":
    sys.exit(main())
