#!/usr/bin/env bash
# A local S3-compatible server (SeaweedFS `weed mini`, installed into the venv by
# scripts/setup.sh) for the s3 tests, `cargo xtask crash-fuzz s3` and the s3 benchmark
# rows. It listens on 127.0.0.1 only and keeps everything under one directory.
#
#   eval "$(scripts/s3-server.sh start DIR)"
#       starts it with its data and logs in DIR and exports what the s3 tests, fuzz mode
#       and benchmarks read: PERSISTING_TEST_S3 (the bucket URI, s3://persisting) and
#       the endpoint and credentials as Lance (and pylance) read them from AWS_*
#   scripts/s3-server.sh stop DIR
#       stops the server started with DIR (by its PID)
#
# The server has one bucket, `persisting`, and accepts any credentials.
set -euo pipefail

VENV="${PERSISTING_VENV:-$HOME/.cache/persisting/venv}"
WEED="$VENV/bin/weed"
PORT=8333
BUCKET=persisting

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
dir="$2"

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

case "$1" in
start)
    [ -x "$WEED" ] || { echo "s3-server: $WEED not found: run scripts/setup.sh" >&2; exit 1; }
    if port_open; then
        echo "s3-server: 127.0.0.1:$PORT is already in use; stop what listens there first" >&2
        exit 1
    fi
    mkdir -p "$dir/data" "$dir/logs"
    # -ip and -ip.bind: loopback only; the Iceberg and Lance REST ports and the admin UI,
    # WebDAV and telemetry are off: only S3 is needed.
    "$WEED" -logdir="$dir/logs" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$PORT" -bucket="$BUCKET" -webdav=false -admin.ui=false \
        -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
        >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 300); do
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "s3-server: weed exited at start; its output:" >&2
            tail -20 "$dir/weed.log" >&2
            exit 1
        fi
        # the bucket exists once the server answers for it
        if port_open && "$VENV/bin/python" - "$PORT" "$BUCKET" 2>/dev/null <<'EOF'; then
import sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
urllib.request.urlopen(f"http://127.0.0.1:{port}/{bucket}?list-type=2&max-keys=1", timeout=2)
EOF
            cat <<VARS
export PERSISTING_TEST_S3=s3://$BUCKET
export AWS_ENDPOINT=http://127.0.0.1:$PORT
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=persisting
export AWS_SECRET_ACCESS_KEY=persisting
export AWS_REGION=us-east-1
VARS
            exit 0
        fi
        sleep 0.2
    done
    echo "s3-server: no answer on 127.0.0.1:$PORT after 60 s; its output:" >&2
    tail -20 "$dir/weed.log" >&2
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    exit 1
    ;;
stop)
    [ -f "$dir/pid" ] || { echo "s3-server: no $dir/pid" >&2; exit 1; }
    pid="$(cat "$dir/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/pid"; exit 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/pid"
    ;;
*)
    usage
    ;;
esac
