#!/bin/sh
# busybox udhcpc event script for provision's lab nodes: applies the lease to the interface (udhcpc
# itself configures nothing) and writes every lease variable to $PROVISION_LEASE_FILE as KEY=VALUE lines,
# including the BOOTP fields a PXE firmware uses (siaddr = next-server, boot_file = filename).
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    if [ -n "$PROVISION_LEASE_FILE" ]; then
      tmp="$PROVISION_LEASE_FILE.tmp"
      : > "$tmp"
      for var in ip mask subnet router dns domain hostname siaddr sname boot_file serverid lease; do
        eval "value=\${$var-}"
        printf '%s=%s\n' "$var" "$value" >> "$tmp"
      done
      mv "$tmp" "$PROVISION_LEASE_FILE"
    fi
    ;;
esac
exit 0
