#!/usr/bin/env bash
# Instructions the kubegate stack in `proxy_load` executes per request (user space, all
# threads), counted by callgrind: exact and repeatable where req/s and CPU time on a shared VM
# are not. Runs the 64-connection plain-HTTP case with the gateways under callgrind, zeroes the
# counters once load is flowing, dumps them 8 s later, and divides by the number of audit events
# (one per request) serialized in between, read from the profile.
#
#   cargo build --release -p kubegate-proxy --example proxy_load
#   crates/proxy/scripts/instructions-per-request.sh [h2|h1]   # from the workspace root
#
# Needs valgrind (`apt-get install -y valgrind`). The callgrind profile is left in
# /tmp/kubegate-instructions-<proto>.out for `callgrind_annotate --inclusive=yes`.
set -euo pipefail
proto=${1:-h2}
bin=${PROXY_LOAD_BIN:-target/release/examples/proxy_load}
command -v callgrind_control >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
rm -f /tmp/kubegate-cg.*
PROXY_LOAD_GATEWAY_WRAP="valgrind --tool=callgrind --callgrind-out-file=/tmp/kubegate-cg.%p" \
  PROXY_LOAD_ONLY="64 connections, plain" setsid taskset -c 0 "$bin" 30 >/tmp/kubegate-cg-bench.out 2>&1 &
bench=$!
# setsid made the bench a process group of its own: stop all of it (upstream, proxies) at exit.
trap 'kill -- -$bench 2>/dev/null || true' EXIT
sleep 2
dir=$(ls -dt /tmp/kubegate-proxy-load-* | head -1)
log="$dir/audit-$proto.log"
until [ -s "$log" ]; do sleep 0.5; done
sleep 4
pid=$(pgrep -f "valgrind.*gateway .* $proto\$" | head -1)
callgrind_control -z "$pid" >/dev/null
sleep 8
callgrind_control -d "$pid" >/dev/null
sleep 1
profile=$(ls -t /tmp/kubegate-cg."$pid"* | head -1)
total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
cp "$profile" "/tmp/kubegate-instructions-$proto.out"
# Requests = calls of the audit event's serializer inside the profiled window, read from the
# profile itself (callers' "(Nx)" lines above the function's "*" line). Counting audit-log
# lines instead over-counts: the background writer flushes in batches that straddle the window.
requests=$(callgrind_annotate --tree=caller --inclusive=yes "$profile" 2>/dev/null | awk '
  /^ *[0-9,]+ .*< .*\(([0-9,]+)x\)/ { match($0, /\(([0-9,]+)x\)/); n = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", n); calls += n; next }
  /\*  .*AuditEvent>::write_json_line/ && !found { found = calls }
  { calls = 0 }
  END { print found + 0 }')
echo "$proto: $requests requests, $total instructions, $((total / requests)) per request"
