"""The END report's verdicts (protocol 4): what a member adds to END as it passes, and every member's whole
verdict, read back from END by the server.

A verdict is {ok, error, bytes, seconds, files: [{path, sha256 or blake3}]}. One that is exactly what a
verified member reports (ok, no error, every byte of every file, each file's OUT path with the server's
plain digest) travels as its seconds alone, in a run of consecutive ring indexes, all in one string:
    "verified": "FIRST:SECONDS,SECONDS,...;FIRST:SECONDS,..."     e.g. "1:9.101,9.2;5:9.5"
Any other verdict (failed, dead, refused) travels whole in "verdicts": {index: verdict}. So END grows by a
few bytes per verified member (it carried ~170 per verdict before), a member parses and re-encodes the runs
as one JSON string (not a number per member), and the server rebuilds each verdict exactly as the member
made it. Pure data: no sockets.
"""

from __future__ import annotations

import math

from dolly_core.digest import BLAKE3, SHA256
from dolly_core.ring import RunSetup


def plain_digests(server: object) -> dict[str, list]:
    """{algorithm: each file's plain digest} from END's server part ({} when dollyS made none)."""
    if not isinstance(server, dict):
        return {}
    return {name: server[name] for name in (SHA256, BLAKE3) if isinstance(server.get(name), list)}


def verified(setup: RunSetup, server: object, seconds: float) -> dict:
    """The verdict of a member that verified every file, as node.py makes it, after `seconds`."""
    plain = plain_digests(server)
    files = [{"path": f.out, **{name: values[i] if i < len(values) else None for name, values in plain.items()}}
             for i, f in enumerate(setup.files)]
    return {"ok": True, "error": None, "bytes": sum(f.size for f in setup.files), "seconds": seconds,
            "files": files}


def _next_index(runs: str) -> int | None:
    """The index that would continue the last run (None without a readable one)."""
    first, _, seconds = runs.rpartition(";")[2].partition(":")
    try:
        return int(first) + seconds.count(",") + 1
    except ValueError:
        return None


def add(body: dict, index: int, verdict: dict, setup: RunSetup) -> dict:
    """END as member `index` sends it on: with its verdict, as seconds in a run when it is `verified`'s."""
    body = dict(body)
    seconds = verdict.get("seconds")
    runs = body.get("verified")
    runs = runs if isinstance(runs, str) else ""
    whole = body.get("verdicts")
    whole = {k: v for k, v in whole.items() if k != str(index)} if isinstance(whole, dict) else {}
    if (isinstance(seconds, float) and math.isfinite(seconds)
            and verdict == verified(setup, body.get("server"), seconds)):
        if runs and _next_index(runs) == index:
            body["verified"] = f"{runs},{seconds!r}"
        else:
            body["verified"] = f"{runs};{index}:{seconds!r}" if runs else f"{index}:{seconds!r}"
    else:
        whole[str(index)] = verdict
    body["verdicts"] = whole  # a member's own verdict replaces any other word on it
    return body


def read(body: dict, setup: RunSetup) -> dict[str, dict]:
    """Every verdict END carries for the ring's members, whole, by ring index (as text): protocol 3's
    "verdicts". A run that does not parse gives no verdicts (its members have none, as if it never came)."""
    server, out = body.get("server"), {}
    runs = body.get("verified")
    for run in runs.split(";") if isinstance(runs, str) and runs else ():
        first, _, text = run.partition(":")
        try:
            index, seconds = int(first), [float(s) for s in text.split(",")]
        except ValueError:
            continue
        for k, s in enumerate(seconds):
            if index + k in setup.ring.clients and math.isfinite(s):
                out[str(index + k)] = verified(setup, server, s)
    whole = body.get("verdicts")
    out.update((k, v) for k, v in (whole.items() if isinstance(whole, dict) else ())
               if isinstance(v, dict) and k.isdigit() and int(k) in setup.ring.clients)
    return out
