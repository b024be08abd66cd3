"""The simulated cluster: network namespaces on a bridge, namespace nodes and QEMU machines, the demos.

A test and demo rig, never imported by the product (`provision` outside this package) but for the
`provision lab` command (provision/commands/lab.py): imports go one way, lab -> product
(tests/test_lab_apart.py).
"""
