"""One module per external service (dhcpd, tftp, http), each with the same few verbs: check, install,
reload, start, stop."""
