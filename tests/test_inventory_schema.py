"""The inventory's schema is the model: each section's known and required keys, and a node's settings with
their defaults, are read off the dataclasses of provision.model (no second list to keep in step)."""

from __future__ import annotations

import pytest
from tests.fixtures.inventories import inventory_yaml, write

from provision.errors import InputError
from provision.inventory import load_inventory
from provision.inventory.schema import NODE_SETTINGS, SETTING_DEFAULTS, TOP_KEYS, default, keys, required
from provision.model import DEFAULT_DISK, Boot, Disk, Firmware, Image, Inventory, Node, Partition, Server


def test_keys_and_required_keys_are_the_fields():
    assert keys(Server) == ("name", "ip", "http_port", "dolly_port", "node_auth")
    assert required(Server) == ("name", "ip") and required(Boot) == ("kernel", "initrd")
    assert (keys(Image), required(Image)) == (("source", "target", "cook"), ("source", "target"))
    assert (keys(Disk), required(Disk), default(Disk, "device")) == (("device", "label", "partitions"),
                                                                      ("partitions",), "sda")
    assert required(Partition) == ("fstype",)  # mount and size: required unless biosboot (OPTIONAL_KEY)
    assert "path" not in keys(Inventory) and "cluster" not in required(Inventory)  # NOT_A_KEY, OPTIONAL_KEY
    assert TOP_KEYS[-2:] == ("defaults", "nodes")
    assert required(Node) == ("name", "mac", "ip") and NODE_SETTINGS == keys(Node)[3:]
    assert SETTING_DEFAULTS["disk"] is DEFAULT_DISK and SETTING_DEFAULTS["firmware"] is Firmware.BIOS


def test_a_node_without_settings_gets_the_model_defaults(tmp_path):
    text = inventory_yaml(1).replace("defaults:\n", "defaults:\n  interface: eno1\n")
    node = load_inventory(write(tmp_path, text)).nodes[0]
    assert node.interface == "eno1"
    assert node == Node(node.name, node.mac, node.ip, interface="eno1", root_password_hash=node.root_password_hash)


def test_unknown_keys_are_answered_with_the_model_fields(tmp_path):
    text = inventory_yaml(1).replace("defaults:\n", "defaults:\n  disk: {partitions: [{mount: /, fstype: ext4, "
                                                   "size: 9}], size: 1}\n")
    with pytest.raises(InputError, match=r"defaults\.disk\.size: unknown key \(known keys: device, label, "
                                         r"partitions\): 'size'"):
        load_inventory(write(tmp_path, text))
