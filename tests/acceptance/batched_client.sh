#!/usr/bin/env bash
# The original's batched-processing client (examples/batched-processing):
# three partitions of client data encoded with settings from the environment
# only, uploaded whole to both servers' raw/ folders, then marked _SUCCESS.
# Object storage is a local folder here: STORE/<bucket>/<path>.
#
# Usage: tests/acceptance/batched_client.sh     (needs prio and jq on PATH)
# Environment: N_DATA BATCH_ID PUBLIC_KEY_HEX_INTERNAL PUBLIC_KEY_HEX_EXTERNAL
#   BUCKET_SERVER_A BUCKET_SERVER_B STORE WORKDIR
set -euo pipefail

: "${N_DATA?}" "${BATCH_ID?}" "${PUBLIC_KEY_HEX_INTERNAL?}" "${PUBLIC_KEY_HEX_EXTERNAL?}"
: "${BUCKET_SERVER_A?}" "${BUCKET_SERVER_B?}" "${STORE?}" "${WORKDIR?}"

cd "$WORKDIR"
output_a=$BUCKET_SERVER_A/raw
output_b=$BUCKET_SERVER_B/raw
mkdir -p "$output_a" "$output_b"

jq -c '{payload: .}' <<EOF_DATA >part-0.ndjson
[1, 0, 0]
[1, 1, 0]
[1, 1, 1]
EOF_DATA

jq -c '{payload: .}' <<EOF_DATA >part-1.ndjson
[1, 0, 1]
[1, 1, 1]
[1, 0, 1]
[1, 1, 1]
EOF_DATA

jq -c '{payload: .}' <<EOF_DATA >part-2.ndjson
[1, 0, 0]
[1, 0, 0]
[1, 0, 0]
[1, 0, 0]
[1, 1, 0]
[1, 1, 0]
[1, 1, 1]
EOF_DATA

while IFS= read -r filename; do
    prio encode-shares --input "$filename" --output-A "$output_a" --output-B "$output_b"
    jq -c '.' "$output_a/$filename" >/dev/null
    jq -c '.' "$output_b/$filename" >/dev/null
done < <(find . -maxdepth 1 -name "*.ndjson")

for output in "$output_a" "$output_b"; do
    mkdir -p "$STORE/$output"
    cp -r "$output/." "$STORE/$output/"
    touch "$STORE/$output/_SUCCESS"
done
