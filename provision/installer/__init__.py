"""The installer that runs inside provision's initrd (its /init starts it when the kernel line has inst.ks=):

    python3 -m provision.installer              # the install, driven by /proc/cmdline
    python3 -m provision.installer bootloader SYSIMAGE DISK   # `provision-bootloader`, called by the %post
    python3 -m provision.installer grow DEVICE...             # `provision-grow`, called by the %post

1. the kernel line (cmdline.py): inst.ks=URL, provision.boot_url=URL, BOOTIF=01-<mac>;
2. due check (fetch.py): GET provision.boot_url; `local` -> boot the local disk without touching it
   (local_boot.py: /init switch_roots into it, exit status 3), else `reboot -f`;
3. the kickstart over HTTP, read with pykickstart (kickstart.py);
4. partitions (disk_plan.py, partition.py): a GPT or an MBR table from the kickstart's `part` lines, the
   file systems except the root's (it receives the image);
5. the kickstart's %post scripts (post.py), which call
6. `provision-grow` (grow.py) once the image is received, and
7. `provision-bootloader` (bootloader.py): the clone's own GRUB images, no GRUB tools;
8. the %post reports done (the server flips the node), then unmount, sync, `reboot -f` (main.py).
Each phase prints a `provision-installer: <phase>` line on the console (console.py).
The lab's nodes (provision.lab.node) use the kernel line, fetch and kickstart modules too.
"""

from provision.installer.bootloader import BootTarget, bootloader_main, gpt_core_command, install_bootloader
from provision.installer.cmdline import Cmdline, kernel_arg_url, kickstart_url, parse_cmdline
from provision.installer.disk_plan import (MIB_SECTORS, DiskPlan, PlannedPartition, format_commands, mbr,
                                           partition_device, partition_table, plan_disk)
from provision.installer.ext import ext_blocks, ext_label, read_ext_blocks
from provision.installer.grow import grow, grow_main
from provision.installer.kickstart import PostScript, post_scripts, read_kickstart
from provision.installer.main import install, main
from provision.installer.post import post_phase

__all__ = ["MIB_SECTORS", "BootTarget", "Cmdline", "DiskPlan", "PlannedPartition", "PostScript", "bootloader_main",
           "ext_blocks", "ext_label", "format_commands", "gpt_core_command", "grow", "grow_main", "install",
           "install_bootloader", "kernel_arg_url", "kickstart_url", "main", "mbr", "parse_cmdline",
           "partition_device", "partition_table", "plan_disk", "post_phase", "post_scripts", "read_ext_blocks",
           "read_kickstart"]
