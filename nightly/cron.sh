#!/bin/sh
# The nightly run of bhyve-snaptest from cron(8) on a FreeBSD host (README, "Running under
# kyua, Jenkins or cron"): update the checkout, run the product's scenarios, log the verdict.
#
#   nightly/cron.sh [CHECKOUT]        (or BHYVE_SNAPTEST_CHECKOUT; default: this file's checkout)
#
# A crontab line (root's: the harness needs root for vmm, bridges and taps), 02:00 nightly:
#   0 2 * * * BHYVE_SNAPTEST_CACHE=/var/cache/bhyve-snaptest NIGHTLY_MAILTO=you@example.org /path/to/checkout/nightly/cron.sh
#
# Environment:
#   NIGHTLY_LOG           the log, one verdict block per night (default: CHECKOUT/results/nightly.log)
#   NIGHTLY_MAILTO        also mail the verdict with mail(1) to these addresses
#   NIGHTLY_LOCK          the lock file (default: /var/run/bhyve-snaptest-nightly.lock)
#   NIGHTLY_LOCK_COMMAND  how to hold it (default: FreeBSD's "lockf -s -t 0"; on Linux
#                         "flock -n -E 75" does the same)
#
# Exit status: the harness's (README, "Exit status"): 0 passed, 1 a test failed, 2
# interrupted, 3 the harness could not, 4 usage, 5 no test, 69 a missing prerequisite; and
# 69 also when git pull --ff-only fails (nothing ran), 75 (EX_TEMPFAIL) when the previous
# night's run still holds the lock (nothing ran).
set -eu

EX_UNAVAILABLE=69
EX_TEMPFAIL=75
# The nightly selection (README, "Nightly runs and CI systems").
SELECTION="scenario and not selftest"

say() { printf '%s\n' "$*" >>"$log"; }

# The meaning of a harness exit status, for the log and the mail's subject.
meaning() {
    case "$1" in
    0) echo "passed" ;;
    1) echo "a test failed" ;;
    2) echo "interrupted" ;;
    3) echo "the harness could not do what was asked" ;;
    4) echo "usage error" ;;
    5) echo "no test collected" ;;
    69) echo "missing prerequisite" ;;
    75) echo "the previous run still holds the lock" ;;
    *) echo "unexpected exit status" ;;
    esac
}

# Mails the night's block of the log when NIGHTLY_MAILTO is set (mail(1): base system).
notify() {
    [ -n "${NIGHTLY_MAILTO:-}" ] || return 0
    subject="bhyve-snaptest nightly on $(hostname): exit status $1 ($(meaning "$1"))"
    # shellcheck disable=SC2086
    printf '%s\n' "$2" | mail -s "$subject" $NIGHTLY_MAILTO || say "mail(1) failed"
}

# Runs under the lock: pull, test, log. Its exit status is the night's.
nightly() {
    if ! git pull -q --ff-only >>"$output" 2>&1; then
        # git's first line says why (its last is advice); the log shows the output's last.
        printf 'nightly: git pull --ff-only failed, nothing ran: %s\n' \
            "$(sed -n '/./{p;q;}' "$output")" >>"$output"
        return "$EX_UNAVAILABLE"
    fi
    status=0
    ./snaptest test -m "$SELECTION" >>"$output" 2>&1 || status=$?
    return "$status"
}

# The night's block for the log: date, commit, status and meaning, the run's results
# folder (only a new one), then ./snaptest test's summary lines or, without them, the last
# line of the output (set-up's or git's words).
verdict() {
    run_id=$(readlink results/latest 2>/dev/null || true)
    where="no new results"
    [ -z "$run_id" ] || [ "$run_id" = "$previous_run" ] ||
        where="results/$(basename "$run_id")"
    printf '%s nightly %s: exit status %s (%s)\n  %s, output %s\n' \
        "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$(git rev-parse --short HEAD)" "$1" \
        "$(meaning "$1")" "$where" "$output"
    summary=$(sed -n '/^snaptest: summary:/,$p' "$output" | sed '1d')
    if [ -n "$summary" ]; then
        printf '%s\n' "$summary"
    elif [ "$1" -ne 0 ] && [ -s "$output" ]; then
        printf '  %s\n' "$(tail -n 1 "$output")"
    fi
}

main() {
    # Absolute before the cd: the script runs itself again under the lock.
    script=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
    checkout=${1:-${BHYVE_SNAPTEST_CHECKOUT:-$(dirname "$(dirname "$script")")}}
    cd "$checkout"
    mkdir -p results
    log=${NIGHTLY_LOG:-$checkout/results/nightly.log}
    lock=${NIGHTLY_LOCK:-/var/run/bhyve-snaptest-nightly.lock}

    if [ "${NIGHTLY_LOCKED:-}" != yes ]; then
        # Not yet under the lock: run this script again under it. lockf -s -t 0 exits
        # EX_TEMPFAIL at once when the file is locked, else with the command's status
        # (freebsd-src usr.bin/lockf/lockf.c, main()).
        status=0
        # shellcheck disable=SC2086
        NIGHTLY_LOCKED=yes ${NIGHTLY_LOCK_COMMAND:-lockf -s -t 0} "$lock" \
            sh "$script" "$checkout" || status=$?
        if [ "$status" -eq "$EX_TEMPFAIL" ]; then
            block="$(date -u '+%Y-%m-%d %H:%M:%S UTC') nightly: exit status $status ($(meaning "$status")); nothing ran"
            say "$block"
            notify "$status" "$block"
        fi
        return "$status"
    fi

    # The whole output of the night, kept beside the harness's results folders.
    output=$checkout/results/nightly-$(date -u +%Y%m%dT%H%M%SZ).out
    : >"$output"
    previous_run=$(readlink results/latest 2>/dev/null || true)
    status=0
    nightly || status=$?
    block=$(verdict "$status")
    say "$block"
    notify "$status" "$block"
    return "$status"
}

main "$@"
