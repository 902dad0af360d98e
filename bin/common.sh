# shellcheck shell=bash disable=SC2034  # (its constants are used by the scripts that source it)
# Shared by the bin/ scripts (sourced, not run): flags, variables, logging and
# the bucket layout (bin/process runs its stages in one process: `prio process`).

script_name=${0##*/}

# The project's own .venv when `prio` is not on PATH: the scripts run from a clone as they are.
if ! command -v prio >/dev/null && [[ -x ${BASH_SOURCE[0]%/*}/../.venv/bin/prio ]]; then
    PATH="$(cd "${BASH_SOURCE[0]%/*}/../.venv/bin" && pwd):$PATH"
fi
if ! command -v prio >/dev/null; then
    prio() {
        log "prio is not installed: run \`make setup\` in the project (it makes .venv), or pip install it"
        return 127
    }
fi

# ---------------------------------------------------------------- logging

# log MESSAGE...: one line on stderr naming the script and server (no forks). Keys (64 hex
# digits, in every bucket path) show their first 8 digits, unless VERBOSE=1.
log() {
    local message="$*"
    if [[ ${VERBOSE:-} != 1 ]]; then
        while [[ $message =~ ([0-9A-Fa-f]{8})[0-9A-Fa-f]{56} ]]; do
            message=${message/"${BASH_REMATCH[0]}"/"${BASH_REMATCH[1]}…"}
        done
    fi
    TZ=UTC printf '[%(%H:%M:%S)T] %s%s: %s\n' -1 "$script_name" "${SERVER_ID:+ $SERVER_ID}" "$message" >&2
}

# The last part of a pipeline runs in this shell, so that `prefixed` can set variables.
shopt -s lastpipe

# prefixed LABEL COMMAND...: run COMMAND with each line it prints logged under LABEL;
# sets stage_total to M of its summary line "N errors out of M total".
prefixed() {
    local label=$1 line
    shift
    stage_total=
    "$@" 2>&1 | while IFS= read -r line; do
        if [[ $line =~ ^[0-9]+\ errors\ out\ of\ ([0-9]+)\ total ]]; then
            stage_total=${BASH_REMATCH[1]}
        fi
        log "${label}: ${line}"
    done
    return "${PIPESTATUS[0]}"
}

# timed LABEL COMMAND...: run COMMAND and log how long it took.
timed() {
    local label=$1 start=$SECONDS
    shift
    "$@"
    log "$label took $((SECONDS - start))s"
}

die() {
    log "$*"
    exit 2
}

# ------------------------------------------------------- flags and help

# The comment block under the shebang, without its leading "# ".
usage() {
    local line
    while IFS= read -r line; do
        [[ $line == '#!'* ]] && continue
        [[ $line == '#'* ]] || break
        line=${line#\#}
        printf '%s\n' "${line# }"
    done <"$0"
}

# parse_flags "SPEC..." ARGS...: set variables from long flags; --help prints the usage.
# SPEC is a space-separated list of `--name=variable` (takes a value, also as
# --name=VALUE) and `--name:variable` (a switch: sets variable to true).
parse_flags() {
    local -A takes_value=() switch=()
    local spec flag value
    for spec in $1; do
        if [[ $spec == *=* ]]; then
            takes_value[${spec%%=*}]=${spec#*=}
        else
            switch[${spec%%:*}]=${spec#*:}
        fi
    done
    shift
    while (($#)); do
        flag=$1
        shift
        case $flag in
            -h | --help) usage; exit 0 ;;
            '') die "unknown argument: '' (see --help)" ;;
        esac
        if [[ $flag == --*=* && -n ${takes_value[${flag%%=*}]:-} ]]; then
            printf -v "${takes_value[${flag%%=*}]}" '%s' "${flag#*=}"
        elif [[ -n ${takes_value[$flag]:-} ]]; then
            (($#)) || die "$flag needs a value (see --help)"
            value=$1
            shift
            printf -v "${takes_value[$flag]}" '%s' "$value"
        elif [[ -n ${switch[$flag]:-} ]]; then
            printf -v "${switch[$flag]}" '%s' true
        else
            die "unknown argument: $flag (see --help)"
        fi
    done
}

# --------------------------------------------------- variables and checks

missing=()
problems=()

# need NAME...: note every variable that is unset or empty.
need() {
    local name
    for name in "$@"; do
        [[ -n ${!name:-} ]] || missing+=("$name")
    done
}

# need_one_of NAME OTHER: one of two ways to give a value (a secret or its file).
need_one_of() {
    if [[ -n ${!1:-} && -n ${!2:-} ]]; then
        problems+=("give only one of $1 and $2")
    elif [[ -z ${!1:-} && -z ${!2:-} ]]; then
        missing+=("$1 (or $2)")
    fi
}

# check NAME PATTERN DESCRIPTION: note a problem unless $NAME matches the regex (when set).
# Never prints the value: some variables hold secrets.
check() {
    local name=$1 pattern=$2 description=$3
    if [[ -n ${!name:-} && ! ${!name} =~ ^($pattern)$ ]]; then
        problems+=("$name must be $description")
    fi
}

# Report every missing variable and every problem at once; exit 2 if any.
check_done() {
    if ((${#missing[@]})); then
        log "missing required variable(s): ${missing[*]}"
    fi
    local problem
    for problem in "${problems[@]}"; do
        log "$problem"
    done
    if ((${#missing[@]} + ${#problems[@]})); then
        exit 2
    fi
}

readonly HEX_KEY='[0-9A-Fa-f]{64}'
readonly INTEGER='[0-9]+'
readonly NUMBER='[0-9]+(\.[0-9]+)?'
# Names that become one path component: as batch ids (prio_processor/dataconfig.py).
readonly PATH_NAME='[A-Za-z0-9][A-Za-z0-9._-]{0,127}'
readonly DATE='[0-9]{4}-[0-9]{2}-[0-9]{2}'

today_utc() {
    TZ=UTC printf '%(%Y-%m-%d)T' -1
}

# Defaults and checks of the layout variables every script shares.
check_layout_variables() {
    : "${SUBMISSION_DATE:=$(today_utc)}"
    check APP_NAME "$PATH_NAME" "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
    check SUBMISSION_DATE "$DATE" "a date as YYYY-MM-DD"
    check BUCKET_PREFIX "$PATH_NAME(/$PATH_NAME)*" "folder names (as APP_NAME) joined by '/'"
}

# --------------------------------------------------------- bucket layout

# Each server's data lives in its buckets under the prefix named after the
# partner's public key:
#   BUCKET/BUCKET_PREFIX/<partner key>/APP_NAME/SUBMISSION_DATE/
#       raw/shares/batch_id=<id>/             client shares (private bucket)
#       intermediate/internal/<stage>/...     this server's packets (private bucket)
#       intermediate/external/<stage>/...     the partner's packets (shared bucket)
#       processed/publish/batch_id=<id>/      published totals (private bucket)
#       rejects/<stage>/batch_id=<id>/        rejected records (private bucket)
readonly RAW_SHARES=raw/shares
readonly INTERNAL=intermediate/internal
readonly EXTERNAL=intermediate/external
readonly PUBLISHED=processed/publish
readonly REJECTED=rejects

# data_root BUCKET PARTNER_KEY: print that root.
data_root() {
    printf '%s/%s/%s/%s/%s\n' "${1%/}" "$BUCKET_PREFIX" "${2^^}" "$APP_NAME" "$SUBMISSION_DATE"
}

# ------------------------------------------- S3 endpoints and keys (v4.1)

# An S3 bucket name: what a bare BUCKET_* value must be to become an s3:// bucket.
readonly S3_BUCKET_NAME='[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]'

# resolve_buckets NAME...: v4.1's endpoints and keys for the BUCKET_INTERNAL_* and
# BUCKET_EXTERNAL_* variables NAME. When BUCKET_<SIDE>_ENDPOINT is set, a bare bucket
# name of that side becomes s3://NAME on that endpoint; otherwise it stays a local folder.
# Every s3:// bucket of a side with an endpoint or keys (BUCKET_<SIDE>_ACCESS_KEY with
# BUCKET_<SIDE>_SECRET_KEY or ..._SECRET_KEY_FILE) is reached with them, through
# PRIO_S3_CONFIG (exported): bucket -> endpoint, access key and where the secret key is
# (its file or its variable's name, never the key). gs:// buckets and local folders pass
# unchanged. Notes problems for check_done.
resolve_buckets() {
    local name side value bucket entry prefix access secret file endpoint joined
    local -A entry_of=() named_by=()
    local entries=()
    for side in INTERNAL EXTERNAL; do
        prefix=BUCKET_${side}
        access=${prefix}_ACCESS_KEY secret=${prefix}_SECRET_KEY file=${prefix}_SECRET_KEY_FILE
        check "${prefix}_ENDPOINT" 'https?://[^[:space:]"\\]+' "an http:// or https:// URL"
        check "$access" '[A-Za-z0-9+/=._-]+' "an access key id"
        check "$file" '[^"\\]+' "a file name without quotes or backslashes"
        if [[ -n ${!access:-} ]]; then
            need_one_of "$secret" "$file"
        elif [[ -n ${!secret:-}${!file:-} ]]; then
            problems+=("$secret or $file needs $access")
        fi
        if [[ -n ${!file:-} && ! -r ${!file} ]]; then
            problems+=("$file names a file that cannot be read")
        fi
    done
    for name in "$@"; do
        value=${!name:-}
        [[ -n $value ]] || continue
        side=${name#BUCKET_}
        prefix=BUCKET_${side%%_*}
        endpoint=${prefix}_ENDPOINT access=${prefix}_ACCESS_KEY file=${prefix}_SECRET_KEY_FILE
        endpoint=${!endpoint:-} access=${!access:-} file=${!file:-}
        if [[ -n $endpoint && $value =~ ^${S3_BUCKET_NAME}$ ]]; then
            value=s3://$value
            printf -v "$name" '%s' "$value"
        fi
        [[ $value == s3://* && -n $endpoint$access ]] || continue
        bucket=${value#s3://}
        bucket=${bucket%%/*}
        entry=
        [[ -z $endpoint ]] || entry+="\"endpoint\": \"${endpoint}\", "
        if [[ -n $access && -n $file ]]; then
            entry+="\"access_key\": \"${access}\", \"secret_key_file\": \"${file}\", "
        elif [[ -n $access ]]; then
            # The prio commands read the key from this variable: named here, never copied.
            entry+="\"access_key\": \"${access}\", \"secret_key_env\": \"${prefix}_SECRET_KEY\", "
            export "${prefix}_SECRET_KEY"
        fi
        entry="{${entry%, }}"
        if [[ -n ${entry_of[$bucket]:-} ]]; then
            [[ ${entry_of[$bucket]} == "$entry" ]] ||
                problems+=("bucket ${bucket} is named by ${named_by[$bucket]} and ${name} with other endpoints or keys: one bucket name, one endpoint")
            continue
        fi
        entry_of[$bucket]=$entry
        named_by[$bucket]=$name
        entries+=("\"${bucket}\": ${entry}")
    done
    ((${#entries[@]})) || return 0
    if [[ -n ${PRIO_S3_CONFIG:-} ]]; then
        problems+=("give PRIO_S3_CONFIG or the BUCKET_*_ENDPOINT and BUCKET_*_ACCESS_KEY variables, not both")
        return 0
    fi
    joined=$(IFS=,; printf '%s' "${entries[*]}")
    export PRIO_S3_CONFIG="{${joined}}"
}

# ------------------------------------------------------------ commands

# Which implementation runs the stages: `cli` (prio) or `spark` (prio-spark).
readonly ENGINES='cli|spark'

# check_engine: note what ENGINE=spark lacks or refuses (for check_done).
check_engine() {
    [[ ${ENGINE:-} == spark ]] || return 0
    if [[ ${EVALUATION_POINT:-} == sequential ]]; then
        problems+=("ENGINE=spark evaluates every packet at the first draw: EVALUATION_POINT must be fixed")
    fi
    if [[ -n ${SPARK_SUBMIT:-} ]]; then
        command -v "$SPARK_SUBMIT" >/dev/null || problems+=("SPARK_SUBMIT names no command that can be run")
        return 0
    fi
    if [[ -z ${JAVA_HOME:-} ]] && ! command -v java >/dev/null; then
        problems+=("ENGINE=spark needs Java: java on PATH or JAVA_HOME")
    fi
    if ! python3 -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pyspark") is None)' \
        2>/dev/null; then
        problems+=("ENGINE=spark needs pyspark in python3 (pip install 'prio-processor[spark]')")
    fi
}

# stop_group PID: end the process group of PID, a background job that makes
# itself a group (`exec setsid ...`): TERM, up to 5 seconds to exit, then KILL.
# A job that has not become its own group yet is signalled by its pid alone, so
# that it never goes on to start its group after this returned.
stop_group() {
    local pid=$1 _
    [[ -n $pid ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
    kill -CONT -- "-$pid" 2>/dev/null || true
    for _ in {1..50}; do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ------------------------------------------------------------------ private data

# canonical LOCATION: a local path resolved (`..`, symbolic links), a URI as it is.
canonical() {
    if [[ $1 == *://* ]]; then printf '%s\n' "${1%/}"; else realpath -m -- "$1"; fi
}

# keep_apart PATH NAME...: exit 2 unless PATH, a folder of this server's data in clear (the
# cache), neither lies inside nor holds any of the buckets named by the variables NAME...
keep_apart() {
    local path name here there
    path=$1
    shift
    here=$(canonical "$path")
    for name in "$@"; do
        there=$(canonical "${!name}")
        if [[ $here/ == "$there"/* || $there/ == "$here"/* ]]; then
            die "${path} (this server's shares in clear) must not lie inside or hold ${name}, which the partner reads"
        fi
    done
}
