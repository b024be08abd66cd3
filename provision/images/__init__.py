"""Artifacts the project builds from Debian packages, each cached under a key of what built it.

cache.py  the cache directory and its entries (build into a temporary directory, then rename)
debs.py   Debian packages: candidate versions, `apt-get download` into the cache, `dpkg-deb -x`
kernel.py the installer kernel: Debian's linux-image package, unpacked, with modules.dep
modules.py  kernel module load order from modules.dep (pure)
cpio.py   newc cpio archives (the initramfs format), written in Python
initrd.py the installer initrd: busybox, python3-minimal, this project, the NIC and disk modules
golden.py the golden image: a small bootable Debian made with mmdebstrap, GRUB placed without loop devices
bootsector.py  MBR partition tables and BIOS GRUB (boot.img + core.img) written as bytes, no tools
"""
