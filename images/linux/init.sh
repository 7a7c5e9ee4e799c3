#!/bin/sh
# Boot script of the snaptest Linux guest; busybox init runs it from /etc/inittab:
#
#   init.sh boot      (::sysinit:)   mounts, kernel modules, data disk, network
#   init.sh ready     (::once:)      waits until dropbear listens, then says SNAPTEST-READY
#   init.sh console   (ttyS0::respawn:) a root shell on the serial console, once boot is over
#   init.sh shutdown  (::shutdown:)  flushes and unmounts /data before power-off
#
# The harness reads the console: every failure prints one line starting with "SNAPTEST-ERROR:"
# so a broken guest fails the test at once instead of after an SSH timeout, and then no
# SNAPTEST-READY line follows. Every wait is bounded, because the boot step blocks init.

PATH=/sbin:/usr/sbin:/bin:/usr/bin
export PATH

STATE=/run/snaptest
MODULE_LIST=/etc/snaptest/modules
DATA_DIR=/data
# Defaults for QEMU user networking; a driver with another network passes snaptest.ip= etc.
DEFAULT_IP=10.0.2.15/24
DEFAULT_IF=eth0

say() {
    echo "snaptest: $*" > /dev/console
}

fail() {
    echo "SNAPTEST-ERROR: $*" > /dev/console
    mkdir -p "$STATE"
    echo "$*" >> "$STATE/failed"
}

# The value of KEY=VALUE on the kernel command line; status 1 when KEY is absent.
cmdline_value() {
    for word in $(cat /proc/cmdline); do
        case "$word" in
            "$1="*) echo "${word#*=}"; return 0 ;;
        esac
    done
    return 1
}

# Seconds since boot, whole; the clock for bounded waits (sleep counts drift under emulation).
uptime_s() {
    read -r up _ < /proc/uptime
    echo "${up%.*}"
}

# wait_for SECONDS TEST-ARGS...: poll `test TEST-ARGS` every 0.1 s for up to SECONDS.
wait_for() {
    deadline=$(($(uptime_s) + $1))
    shift
    until test "$@"; do
        [ "$(uptime_s)" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

mount_filesystems() {
    mount -t proc proc /proc || fail "cannot mount /proc"
    mount -t sysfs sysfs /sys || fail "cannot mount /sys"
    mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"
    mkdir -p /dev/pts
    # gid 5 is "tty" in /etc/group; dropbear hands out ptys for interactive sessions.
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts || fail "cannot mount devpts"
    mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "cannot mount /tmp"
    mount -t tmpfs -o mode=755 tmpfs /run || fail "cannot mount /run"
    mkdir -p "$STATE"
}

# The list is written by the image builder from recipe.toml; modprobe pulls in dependencies.
load_modules() {
    while read -r module; do
        [ -n "$module" ] || continue
        modprobe "$module" || fail "modprobe $module failed"
    done < "$MODULE_LIST"
}

# find_data_disk DEVICE...: the first DEVICE to appear within 30 s.
find_data_disk() {
    deadline=$(($(uptime_s) + 30))
    while :; do
        for disk in "$@"; do
            [ -b "$disk" ] && { echo "$disk"; return 0; }
        done
        [ "$(uptime_s)" -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

# ext2/3/4 keep the superblock at byte 1024; its magic 0xEF53 (little-endian) is at +56.
has_ext_superblock() {
    magic=$(dd if="$1" bs=1024 skip=1 count=1 2>/dev/null | od -An -tx1 -j56 -N2 | tr -d ' \n')
    [ "$magic" = "53ef" ]
}

# True if the first 64 KiB are zero: a fresh disk. A partition table or any other data is
# never formatted over, whatever device name it has.
is_blank() {
    [ -z "$(dd if="$1" bs=4096 count=16 2>/dev/null | od -An -tx1 | tr -d ' \n*0')" ]
}

# The data disk is snaptest.disk= if given, else the first of the usual names to appear: the
# guest boots from a kernel and an initramfs, so normally the data disk is its only disk.
# A fresh (all-zero) disk is formatted once; a disk that already holds a file system is never
# formatted again, so data written before a reboot or a checkpoint survives.
setup_data_disk() {
    candidates=$(cmdline_value snaptest.disk) || candidates="/dev/sda /dev/vda /dev/nvme0n1"
    # shellcheck disable=SC2086 # a list of device names, split on purpose
    if ! disk=$(find_data_disk $candidates); then
        fail "no data disk (none of $candidates appeared within 30 s)"
        return
    fi
    if ! has_ext_superblock "$disk"; then
        if ! is_blank "$disk"; then
            fail "data disk $disk holds data but no ext2/3/4 file system; not formatting it"
            return
        fi
        # busybox mke2fs makes ext2 only; the ext4 driver mounts it.
        if ! mke2fs -F -L snapdata "$disk" > /dev/null 2>&1; then
            fail "mke2fs $disk failed"
            return
        fi
        say "formatted data disk $disk"
    fi
    mkdir -p "$DATA_DIR"
    mount -t ext4 -o noatime "$disk" "$DATA_DIR" || fail "cannot mount $disk on $DATA_DIR"
}

setup_network() {
    ip link set lo up || fail "cannot bring up lo"
    address=$(cmdline_value snaptest.ip) || address=$DEFAULT_IP
    ifname=$(cmdline_value snaptest.if) || ifname=$DEFAULT_IF
    if ! wait_for 10 -e "/sys/class/net/$ifname"; then
        fail "no network interface $ifname within 10 s"
        return
    fi
    ip addr add "$address" dev "$ifname" || { fail "cannot set $address on $ifname"; return; }
    ip link set "$ifname" up || { fail "cannot bring up $ifname"; return; }
    if gateway=$(cmdline_value snaptest.gw); then
        ip route add default via "$gateway" || fail "cannot add default route via $gateway"
    fi
}

boot_step() {
    mount_filesystems
    hostname snaptest
    load_modules
    setup_data_disk
    setup_network
}

# True once something listens on TCP port $1 (IPv4 or IPv6); 0A is the LISTEN state.
listening() {
    port=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null \
        | awk -v p=":$port" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 } END { exit !f }'
}

# init starts dropbear (::respawn:) right after this step begins, so READY waits for it:
# the harness may connect the moment it sees the line.
announce_ready() {
    [ -s "$STATE/failed" ] && return
    deadline=$(($(uptime_s) + 10))
    until listening 22; do
        if [ "$(uptime_s)" -ge "$deadline" ]; then
            fail "dropbear is not listening on port 22 after 10 s"
            return
        fi
        sleep 0.1
    done
    address=$(cmdline_value snaptest.ip) || address=$DEFAULT_IP
    echo "SNAPTEST-READY ip=${address%/*}" > /dev/console
}

ready_step() {
    announce_ready
    touch "$STATE/boot-done"
}

# The shell's prompt would otherwise land in the middle of the boot messages, possibly on
# the line the harness waits for; so it starts only after READY (or ERROR) was printed.
console_step() {
    wait_for 60 -e "$STATE/boot-done"
    exec /bin/sh
}

shutdown_step() {
    sync
    umount "$DATA_DIR" 2>/dev/null || mount -o remount,ro "$DATA_DIR" 2>/dev/null
    sync
}

case "${1:-}" in
    boot) boot_step ;;
    ready) ready_step ;;
    console) console_step ;;
    shutdown) shutdown_step ;;
    *) echo "usage: $0 boot|ready|console|shutdown" >&2; exit 2 ;;
esac
