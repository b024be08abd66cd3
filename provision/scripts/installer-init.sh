#!/bin/busybox sh
# /init of provision's installer initrd (see provision/images/initrd.py): bring up the installer
# environment -- console, kernel modules in modules.dep order, the boot NIC by DHCP, Python with this
# project -- and report each step on the console with a `provision-installer:` line; with inst.ks= on the
# kernel line, run the installer (provision/installer/).
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1
echo "provision-installer: initrd up, kernel $(uname -r)"
say() { echo "provision-installer: $* (at $(cut -d' ' -f1 /proc/uptime) s)"; }
fail() { say "FAILED: $*"; exec sh; }

modules=/lib/modules/$(uname -r)
while read -r module; do
  insmod "$modules/$module" || say "insmod $module failed"
done < "$modules/load-order"
# Real machines' disk and NIC drivers (modules.alias holds only theirs): those of this machine's PCI devices.
drivers=
if [ -s "$modules/modules.alias" ]; then
  modprobe -q -a $(cat /sys/bus/pci/devices/*/modalias)
  drivers=$(for d in $(awk '{print $3}' "$modules/modules.alias" | sort -u); do
              grep -q "^$d " /proc/modules && echo "$d"; done)
fi
say "modules loaded: $(wc -l < /proc/modules)"${drivers:+"; for this machine: $(echo $drivers)"}

# The boot NIC: BOOTIF=01-aa-bb-cc-dd-ee-ff (pxelinux IPAPPEND 2, provision's GRUB config), else the first one.
bootif=$(sed -n 's/.*BOOTIF=01-\([0-9a-fA-F-]*\).*/\1/p' /proc/cmdline | tr 'A-F-' 'a-f:')
iface=
for i in 1 2 3 4 5 6 7 8 9 10; do
  for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$name" = lo ] && continue
    if [ -z "$bootif" ] || [ "$(cat "$dev/address")" = "$bootif" ]; then iface=$name; break; fi
  done
  [ -n "$iface" ] && break
  sleep 0.5
done
[ -n "$iface" ] || fail "no network interface${bootif:+ with MAC $bootif}"
ip link set lo up
ip link set "$iface" up
udhcpc -i "$iface" -s /etc/udhcpc.sh -q -n -t 10 -T 2 >/dev/null 2>&1 || fail "no DHCP lease on $iface"
address=$(ip -4 -o addr show dev "$iface" | sed -n 's/.* inet \([0-9./]*\).*/\1/p')
[ -n "$address" ] || fail "udhcpc ended without an address on $iface"
say "network $iface $address"

python3 -c 'import sys, dolly_core.cli, pykickstart.parser
print("provision-installer: python", sys.version.split()[0], "with dolly_core and pykickstart")' \
  || fail "python3 cannot import dolly_core and pykickstart"

if grep -q 'provision.poweroff' /proc/cmdline; then
  say "powering off (provision.poweroff)"
  poweroff -f
fi
if grep -q 'inst.ks=' /proc/cmdline; then
  say "starting the installer (inst.ks=)"
  python3 -m provision.installer
  rc=$?
  if [ "$rc" = 3 ]; then  # not due for install: its local system is mounted at /mnt/sysimage
    ip addr flush dev "$iface"
    ip link set "$iface" down
    for fs in dev proc sys; do mount --move "/$fs" "/mnt/sysimage/$fs"; done
    exec switch_root /mnt/sysimage /sbin/init
  fi
  say "the installer stopped (exit $rc): shell on the console, nothing rebooted"
  exec setsid cttyhack sh
fi
say "environment ready; shell on the console"
exec setsid cttyhack sh
