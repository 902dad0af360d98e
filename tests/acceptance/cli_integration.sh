#!/usr/bin/env bash
# The original's command line integration flow (scripts/test-cli-integration),
# as an operator's script written for it runs it: keys and seed from `prio`,
# `encode-shares`, then every stage for server A and B with all options given
# as flags, each output copied by hand to the partner's folder, and `publish`
# with --private-key-hex and --shared-secret as the original's script passes.
#
# Usage: tests/acceptance/cli_integration.sh WORKDIR   (needs prio and jq on PATH)
set -euo pipefail

cd "$1"
for server in server_a server_b; do
    for path in raw intermediate/{internal,external}/{verify1,verify2,aggregate} processed; do
        mkdir -p "working/${server}/${path}"
    done
done
mkdir -p working/client

key_a=$(prio keygen)
key_b=$(prio keygen)
shared=$(prio shared-seed)
N_DATA=5
BATCH_ID="test"
FILENAME=data.ndjson
SHARED_SECRET=$(jq -r ".shared_seed" <<<"$shared")
SERVER_A_PUBLIC_KEY=$(jq -r ".public_key" <<<"$key_a")
SERVER_B_PUBLIC_KEY=$(jq -r ".public_key" <<<"$key_b")
SERVER_A_PRIVATE_KEY=$(jq -r ".private_key" <<<"$key_a")
SERVER_B_PRIVATE_KEY=$(jq -r ".private_key" <<<"$key_b")
CLIENT_BUCKET=working/client
SERVER_A_BUCKET=working/server_a
SERVER_B_BUCKET=working/server_b

jq -c '{payload: .}' <<EOF_DATA >"${CLIENT_BUCKET}/${FILENAME}"
[1, 0, 0, 0, 0]
[1, 1, 0, 0, 0]
[1, 1, 1, 0, 0]
[1, 1, 1, 1, 0]
[1, 1, 1, 1, 1]
EOF_DATA

prio encode-shares \
    --n-data "${N_DATA}" \
    --batch-id "${BATCH_ID}" \
    --public-key-hex-internal "${SERVER_A_PUBLIC_KEY}" \
    --public-key-hex-external "${SERVER_B_PUBLIC_KEY}" \
    --input "${CLIENT_BUCKET}/${FILENAME}" \
    --output-A "${SERVER_A_BUCKET}/raw/" \
    --output-B "${SERVER_B_BUCKET}/raw/"
jq -c '.' "${SERVER_A_BUCKET}/raw/${FILENAME}" >/dev/null
jq -c '.' "${SERVER_B_BUCKET}/raw/${FILENAME}" >/dev/null

# server_flags ID: the options every server stage of that server takes.
server_flags() {
    if [[ $1 == A ]]; then
        flags=(--n-data "${N_DATA}" --batch-id "${BATCH_ID}" --server-id A
            --private-key-hex "${SERVER_A_PRIVATE_KEY}" --shared-secret "${SHARED_SECRET}"
            --public-key-hex-internal "${SERVER_A_PUBLIC_KEY}"
            --public-key-hex-external "${SERVER_B_PUBLIC_KEY}")
    else
        flags=(--n-data "${N_DATA}" --batch-id "${BATCH_ID}" --server-id B
            --private-key-hex "${SERVER_B_PRIVATE_KEY}" --shared-secret "${SHARED_SECRET}"
            --public-key-hex-internal "${SERVER_B_PUBLIC_KEY}"
            --public-key-hex-external "${SERVER_A_PUBLIC_KEY}")
    fi
}

# stage STAGE ID OWN_BUCKET PARTNER_BUCKET: run a stage, then copy its output to the partner.
stage() {
    local name=$1 id=$2 own=$3 partner=$4 inputs=()
    server_flags "$id"
    case $name in
        verify1) inputs=(--input "${own}/raw/${FILENAME}") ;;
        verify2) inputs=(--input "${own}/raw/${FILENAME}"
            --input-internal "${own}/intermediate/internal/verify1/${FILENAME}"
            --input-external "${own}/intermediate/external/verify1/${FILENAME}") ;;
        aggregate) inputs=(--input "${own}/raw/${FILENAME}"
            --input-internal "${own}/intermediate/internal/verify2/${FILENAME}"
            --input-external "${own}/intermediate/external/verify2/${FILENAME}") ;;
    esac
    prio "$name" "${flags[@]}" "${inputs[@]}" --output "${own}/intermediate/internal/${name}/"
    jq -c '.' "${own}/intermediate/internal/${name}/${FILENAME}" >/dev/null
    cp "${own}/intermediate/internal/${name}/${FILENAME}" "${partner}/intermediate/external/${name}/"
}

for name in verify1 verify2 aggregate; do
    stage "$name" A "$SERVER_A_BUCKET" "$SERVER_B_BUCKET"
    stage "$name" B "$SERVER_B_BUCKET" "$SERVER_A_BUCKET"
done

for id in A B; do
    own=$SERVER_A_BUCKET
    [[ $id == A ]] || own=$SERVER_B_BUCKET
    server_flags "$id"
    prio publish "${flags[@]}" \
        --input-internal "${own}/intermediate/internal/aggregate/${FILENAME}" \
        --input-external "${own}/intermediate/external/aggregate/${FILENAME}" \
        --output "${own}/processed/"
    jq -c '.' "${own}/processed/${FILENAME}"
done
