#!/bin/sh
# Boot script of the snaptest Linux guest; busybox init runs it from /etc/inittab:
#
#   init.sh boot      (::sysinit:)   mounts, kernel modules, config drive, data partition,
#                                    network
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
# The GPT name of the data partition (fixtures/bhyve_snaptest/images/bootdisk.py).
DATA_PARTITION=snapdata
# The NoCloud config drive: an ISO 9660 volume labelled cidata (fixtures/bhyve_snaptest/images/cloudinit.py).
CIDATA_LABEL=cidata
CIDATA_DIR=/run/cidata

say() {
    echo "snaptest: $*" > /dev/console
}

fail() {
    echo "SNAPTEST-ERROR: $*" > /dev/console
    mkdir -p "$STATE"
    echo "$*" >> "$STATE/failed"
}

# Seconds since boot, whole; the clock for bounded waits (sleep counts drift under emulation).
uptime_s() {
    read -r up _ < /proc/uptime
    echo "${up%.*}"
}

# retry SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds, for up to SECONDS;
# its output is the caller's result. Status 1 if it never succeeds.
retry() {
    deadline=$(($(uptime_s) + $1))
    shift
    until "$@"; do
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

# The partition whose GPT name is $1 (PARTNAME in its uevent): the boot disk may be on
# AHCI, virtio or NVMe, so it is found by name, not by device.
partition_named() {
    for uevent in /sys/class/block/*/uevent; do
        if grep -qx "PARTNAME=$1" "$uevent" 2>/dev/null; then
            echo "/dev/$(sed -n 's/^DEVNAME=//p' "$uevent")"
            return 0
        fi
    done
    return 1
}

# ext2/3/4 keep the superblock at byte 1024; its magic 0xEF53 (little-endian) is at +56.
has_ext_superblock() {
    magic=$(dd if="$1" bs=1024 skip=1 count=1 2>/dev/null | od -An -tx1 -j56 -N2 | tr -d ' \n')
    [ "$magic" = "53ef" ]
}

# True if the first 64 KiB are zero: a fresh partition. Anything else is never formatted.
is_blank() {
    [ -z "$(dd if="$1" bs=4096 count=16 2>/dev/null | od -An -tx1 | tr -d ' \n*0')" ]
}

# The image's data partition is empty: it is formatted at the first boot, never again, so
# data written before a checkpoint survives a restore.
setup_data_disk() {
    if ! disk=$(retry 30 partition_named "$DATA_PARTITION"); then
        fail "no data partition (no GPT partition named $DATA_PARTITION within 30 s)"
        return
    fi
    if ! has_ext_superblock "$disk"; then
        if ! is_blank "$disk"; then
            fail "data partition $disk holds data but no ext2/3/4 file system; not formatting it"
            return
        fi
        # busybox mke2fs makes ext2 only; the ext4 driver mounts it.
        if ! mke2fs -F -L "$DATA_PARTITION" "$disk" > /dev/null 2>&1; then
            fail "mke2fs $disk failed"
            return
        fi
        say "formatted data partition $disk"
    fi
    mkdir -p "$DATA_DIR"
    mount -t ext4 -o noatime "$disk" "$DATA_DIR" || fail "cannot mount $disk on $DATA_DIR"
}

# --- the config drive, read as nuageinit reads it ------------------------------------------
# The files are what fixtures/bhyve_snaptest/images/cloudinit.py writes: every value double-quoted, one per
# line, so sed reads them; tests/unit/test_linux_init.py runs these functions on its files.

# quoted_value FILE KEY: the "value" of the first `KEY: "value"` line (any indent).
quoted_value() {
    sed -n "s/^[[:space:]]*$2:[[:space:]]*\"\\([^\"]*\\)\"[[:space:]]*\$/\\1/p" "$1" | head -n 1
}

# list_values FILE KEY: the "items" of the block list under `KEY:`, one per line.
list_values() {
    awk -v key="$2:" '
        $1 == key { inside = 1; next }
        inside && $1 == "-" { v = $0; sub(/^[^"]*"/, "", v); sub(/"[^"]*$/, "", v); print v; next }
        inside { inside = 0 }' "$1"
}

# read_config DIR: the settings in DIR (meta-data, user-data, network-config) as
# NAME=VALUE lines; status 1, with the reason on stderr, when one is missing.
read_config() {
    for file in meta-data user-data network-config; do
        [ -r "$1/$file" ] || { echo "config drive has no $file" >&2; return 1; }
    done
    head -n 1 "$1/user-data" | grep -qx '#cloud-config' ||
        { echo "user-data is not #cloud-config" >&2; return 1; }
    hostname=$(quoted_value "$1/meta-data" local-hostname)
    key=$(list_values "$1/user-data" ssh_authorized_keys | head -n 1)
    mac=$(quoted_value "$1/network-config" macaddress)
    address=$(list_values "$1/network-config" addresses | head -n 1)
    gateway=$(quoted_value "$1/network-config" gateway4)
    for name in hostname key mac address gateway; do
        eval "value=\$$name"
        [ -n "$value" ] || { echo "config drive gives no $name" >&2; return 1; }
        echo "$name=$value"
    done
}

# The volume label of an ISO 9660 device: the primary volume descriptor is sector 16 (2 KiB
# sectors), "CD001" at +1, the 32-byte volume identifier at +40, blank-padded.
iso9660_label() {
    [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 1
    dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' '
}

# The device holding the ISO 9660 volume labelled cidata.
config_drive() {
    for dev in /dev/sr[0-9]*; do
        [ -b "$dev" ] || continue
        if [ "$(iso9660_label "$dev")" = "$CIDATA_LABEL" ]; then
            echo "$dev"
            return 0
        fi
    done
    return 1
}

# Mount the config drive and keep its settings in $STATE/config (NAME=VALUE lines).
load_config() {
    if ! drive=$(retry 10 config_drive); then
        fail "no config drive: no ISO 9660 volume labelled $CIDATA_LABEL within 10 s"
        return 1
    fi
    mkdir -p "$CIDATA_DIR"
    mount -t iso9660 -o ro "$drive" "$CIDATA_DIR" || { fail "cannot mount $drive"; return 1; }
    if ! read_config "$CIDATA_DIR" > "$STATE/config" 2> "$STATE/config.err"; then
        fail "bad config drive $drive: $(cat "$STATE/config.err")"
        umount "$CIDATA_DIR"
        return 1
    fi
    umount "$CIDATA_DIR"
}

# config_value NAME: one setting read from the config drive.
config_value() {
    sed -n "s/^$1=//p" "$STATE/config"
}

apply_config() {
    hostname "$(config_value hostname)"
    mkdir -p /root/.ssh
    config_value key > /root/.ssh/authorized_keys
    chmod 600 /root/.ssh/authorized_keys
}

# The interface with MAC address $1.
interface_with_mac() {
    for dir in /sys/class/net/*; do
        if [ "$(cat "$dir/address" 2>/dev/null)" = "$1" ]; then
            echo "${dir##*/}"
            return 0
        fi
    done
    return 1
}

setup_network() {
    ip link set lo up || fail "cannot bring up lo"
    mac=$(config_value mac)
    address=$(config_value address)
    if ! ifname=$(retry 10 interface_with_mac "$mac"); then
        fail "no network interface with MAC $mac within 10 s"
        return
    fi
    ip addr add "$address" dev "$ifname" || { fail "cannot set $address on $ifname"; return; }
    ip link set "$ifname" up || { fail "cannot bring up $ifname"; return; }
    gateway=$(config_value gateway)
    ip route add default via "$gateway" || fail "cannot add default route via $gateway"
}

boot_step() {
    mount_filesystems
    hostname snaptest
    load_modules
    load_config || return
    apply_config
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
    if ! retry 10 listening 22; then
        fail "dropbear is not listening on port 22 after 10 s"
        return
    fi
    address=$(config_value address)
    echo "SNAPTEST-READY ip=${address%/*}" > /dev/console
}

ready_step() {
    announce_ready
    touch "$STATE/boot-done"
}

# The shell's prompt would otherwise land in the middle of the boot messages, possibly on
# the line the harness waits for; so it starts only after READY (or ERROR) was printed.
console_step() {
    retry 60 test -e "$STATE/boot-done"
    exec /bin/sh
}

shutdown_step() {
    sync
    umount "$DATA_DIR" 2>/dev/null || mount -o remount,ro "$DATA_DIR" 2>/dev/null
    sync
}

# Sourced by the unit tests for its functions (SNAPTEST_INIT_FUNCTIONS=1): nothing runs.
[ -z "${SNAPTEST_INIT_FUNCTIONS:-}" ] || return 0

case "${1:-}" in
    boot) boot_step ;;
    ready) ready_step ;;
    console) console_step ;;
    shutdown) shutdown_step ;;
    *) echo "usage: $0 boot|ready|console|shutdown" >&2; exit 2 ;;
esac
