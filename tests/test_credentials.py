"""Per-install credentials: fresh secrets, a site's secret file, once-only delivery, the secret file's mode."""

from __future__ import annotations

import stat

import pytest

from provision.credentials import CredentialsTaken, RunCredentials, read_secret_file
from provision.errors import InputError


def test_every_install_has_new_secrets():
    first, second = RunCredentials.fresh(["n01", "n02"]), RunCredentials.fresh(["n01", "n02"])
    assert first.ring_secret != second.ring_secret
    assert first.tokens["n01"] != second.tokens["n01"] != first.tokens["n02"]
    assert len(first.ring_secret) == len(first.tokens["n01"]) == 64


def test_a_node_gets_its_credentials_once():
    creds = RunCredentials.fresh(["n01", "n02"])
    assert creds.deliver("n01") == {"name": "n01", "token": creds.tokens["n01"], "ring_secret": creds.ring_secret}
    with pytest.raises(CredentialsTaken, match="n01 were fetched before"):
        creds.deliver("n01")
    assert creds.deliver("n02")["token"] == creds.tokens["n02"]
    with pytest.raises(KeyError):
        creds.deliver("n03")  # not installing in this run


def test_the_ring_secret_file_is_the_owners_only(tmp_path):
    creds = RunCredentials.fresh(["n01"])
    path = tmp_path / "dolly" / "ring.secret"
    creds.write_secret(path)
    assert path.read_text() == creds.ring_secret + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_sites_secret_file(tmp_path):
    path = tmp_path / "site.secret"
    path.write_text("s3cret-of-the-site_0123456789\n")
    path.chmod(0o600)
    assert RunCredentials.fresh(["n01"], path).ring_secret == "s3cret-of-the-site_0123456789"


@pytest.mark.parametrize("text, mode, message", [
    ("s3cret-of-the-site_0123456789", 0o644, r"is readable by others \(mode 0644\); chmod 600 it"),
    ("short", 0o600, "must hold 16-512 characters"),
    ('has "quotes" and blanks in it', 0o600, "must hold 16-512 characters"),
])
def test_a_bad_secret_file_is_refused(tmp_path, text, mode, message):
    path = tmp_path / "site.secret"
    path.write_text(text)
    path.chmod(mode)
    with pytest.raises(InputError, match=message) as caught:
        read_secret_file(path)
    assert str(caught.value).startswith(f"dolly.secret_file: {path}")


def test_a_missing_secret_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="dolly.secret_file: cannot read"):
        read_secret_file(tmp_path / "absent")
