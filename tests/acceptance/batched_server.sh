#!/usr/bin/env bash
# The original's batched-processing server (examples/batched-processing):
# settings from the environment only; each stage waits for the partner's
# _SUCCESS, copies the folder down, runs `prio` once per partition listed by
# `find DIR -type f -not -name _SUCCESS`, and copies its whole output folder to
# the partner's bucket with a _SUCCESS marker. Object storage is a local
# folder here: STORE/<bucket>/<path>.
#
# Usage: tests/acceptance/batched_server.sh     (needs prio and jq on PATH)
# Environment: N_DATA BATCH_ID SERVER_ID SHARED_SECRET PRIVATE_KEY_HEX
#   PUBLIC_KEY_HEX_INTERNAL PUBLIC_KEY_HEX_EXTERNAL BUCKET_INTERNAL
#   BUCKET_EXTERNAL STORE WORKDIR
set -euo pipefail

: "${N_DATA?}" "${BATCH_ID?}" "${SERVER_ID?}" "${SHARED_SECRET?}" "${PRIVATE_KEY_HEX?}"
: "${PUBLIC_KEY_HEX_INTERNAL?}" "${PUBLIC_KEY_HEX_EXTERNAL?}"
: "${BUCKET_INTERNAL?}" "${BUCKET_EXTERNAL?}" "${STORE?}" "${WORKDIR?}"
export N_DATA BATCH_ID SERVER_ID SHARED_SECRET PRIVATE_KEY_HEX PUBLIC_KEY_HEX_INTERNAL PUBLIC_KEY_HEX_EXTERNAL

cd "$WORKDIR"
mkdir -p raw intermediate/internal/{verify1,verify2,aggregate} processed

# Wait for a file to appear (every 0.2 s, for up to a minute).
poll_for_data() {
    local retries=0
    until [[ -e $1 ]]; do
        sleep 0.2
        ((++retries <= 300)) || { echo "Reached the maximum number of retries."; exit 1; }
    done
}

fetch_input_blocked() {
    local input=$1
    poll_for_data "$STORE/$BUCKET_INTERNAL/$input/_SUCCESS"
    mkdir -p "$input"
    cp -r "$STORE/$BUCKET_INTERNAL/$input/." "$input/"
}

send_output_external() {
    mkdir -p "$STORE/$BUCKET_EXTERNAL/$2"
    cp -r "$1/." "$STORE/$BUCKET_EXTERNAL/$2/"
    touch "$STORE/$BUCKET_EXTERNAL/$2/_SUCCESS"
}

send_output_internal() {
    mkdir -p "$STORE/$BUCKET_INTERNAL/$1"
    cp -r "$1/." "$STORE/$BUCKET_INTERNAL/$1/"
    touch "$STORE/$BUCKET_INTERNAL/$1/_SUCCESS"
}

list_partitions() {
    find "$1" -type f -not -name "_SUCCESS" -printf "%f\n"
}

input=raw
fetch_input_blocked "$input"
for filename in $(list_partitions "$input"); do
    prio verify1 --input "$input/$filename" --output intermediate/internal/verify1
    jq -c '.' "intermediate/internal/verify1/$filename" >/dev/null
done
send_output_external intermediate/internal/verify1 intermediate/external/verify1

fetch_input_blocked intermediate/external/verify1
for filename in $(list_partitions intermediate/internal/verify1); do
    prio verify2 --input "$input/$filename" \
        --input-internal "intermediate/internal/verify1/$filename" \
        --input-external "intermediate/external/verify1/$filename" \
        --output intermediate/internal/verify2
    jq -c '.' "intermediate/internal/verify2/$filename" >/dev/null
done
send_output_external intermediate/internal/verify2 intermediate/external/verify2

fetch_input_blocked intermediate/external/verify2
for filename in $(list_partitions intermediate/internal/verify2); do
    prio aggregate --input "$input/$filename" \
        --input-internal "intermediate/internal/verify2/$filename" \
        --input-external "intermediate/external/verify2/$filename" \
        --output intermediate/internal/aggregate
    jq -c '.' "intermediate/internal/aggregate/$filename" >/dev/null
done
send_output_external intermediate/internal/aggregate intermediate/external/aggregate

fetch_input_blocked intermediate/external/aggregate
for filename in $(list_partitions intermediate/internal/aggregate); do
    prio publish --input-internal "intermediate/internal/aggregate/$filename" \
        --input-external "intermediate/external/aggregate/$filename" \
        --output processed
    jq -c '.' "processed/$filename"
done
send_output_internal processed
