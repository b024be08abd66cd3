"""HTTP service: kickstarts and node reports, with real HTTP requests on loopback."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest

from provision.errors import ProvisionError
from provision.services.http import HttpServer
from provision.state import NodeState, StateStore
from tests.conftest import require_tool


@pytest.fixture
def served(tmp_path):
    ks = tmp_path / "kickstart"
    ks.mkdir()
    (ks / "n01.ks").write_text("%post\necho n01\n%end\n")
    (ks / "stale.ks").write_text("not a node any more\n")
    store = StateStore(tmp_path / "nodes.json")
    store.ensure(["n01", "n02"])
    server = HttpServer(ks, nodes=["n01", "n02"], on_report=store.report, host="127.0.0.1", port=0,
                        states=lambda: [r.to_json() for r in store.load().values()],
                        boot_of=lambda name: store.load()[name].boot).start()
    server.store = store
    try:
        yield server
    finally:
        server.stop()


def request(server, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_kickstart_is_served(served):
    assert request(served, "/kickstart/n01.ks") == (200, b"%post\necho n01\n%end\n")


@pytest.mark.parametrize("path", ["/kickstart/n02.ks", "/kickstart/stale.ks", "/kickstart/../nodes.json",
                                  "/kickstart/%2e%2e/nodes.json", "/nodes.json", "/"])
def test_other_paths_are_not_found(served, path):
    assert request(served, path)[0] == 404


def test_report_is_stored(served):
    status, body = request(served, "/api/nodes/n01/state", {"state": "ready", "message": "listening"})
    assert (status, json.loads(body)) == (200, {"ok": True})
    record = served.store.load()["n01"]
    assert record.state is NodeState.READY and record.message == "listening"
    request(served, "/api/nodes/n02/state", {"state": "failed", "message": "dollyC exited with status 1"})
    assert served.store.load()["n02"].error == "dollyC exited with status 1"
    status, body = request(served, "/api/nodes")
    assert [n["state"] for n in json.loads(body)["nodes"]] == ["ready", "failed"]


def test_unknown_node_is_refused(served):
    status, body = request(served, "/api/nodes/n99/state", {"state": "done", "message": ""})
    assert status == 404 and "unknown node 'n99'" in json.loads(body)["error"]
    assert "n99" not in served.store.load()


@pytest.mark.parametrize("raw", [b'{"state": "finished"}', b'{"state": "waiting"}', b"not json", b"[1]",
                                 b'{"message": "no state"}', b'{"state": "done", "message": 5}'])
def test_bad_report_is_400(served, raw):
    assert request(served, "/api/nodes/n01/state", raw=raw)[0] == 400
    assert served.store.load()["n01"].state is NodeState.WAITING


def test_report_with_curl_as_the_kickstart_sends_it(served):
    curl = require_tool("curl")
    url = f"http://127.0.0.1:{served.port}/api/nodes/n01/state"
    subprocess.run([curl, "-fsS", "-m", "10", "-o", "/dev/null", "-H", "Content-Type: application/json",
                    "-d", '{"state": "done", "message": "cloned"}', url], check=True, timeout=20)
    assert served.store.load()["n01"].state is NodeState.DONE
    bad = subprocess.run([curl, "-fsS", "-m", "10", "-o", "/dev/null", "-d", '{"state": "done"}',
                          url.replace("n01", "n77")], capture_output=True, timeout=20)
    assert bad.returncode != 0


def test_bind_error_is_clear(served):
    with pytest.raises(ProvisionError, match="HTTP cannot bind"):
        HttpServer(served.kickstart_dir, [], print, host="127.0.0.1", port=served.port).start()


def test_installer_asks_whether_it_is_due_for_install(served):
    assert json.loads(request(served, "/api/nodes/n01/boot")[1]) == {"name": "n01", "boot": "install"}
    served.store.set_boot(["n01"], "local")
    assert json.loads(request(served, "/api/nodes/n01/boot")[1]) == {"name": "n01", "boot": "local"}
    assert request(served, "/api/nodes/n99/boot")[0] == 404
