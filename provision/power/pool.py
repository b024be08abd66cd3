"""Power verbs on many nodes at once: a bounded pool of workers, one BMC session per node, retries with backoff
while a BMC does not answer, and one Outcome per node (a failed node never stops the others)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from provision.errors import InputError
from provision.model import Bmc, BmcType, Node
from provision.power import Driver, Outcome, PowerError, Unreachable, Verb
from provision.power.credentials import password
from provision.power.ipmi import IpmiDriver
from provision.power.redfish import RedfishDriver

WORKERS = 16
TIMEOUT = 10.0  # seconds per request to a BMC
RETRIES = 2  # more attempts after a BMC gave no answer
BACKOFF = 1.0  # seconds before the first retry, doubled each time


def connect(name: str, bmc: Bmc, timeout: float) -> Driver:
    """A session to the BMC (of node `name`) with the driver of its protocol."""
    secret = password(bmc, name)
    if bmc.type == BmcType.REDFISH:
        return RedfishDriver(bmc, secret, timeout)
    return IpmiDriver(bmc, secret, timeout)


def apply(driver: Driver, verbs: Sequence[Verb]) -> str:
    """Each verb in order; the power state after them."""
    for verb in verbs:
        if verb == Verb.PXE_ONCE:
            driver.pxe_once()
        elif verb != Verb.STATUS:
            driver.set_power(verb)
    return driver.power()


def run_node(node: Node, verbs: Sequence[Verb], **kw) -> Outcome:
    """The verbs on one node through its BMC (see run_bmc)."""
    return run_bmc(node.name, node.bmc, verbs, **kw)


def run_bmc(name: str, bmc: Bmc | None, verbs: Sequence[Verb], timeout: float = TIMEOUT, retries: int = RETRIES,
            backoff: float = BACKOFF, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """The verbs on the machine behind `bmc` (node `name`); a BMC that does not answer is tried again after
    backoff, 2*backoff, ..."""
    start, attempt, verb = time.monotonic(), 0, verbs[-1]
    where = bmc.where if bmc else "no BMC"

    def outcome(**kw) -> Outcome:
        return Outcome(name, where, verb, attempts=attempt, seconds=time.monotonic() - start, **kw)

    if bmc is None:
        return outcome(error="no bmc: in the inventory for this node")
    while True:
        attempt += 1
        driver = None
        try:
            driver = connect(name, bmc, timeout)
            return outcome(power=apply(driver, verbs))
        except InputError as exc:
            return outcome(error=str(exc))
        except Unreachable as exc:
            if attempt > retries:
                return outcome(error=f"{where}: {exc} after {attempt} attempts")
        except PowerError as exc:
            return outcome(error=f"{where}: {exc}")
        finally:
            if driver is not None:
                driver.close()
        sleep(backoff * 2 ** (attempt - 1))


def run(nodes: Iterable[Node], verbs: Sequence[Verb], workers: int = WORKERS, **kw) -> list[Outcome]:
    """The verbs on every node, `workers` nodes at a time; outcomes in the nodes' order."""
    return run_bmcs([(n.name, n.bmc) for n in nodes], verbs, workers, **kw)


def run_bmcs(targets: Iterable[tuple[str, Bmc | None]], verbs: Sequence[Verb], workers: int = WORKERS,
             **kw) -> list[Outcome]:
    """The verbs on every (name, BMC), `workers` at a time; outcomes in their order."""
    targets = list(targets)
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return list(pool.map(lambda t: run_bmc(*t, verbs, **kw), targets))
