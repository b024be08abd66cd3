"""The simulated cluster: network namespaces on a bridge, namespace nodes and QEMU machines, the demos.

A test and demo rig, never imported by the product (`provision` outside this package): imports go one way,
lab -> product.
"""
