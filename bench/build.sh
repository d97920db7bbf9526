#!/bin/sh
# Builds the C load generator into bench/.build/ (run from anywhere).
set -eu
cd "$(dirname "$0")/.."
mkdir -p bench/.build
gcc -O2 -Wall -Wextra -o bench/.build/loadgen bench/loadgen.c -lm
