# Waiting for another package manager (apt, unattended-upgrades, a desktop updater) to release
# apt's and dpkg's locks. Sourced by setup.sh; tests/setup_script.rs runs it against a lock of
# its own by setting apt_lock_files and lock_wait after sourcing.

# How long to wait, in seconds, before giving up.
lock_wait=${SHMFRAME_APT_LOCK_WAIT:-600}

# The lock files apt and dpkg take (fcntl locks).
apt_lock_files=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock
    /var/cache/apt/archives/lock)

# Prints the first of apt_lock_files that a process holds a lock on (/proc/locks lists every
# lock by device and inode); fails if none is held.
held_apt_lock() {
    local file id
    for file in "${apt_lock_files[@]}"; do
        [[ -e "$file" ]] || continue
        id=$(stat -c '%Hd %Ld %i' "$file" | { read -r major minor inode; printf '%02x:%02x:%s' "$major" "$minor" "$inode"; })
        if grep -q " $id " /proc/locks 2>/dev/null; then
            echo "$file"
            return 0
        fi
    done
    return 1
}

# Waits (at most $lock_wait seconds) until no other package manager holds apt's locks.
wait_for_apt_locks() {
    local held waited=0
    while held=$(held_apt_lock); do
        if ((waited == 0)); then
            echo "setup: $held is held by another package manager (apt, unattended-upgrades?);" \
                "waiting up to ${lock_wait} s for it (SHMFRAME_APT_LOCK_WAIT sets the limit)"
        fi
        if ((waited >= lock_wait)); then
            echo "setup: $held is still held after ${lock_wait} s; let the other apt or dpkg" \
                "finish (or stop it), then run scripts/setup.sh again" >&2
            exit 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
}
