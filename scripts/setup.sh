#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Persisting.
# Safe to run any number of times: it installs only what is missing.
set -euo pipefail

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)

if ((${#need_apt[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    echo "setup: installing ${need_apt[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

echo "setup: protoc $(protoc --version 2>/dev/null | awk '{print $2}') ready"
