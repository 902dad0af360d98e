# shellcheck shell=bash
# Shared by the bin/ scripts (sourced, not run).

# Fail at once, naming every required variable that is unset or empty.
require() {
    local missing=()
    local name
    for name in "$@"; do
        if [[ -z "${!name:-}" ]]; then
            missing+=("$name")
        fi
    done
    if ((${#missing[@]})); then
        echo "$(basename "$0"): missing required variable(s): ${missing[*]}" >&2
        exit 2
    fi
}

today_utc() {
    date -u +%Y-%m-%d
}

log() {
    echo "[$(date -u +%H:%M:%S)] $(basename "$0")${SERVER_ID:+ $SERVER_ID}: $*" >&2
}

# Run a command and log how long it took.
timed() {
    local label=$1
    shift
    local start=$SECONDS
    "$@"
    log "$label took $((SECONDS - start))s"
}
