"""Node discovery (`provision discover`): DHCP requests from MACs the inventory lacks become new nodes.

dhcp_packet.py parses frames (pure), naming.py picks the next names and addresses (pure), appender.py adds
nodes to the inventory's text and writes it (validated, atomic, `.bak`), listener.py reads the wire.
"""
