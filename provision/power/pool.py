"""Power verbs on many nodes at once: a bounded pool of workers, one BMC session per node, retries with backoff
while a BMC does not answer, and one Outcome per node (a failed node never stops the others)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from provision.errors import InputError
from provision.model import BmcType, Node
from provision.power import Driver, Outcome, PowerError, Unreachable, Verb
from provision.power.credentials import password
from provision.power.ipmi import IpmiDriver
from provision.power.redfish import RedfishDriver

WORKERS = 16
TIMEOUT = 10.0  # seconds per request to a BMC
RETRIES = 2  # more attempts after a BMC gave no answer
BACKOFF = 1.0  # seconds before the first retry, doubled each time


def connect(node: Node, timeout: float) -> Driver:
    """A session to the node's BMC with the driver of its protocol."""
    assert node.bmc is not None
    secret = password(node.bmc, node.name)
    if node.bmc.type == BmcType.REDFISH:
        return RedfishDriver(node.bmc, secret, timeout)
    return IpmiDriver(node.bmc, secret, timeout)


def apply(driver: Driver, verbs: Sequence[Verb]) -> str:
    """Each verb in order; the power state after them."""
    for verb in verbs:
        if verb == Verb.PXE_ONCE:
            driver.pxe_once()
        elif verb != Verb.STATUS:
            driver.set_power(verb)
    return driver.power()


def run_node(node: Node, verbs: Sequence[Verb], timeout: float = TIMEOUT, retries: int = RETRIES,
             backoff: float = BACKOFF, sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """The verbs on one node; a BMC that does not answer is tried again after backoff, 2*backoff, ..."""
    start, attempt, verb = time.monotonic(), 0, verbs[-1]
    where = node.bmc.where if node.bmc else "no BMC"

    def outcome(**kw) -> Outcome:
        return Outcome(node.name, where, verb, attempts=attempt, seconds=time.monotonic() - start, **kw)

    if node.bmc is None:
        return outcome(error="no bmc: in the inventory for this node")
    while True:
        attempt += 1
        driver = None
        try:
            driver = connect(node, timeout)
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
    nodes = list(nodes)
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(nodes)))) as pool:
        return list(pool.map(lambda n: run_node(n, verbs, **kw), nodes))
