#!/usr/bin/env bash
# bench/proxy: the firegopher proxy (internal/proxy, through the tiny main beside this
# script) against Debian's nginx as a reverse proxy, in front of the same fixed host-side
# backend (a private nginx serving a 1 KiB file; no VM), in the same run, on loopback.
# Both proxies: keep-alive to the client and to the backend, X-Forwarded-For/-Proto/-Host
# set, responses streamed (nginx: proxy_buffering off; ours: FlushInterval -1), one
# access-log line per request to a file, all cores. Load: wrk, 16 connections, rounds
# alternating between the two; medians of the rounds. Also the CPU time each proxy spent
# per request, which noise from other processes on the machine disturbs less.
# Goal (issue 13): >= 0.8x nginx's requests/s and <= 1.5x its p99 latency. A third
# contender, a bare httputil.ReverseProxy (bench main -bare), shows net/http's own floor.
# Usage: bench/proxy/run.sh [seconds per round, default 6] [rounds, default 3]
# Needs Go, curl, python3, wrk and nginx (installed with apt-get when missing and root).
# About 80 s with the defaults. Appends its table to bench/proxy/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/go/bin:$PATH
SECS=${1:-6}
ROUNDS=${2:-3}
CONNS=16

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "need: apt-get install -y ${missing[*]}" >&2; exit 1; fi
  # Keep the package's own nginx service from starting on :80 while it installs.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
chmod 755 "$work" # nginx workers may run as nobody
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
BP=$(freeport); NP=$(freeport); FP=$(freeport); XP=$(freeport)
HOST=bench.fg.bench

go build -o "$work/fgproxy" ./bench/proxy

mkdir -p "$work/www" "$work/tmp"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/www/index.html"
temps="client_body_temp_path $work/tmp/body; proxy_temp_path $work/tmp/proxy;
  fastcgi_temp_path $work/tmp/fastcgi; uwsgi_temp_path $work/tmp/uwsgi; scgi_temp_path $work/tmp/scgi;"

cat > "$work/backend.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/backend.pid;
error_log $work/backend-error.log warn;
events { worker_connections 4096; }
http {
  $temps
  access_log off;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:$BP; root $work/www; location / { } }
}
EOF

cat > "$work/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  $temps
  access_log $work/nginx-access.log;
  keepalive_requests 10000000;
  upstream backend { server 127.0.0.1:$BP; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$NP;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_buffering off;
      proxy_connect_timeout 2s;
      proxy_read_timeout 60s;
    }
  }
}
EOF

"$NGINX" -e "$work/backend-error.log" -c "$work/backend.conf" & pids+=($!)
"$NGINX" -e "$work/nginx-error.log" -c "$work/nginx.conf" & pids+=($!); NGINX_PID=$!
"$work/fgproxy" -listen "127.0.0.1:$FP" -backend "127.0.0.1:$BP" -name bench -domain fg.bench \
  -access-log "$work/fgproxy-access.log" & pids+=($!); FG_PID=$!
"$work/fgproxy" -bare -listen "127.0.0.1:$XP" -backend "127.0.0.1:$BP" & pids+=($!); BARE_PID=$!

# Wait for the three to answer, and check both proxies return the backend's file.
for port in $BP $NP $FP $XP; do
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "http://127.0.0.1:$port/" || true)" = 200 ] && break
    sleep 0.1
  done
  size=$(curl -sf -H "Host: $HOST" "http://127.0.0.1:$port/" | wc -c) || { echo "port $port does not answer" >&2; exit 1; }
  [ "$size" = 1024 ] || { echo "port $port answered $size bytes, want 1024" >&2; exit 1; }
done

# ticks PID: CPU clock ticks used so far by PID and its children (nginx's workers).
ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

# load PORT SECONDS PID: "requests/s p50_ms p99_ms cpu_us_per_request" from one wrk run,
# the CPU being the proxy's (PID and its children).
load() {
  local before after
  before=$(ticks "$3")
  wrk -t1 -c"$CONNS" -d"$2s" --latency -H "Host: $HOST" "http://127.0.0.1:$1/" > "$work/wrk.out"
  after=$(ticks "$3")
  python3 - "$work/wrk.out" $((after - before)) "$(getconf CLK_TCK)" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
ticks, hz = int(sys.argv[2]), int(sys.argv[3])
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
if errs: sys.exit("wrk saw errors: " + errs.group(0))
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {ticks / hz * 1e6 / total:.1f}")
PY
}

# warm up
load "$NP" 2 "$NGINX_PID" >/dev/null; load "$FP" 2 "$FG_PID" >/dev/null; load "$XP" 2 "$BARE_PID" >/dev/null
: > "$work/nginx.txt"; : > "$work/fgproxy.txt"; : > "$work/bare.txt"
for round in $(seq "$ROUNDS"); do
  load "$NP" "$SECS" "$NGINX_PID" >> "$work/nginx.txt"
  load "$FP" "$SECS" "$FG_PID" >> "$work/fgproxy.txt"
  load "$XP" "$SECS" "$BARE_PID" >> "$work/bare.txt"
  echo "round $round (req/s p50 p99 cpu-us): nginx $(tail -1 "$work/nginx.txt"), firegopher $(tail -1 "$work/fgproxy.txt"), bare httputil $(tail -1 "$work/bare.txt")" >&2
done

python3 - "$work/nginx.txt" "$work/fgproxy.txt" "$work/bare.txt" "$ROUNDS" "$SECS" "$CONNS" <<'EOF' | tee -a bench/proxy/RESULTS.md
import datetime, os, statistics, sys
def cols(path):
    rows = [list(map(float, l.split())) for l in open(path) if l.strip()]
    return [statistics.median(c) for c in zip(*rows)]
ng, fg, bare = cols(sys.argv[1]), cols(sys.argv[2]), cols(sys.argv[3])
rounds, secs, conns = sys.argv[4:7]
print(f"## {datetime.date.today()} - {os.cpu_count()} cores, wrk 1 thread, {conns} connections, {rounds} rounds of {secs}s each, medians\n")
print("| measure | nginx | firegopher proxy | ratio | goal | bare httputil.ReverseProxy | its ratio |")
print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
rows = [("requests/s", 0, "%.0f", ">= 0.8", lambda r: r >= 0.8),
        ("p50 latency, ms", 1, "%.3f", "", None),
        ("p99 latency, ms", 2, "%.3f", "<= 1.5", lambda r: r <= 1.5),
        ("proxy CPU per request, us", 3, "%.1f", "", None)]
for name, i, f, goal, ok in rows:
    r, rb = fg[i] / ng[i], bare[i] / ng[i]
    g = f"{goal} {'met' if ok(r) else 'MISSED'}" if ok else ""
    print(f"| {name} | {f % ng[i]} | {f % fg[i]} | {r:.2f} | {g} | {f % bare[i]} | {rb:.2f} |")
print()
EOF
