#!/usr/bin/env bash
# Instructions a proxy in `proxy_load` executes per request (user space, all threads), counted by
# callgrind: exact and repeatable where req/s and CPU time on a shared VM are not. Runs the
# 64-connection plain-HTTP case with one proxy under callgrind, zeroes the counters once load is
# flowing, dumps them 8 s later, and divides by the requests served in between:
#
# - kubegate (`h2`: every request over h2 to the upstream, `PROXY_LOAD_H2_FOR_EVERY_REQUEST=1`;
#   `h1`: HTTP/1.1 upstream; the default setting, h2 offered with short requests over HTTP/1.1
#   (`PROXY_LOAD_H2_FOR_EVERY_REQUEST=0 … h2`),
#   runs `h1`'s path for these GETs) and kubegate forwarding only (`h1-bare`: no
#   authentication, authorization, audit or metrics): the requests whose headers
#   `ForwardService` prepared in the window, read from the profile itself;
# - `nginx`: its `stub_status` request counter, read right after zeroing and right after dumping;
# - `reference`: the reference gateway binary (`PROXY_LOAD_REFERENCE_GATEWAY`, default
#   target/dist/examples/gateway), counted like kubegate; it serves HTTPS only, so this mode
#   always runs the case with TLS clients.
#
#   cargo build --profile dist -p kubegate-proxy --example proxy_load
#   cargo build --profile dist --example gateway    # for `reference`
#   crates/proxy/scripts/instructions-per-request.sh [h2|h1|h1-bare|nginx|reference]   # from the workspace root
#
# `PROXY_LOAD_BIN=target/release/examples/proxy_load` counts a `--release` build instead.
#
# `CLIENT=HTTPS` counts the case with TLS clients instead of plain-HTTP ones. `CASE=<title>`
# counts another case of the bench (its `PROXY_LOAD_ONLY` text), e.g. `CASE="64 streams"` for
# HTTP/2 clients.
#
# Needs valgrind (`apt-get install -y valgrind`). The callgrind profile is left in
# /tmp/kubegate-instructions-<proto>.out for `callgrind_annotate --inclusive=yes`. nginx's own
# code shows as addresses (Debian strips it); the total is what counts.
set -euo pipefail
proto=${1:-h2}
bin=${PROXY_LOAD_BIN:-target/dist/examples/proxy_load}
command -v callgrind_control >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
rm -f /tmp/kubegate-cg.*
callgrind="valgrind --tool=callgrind --callgrind-out-file=/tmp/kubegate-cg.%p"
if [ "$proto" = nginx ]; then wrap=PROXY_LOAD_NGINX_WRAP; else wrap=PROXY_LOAD_GATEWAY_WRAP; fi
client=${CLIENT:-plain}
reference=
if [ "$proto" = reference ]; then
  client=HTTPS
  reference=${PROXY_LOAD_REFERENCE_GATEWAY:-target/dist/examples/gateway}
  [ -x "$reference" ] || { echo "no reference gateway at $reference: build it first" >&2; exit 1; }
fi
env "$wrap=$callgrind" PROXY_LOAD_REFERENCE_GATEWAY="$reference" PROXY_LOAD_H2_FOR_EVERY_REQUEST="${PROXY_LOAD_H2_FOR_EVERY_REQUEST:-1}" PROXY_LOAD_ONLY="${CASE:-64 connections, $client}" \
  setsid taskset -c 0 "$bin" 30 >/tmp/kubegate-cg-bench.out 2>&1 &
bench=$!
# setsid made the bench a process group of its own: stop all of it (upstream, proxies) at exit.
trap 'kill -- -$bench 2>/dev/null || true' EXIT
sleep 2
dir=$(ls -dt /tmp/kubegate-proxy-load-* | head -1)

# nginx's request counter (the third number of stub_status's third line).
nginx_requests() {
  python3 -c 'import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/nginx_status").read().decode()
print(body.splitlines()[2].split()[2])' "$(cat "$dir/nginx.port")"
}

if [ "$proto" = nginx ]; then
  until [ -s "$dir/nginx.port" ]; do sleep 0.5; done
  # The bench reaches nginx after the gateways: wait until it is serving the load.
  until [ "$(nginx_requests 2>/dev/null || echo 0)" -gt 1000 ]; do sleep 0.5; done
  sleep 4
  pid=$(pgrep -f "valgrind.*nginx" | head -1)
  callgrind_control -z "$pid" >/dev/null
  before=$(nginx_requests)
  sleep 8
  callgrind_control -d "$pid" >/dev/null
  after=$(nginx_requests)
else
  until [ -s "$dir/gateway-h1-bare.json" ]; do sleep 0.5; done
  if [ "$proto" = reference ]; then
    # Its audit file fills once the load reaches it (starting up under valgrind is busy too).
    until [ -s "$dir/audit-reference.log" ]; do sleep 0.5; done
    pid=$(pgrep -f "valgrind.*--config .*/reference.yaml" | head -1)
  else
    pid=$(pgrep -f "valgrind.*gateway .* $proto\$" | head -1)
  fi
  # The gateways take the load one after the other: wait until this one is busy.
  ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  before=$(ticks); sleep 1; after=$(ticks)
  until [ $((after - before)) -gt 50 ]; do before=$after; sleep 1; after=$(ticks); done
  sleep 4
  callgrind_control -z "$pid" >/dev/null
  sleep 8
  callgrind_control -d "$pid" >/dev/null
fi
sleep 1
profile=$(ls -t /tmp/kubegate-cg."$pid"* | head -1)
total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
cp "$profile" "/tmp/kubegate-instructions-$proto.out"
if [ "$proto" = nginx ]; then
  # Less the two status requests themselves.
  requests=$((after - before - 1))
else
  # Calls of `ForwardService`'s header preparation (once per forwarded request, and LTO keeps
  # it a function of its own) inside the profiled window, read from the profile (callers'
  # "(Nx)" lines above the function's "*" line). Counting audit-log lines instead over-counts:
  # the background writer flushes in batches that straddle the window.
  counted=kubegate_proxy::forward::prepare_headers
  requests=$(callgrind_annotate --tree=caller --inclusive=yes "$profile" 2>/dev/null | awk -v counted="$counted" '
    /^ *[0-9,]+ .*< .*\(([0-9,]+)x\)/ { match($0, /\(([0-9,]+)x\)/); n = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", n); calls += n; next }
    /\*  / && index($0, counted) && !found { found = calls }
    { calls = 0 }
    END { print found + 0 }')
fi
if [ "$requests" -eq 0 ]; then
  echo "no calls of $counted in $profile: was it inlined? count another per-request function" >&2
  exit 1
fi
echo "$proto: $requests requests, $total instructions, $((total / requests)) per request"
