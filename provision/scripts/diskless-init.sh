#!/bin/busybox sh
# /init of provision's diskless initramfs (see provision/images/diskless.py): modules, the boot NIC by DHCP,
# then diskless-fetch (the golden root as a squashfs, its sha256 verified, and the node's identity) into a
# tmpfs, the squashfs mounted read-only under a tmpfs overlay, the identity applied, switch_root. Nothing is
# written to a disk. Each step is a `provision-diskless:` line on the console.
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1
echo "provision-diskless: initramfs up, kernel $(uname -r)"
say() { echo "provision-diskless: $* (at $(cut -d' ' -f1 /proc/uptime) s)"; }
retry() { say "$*: trying again in 10 s"; sleep 10; }

modules=/lib/modules/$(uname -r)
while read -r module; do
  insmod "$modules/$module" || say "insmod $module failed"
done < "$modules/load-order"
[ -s "$modules/modules.alias" ] && modprobe -q -a $(cat /sys/bus/pci/devices/*/modalias)
say "modules loaded: $(wc -l < /proc/modules)"

arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
root_url=$(arg provision.root)
identity_url=$(arg provision.identity)
while [ -z "$root_url" ] || [ -z "$identity_url" ]; do
  retry "the kernel line has no provision.root= or provision.identity="
done

# The boot NIC: BOOTIF=01-aa-bb-cc-dd-ee-ff (pxelinux IPAPPEND 2, provision's GRUB config), else the first one.
bootif=$(arg BOOTIF | sed 's/^01-//' | tr 'A-F-' 'a-f:')
iface=
while [ -z "$iface" ]; do
  for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$name" = lo ] && continue
    if [ -z "$bootif" ] || [ "$(cat "$dev/address")" = "$bootif" ]; then iface=$name; break; fi
  done
  [ -n "$iface" ] || retry "no network interface${bootif:+ with MAC $bootif}"
done
ip link set lo up
ip link set "$iface" up
until udhcpc -i "$iface" -s /etc/udhcpc.sh -q -n -t 10 -T 2 >/dev/null 2>&1; do
  retry "no DHCP lease on $iface"
done
say "network $iface $(ip -4 -o addr show dev "$iface" | sed -n 's/.* inet \([0-9./]*\).*/\1/p')"

mkdir -p /run/diskless
mount -t tmpfs -o mode=0755 tmpfs /run/diskless
/bin/diskless-fetch "$root_url" "$identity_url" /run/diskless
cd /run/diskless && mkdir -p lower upper work /newroot
until mount -t squashfs -o ro,loop root.squashfs lower; do retry "cannot mount root.squashfs"; done
until mount -t overlay overlay -o lowerdir=lower,upperdir=upper,workdir=work /newroot; do
  retry "cannot mount the overlay"
done
cd /
if ! sh /run/diskless/identity /newroot; then
  say "the identity script failed: nothing booted; rebooting in 10 s"
  sleep 10
  reboot -f
fi
say "root: the verified image under a tmpfs overlay; switching root"
ip addr flush dev "$iface"
ip link set "$iface" down
for fs in dev proc sys; do mount --move "/$fs" "/newroot/$fs"; done
exec switch_root /newroot /sbin/init
