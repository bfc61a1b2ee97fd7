#!/usr/bin/env bash
# start-shards.sh: run N expense shards on this machine. A shard is its own
# MySQL server (MariaDB, or Oracle MySQL 8.0/8.4 on a best-effort basis) with
# its own data directory, and its own server.ts in front of it on loopback.
# The first start makes the cluster's secret (data/cluster-secret). It gives
# no shard a cluster map: the operator's reshard makes the first one
# (node ch_client.ts reshard --to A,B,C; docs/resharding.md).
#
#   ./start-shards.sh [N]       start shards 1..N (default 3) on ports 3000, 4000, 5000, 6001, 7000 ...
#   ./start-shards.sh status    one line per shard (with standbys, a line per machine too)
#   ./start-shards.sh stop [N]  stop every shard, or shard N: its servers first, then its MySQLs
#   ./start-shards.sh sql N     a MySQL client on shard N, as root (arguments after N go to it);
#                               sql-standby N, sql-standby-2 N: on its standby machines
#   ./start-shards.sh rejoin N  after a failover (ch_client.ts failover): every machine of shard N
#                               that does not follow the primary becomes its standby again (rebuilt
#                               if its data is gone or diverged); a plain start does the same
#
# SHARDS_STANDBY=1 at the first start gives each shard a standby, 2 two;
# $SHARDS_DIR/mode keeps that. This script runs the processes and keeps the
# ports, the lock (one start, stop or rejoin at a time) and the mode;
# mysql/pair.ts decides what each machine needs and asks it for each process
# (rules S1-S7 in mysql/replication.ts). Environment (docs/operations.md):
# SHARDS_DIR (default data/), SHARDS_BASE_PORT (3000), SHARDS_PORT_STEP (1000),
# MYSQLD (mariadbd or mysqld on PATH), SHARDS_STANDBY, SHARDS_SEMISYNC_TIMEOUT_MS.
set -euo pipefail
umask 077 # data, sockets and password files are the owner's alone

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shards_dir=${SHARDS_DIR:-$root/data}
base_port=${SHARDS_BASE_PORT:-3000}
port_step=${SHARDS_PORT_STEP:-1000}
host=127.0.0.1
node=$root/node_modules/.bin/node
export NODE_COMPILE_CACHE=$shards_dir/.compile-cache # compiled modules kept between Node starts
PATH=$PATH:/usr/sbin:/usr/local/sbin # where mysqld lives on Debian and others
# Under load every fork costs up to a tenth of a second, and a rejoin is on
# the clock of an outage: values are computed once, with builtins.

die() { printf 'start-shards: %s\n' "$*" >&2; exit 1; }

# A mode this script does not know is refused before anything is done, not
# taken as none (SHARDS_STANDBY=2 once started three shards with no standby, silently).
case ${SHARDS_STANDBY:-0} in
  0 | 1 | 2) ;;
  *) die "SHARDS_STANDBY=$SHARDS_STANDBY is not a mode this script knows: 0 (no standby, the default), 1 (one standby per shard) or 2 (two standbys per shard). Nothing was done; run it again with SHARDS_STANDBY=0, 1 or 2" ;;
esac
# Standbys per shard: as the first start chose ("single", "standby" or "two-standbys" in the mode file); a SHARDS_STANDBY above it adds standbys.
modes=(single standby two-standbys) word= recorded=0
{ read -r word <"$shards_dir/mode"; } 2>/dev/null || true
case $word in standby) recorded=1 ;; two-standbys) recorded=2 ;; esac
mode=$((${SHARDS_STANDBY:-0} > recorded ? ${SHARDS_STANDBY:-0} : recorded))
# A shard's machines are named for where they were born: "primary" (the shard's own directory), "standby" and "standby-2" (subdirectories).
names=(primary standby standby-2)
machines=("${names[@]:0:mode+1}")

# fetch() refuses the ports in api/bad-ports.txt (the Fetch standard's "bad
# ports"): a shard there could never be reached by the client. So shard 4 runs
# on 6001, not X11's 6000.
fetch_blocked=' '
while read -r line; do [[ $line == \#* ]] || fetch_blocked+="$line "; done <"$root/api/bad-ports.txt"

# Shard $1's machines: dir, http and mysql (ports) by machine, pm (the primary, S6) and others. Rule S2: a
# shard's ports are its HTTP port plus 0, 100, 400 (the machines' servers) and 200, 300, 500 (their MySQLs).
declare -A dir http mysql
layout() {
  local k m offsets=(0 200 100 300 400 500)
  shard=$1 others=() pm=primary
  for k in "${!machines[@]}"; do
    m=${machines[k]}
    dir[$m]=$shards_dir/shard-$1
    [ "$m" = primary ] || dir[$m]+=/$m
    port "http[$m]" $((base_port + port_step * ($1 - 1) + offsets[2 * k]))
    port "mysql[$m]" $((base_port + port_step * ($1 - 1) + offsets[2 * k + 1]))
  done
  { read -r pm <"${dir[primary]}/primary"; } 2>/dev/null || true
  [[ -n ${dir[$pm]:-} ]] || pm=primary
  for m in "${machines[@]}"; do [ "$m" = "$pm" ] || others+=("$m"); done
}
port() { if [[ $fetch_blocked == *" $2 "* ]]; then printf -v "$1" %s $(($2 + 1)); else printf -v "$1" %s "$2"; fi; }
label() { if [ "$1" = primary ]; then printf 'shard %s' "$shard"; else printf "shard %s's %s machine" "$shard" "$1"; fi; }

known_shards() { local d; for d in "$shards_dir"/shard-*; do [ -d "$d" ] && printf '%s\n' "${d##*-}"; done | sort -n; }

# True while a process runs. A zombie has ended and only waits to be reaped.
running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c 1)" != Z ]; }

# True if the pid in file $1 runs what we expect (after a reboot the pid may
# belong to something else entirely); that pid is left in $pid.
alive() {
  local what
  pid=
  { read -r pid <"$1"; } 2>/dev/null || true
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && what=$(ps -o stat=,args= -p "$pid" 2>/dev/null) || return 1
  case $what in Z*) return 1 ;; *server.ts* | *mysqld* | *mariadbd*) return 0 ;; *) return 1 ;; esac
}

# GET /healthz on a port: its HTTP status (000: no answer), or with "error", the reason it gives.
health() {
  (
    exec 3<>"/dev/tcp/$host/$1"
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    if [ "${2:-}" = error ]; then sed -n 's/.*"error":"\(\([^"\\]\|\\.\)*\)".*/\1/p' <&3; else read -r -t 5 _ code _ <&3 && printf '%s' "$code"; fi
  ) 2>/dev/null || { [ "${2:-}" = error ] || printf '000'; }
}

# Which MySQL, and a machine's MySQL started and stopped; what a start checks before it starts anything.
. "$root/mysql/mysqld.sh"
. "$root/mysql/start-checks.sh"

# --- One machine's server ---------------------------------------------------

# Waits up to $2 tenths of a second for process $1 to end, then kills it.
reap() { local i; for ((i = 0; i < $2; i++)); do running "$1" || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }

# Machine $1's server, with the environment after it (mysql/pair.ts's). A
# smaller young generation kept its private memory at 58 MB instead of 87 MB
# under load (bench/e2e.ts).
start_server() {
  local m=$1 d=${dir[$1]} port=${http[$1]} i why server_pid
  shift
  printf '%s\n' "$port" >"$d/port"
  (
    cd "$root"
    env -u START_SHARDS_PID "$@" HOST=$host PORT="$port" MYSQL_SOCKET="$d/mysqld.sock" MYSQL_USER=expenses MYSQL_PASSWORD_FILE="$d/password" \
      MYSQL_DATABASE=expenses CLUSTER_SECRET_FILE="$shards_dir/cluster-secret" \
      nohup "$node" --max-semi-space-size=4 server.ts </dev/null >>"$d/server.log" 2>&1 9>&- {from}<&- {to}>&- &
    echo $! >"$d/server.pid"
  )
  started+=("server:$m")
  read -r server_pid <"$d/server.pid"
  for i in {1..100}; do
    case $(health "$port") in
      200) return 0 ;;
      # Up, with a stored map it cannot read: it says so on every request, and the operator's tool repairs it.
      503) why=$(health "$port" error)
        if [[ $why == *'its stored cluster map'* ]]; then echo "shard $shard: up, but $why" >&2; return 0; fi ;;
    esac
    running "$server_pid" || die "$(label "$m"): the server stopped while starting. The end of $d/server.log:
$(tail -n 15 "$d/server.log")"
    sleep 0.1
  done
  die "$(label "$m"): the server on port $port did not report healthy within 10 s; see $d/server.log"
}

stop_server() {
  alive "${dir[$1]}/server.pid" || return 0
  kill "$pid" 2>/dev/null || return 0 # SIGTERM lets requests in flight finish
  reap "$pid" 150
}

# --- One shard --------------------------------------------------------------

# mysql/pair.ts's steps on the shard layout() chose: its machines' ports and pids in the environment.
pair() {
  local m pids=() mysqls=() https=()
  for m in "${machines[@]}"; do
    alive "${dir[$m]}/server.pid" && pids+=("$pid") || pids+=(-)
    alive "${dir[$m]}/mysqld.pid" && pids+=("$pid") || pids+=(-)
    mysqls+=("${mysql[$m]}") https+=("${http[$m]}")
  done
  PAIR_SHARD=$shard PAIR_DIR=${dir[primary]} PAIR_MACHINES="${machines[*]}" PAIR_MYSQL="${mysqls[*]}" PAIR_HTTP="${https[*]}" PAIR_PIDS="${pids[*]}" \
    PAIR_MYSQLD=${mysqld:-} PAIR_INSTALL_DB=${install_db:-} PAIR_EXTRA_FLAGS="${extra_flags[*]}" PAIR_CLIENT=${client:-} PAIR_DUMP=${dump:-} PAIR_FLAVOUR=${flavour:-} \
    "$node" "$root/mysql/pair.ts" "$@" 9>&-
}

# What this run started, so that a failure takes it down again.
started=()
roll_back() {
  local i
  [ ${#started[@]} -gt 0 ] || return 0
  echo "start-shards: stopping what this run started" >&2
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    case ${started[i]} in server:*) stop_server "${started[i]#*:}" ;; mysql:*) stop_mysql "${started[i]#*:}" ;; esac
  done
}

# Shard $1: mysql/pair.ts's start decides and asks for each process it
# needs, one request a line: "mysqld M OPTION..." or "server M VAR=VALUE...", answered
# "done" once it serves (a failure ends this script, and with it the
# request). Its other lines are for the operator. Exit 2: refused, nothing
# written; what runs stays, for the failover that is the way out.
start_shard() {
  local line ask code=0 pair_pid from to
  layout "$1"
  find_mysql
  mkdir -p "${dir[primary]}"
  trap roll_back EXIT
  coproc PAIR { pair start; }
  pair_pid=$PAIR_PID
  exec {from}<&"${PAIR[0]}" {to}>&"${PAIR[1]}"
  while IFS= read -r line <&"$from"; do
    IFS=$'\t' read -r -a ask <<<"$line"
    case $line in
      mysqld$'\t'*) start_mysql "${ask[@]:1}" ;;
      server$'\t'*) start_server "${ask[@]:1}" ;;
      *) printf '%s\n' "$line"; continue ;;
    esac
    echo done >&"$to"
  done
  wait "$pair_pid" || code=$?
  [ "$code" = 0 ] || [ "$code" = 2 ] || exit 1
  trap - EXIT
  [ "$code" = 0 ] || exit 1
}

# --- Commands ---------------------------------------------------------------

# One start, stop or rejoin at a time, on this shards directory (the lock is
# the file's; children that outlive this script never hold it).
lock() {
  mkdir -p "$shards_dir"
  exec 9>>"$shards_dir/lock"
  flock "$1" 9 || die "another ./start-shards.sh start, stop or rejoin runs on $shards_dir (pid $(cat "$shards_dir/lock.pid" 2>/dev/null || echo '?')); wait for it to end, then run this again"
  echo $$ >"$shards_dir/lock.pid"
  export START_SHARDS_PID=$$
}

start() {
  local n=$1 i todo=() failed=()
  check_start "$n"
  lock -n
  check_more_standbys
  [ ${#todo[@]} -gt 0 ] || { echo "all $n shards are already up; nothing to do"; return 0; }
  [ -x "$node" ] || { echo "installing dependencies (npm ci)"; (cd "$root" && npm ci --no-audit --no-fund) >&2; }
  echo "${modes[mode]}" >"$shards_dir/mode"
  # 256 random bits, readable by this user alone. Servers get the file's path, never the secret.
  [ -s "$shards_dir/cluster-secret" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$shards_dir/cluster-secret"
  # Each shard in a process of its own: one that fails takes down what it started, and no other shard.
  for i in "${todo[@]}"; do "$BASH" "$0" start-shard "$i" || failed+=("$i"); done
  [ ${#failed[@]} -eq 0 ] || die "shard(s) ${failed[*]} did not start (see above); the others are up"
}

status() {
  local i any=0
  for i in $(known_shards); do any=1; layout "$i"; pair status; done
  [ "$any" = 1 ] || echo "no shards in $shards_dir"
}

stop() {
  local i m
  find_mysql
  for i in ${1:-$(known_shards)}; do
    [ -d "$shards_dir/shard-$i" ] || die "usage: $0 stop [N]; shard '$i' does not exist"
    layout "$i"
    # The servers first, so that no write is in flight; then the primary's
    # MySQL, whose shutdown sends the standbys all it has; then theirs.
    for m in "${others[@]}" "$pm"; do stop_server "$m"; done
    for m in "$pm" "${others[@]}"; do stop_mysql "$m"; done
    echo "shard $i: stopped"
  done
}

# After a failover: the servers of the machines that do not follow the primary
# go (an old primary's served as the primary), and the shard starts again, which
# makes each of those machines a standby.
rejoin() {
  [ "$mode" != 0 ] && [ -d "$shards_dir/shard-${1:-x}/standby" ] || die "usage: $0 rejoin N, for a shard with a standby; shard '${1:-}' has none"
  local m stopping
  layout "$1"
  # D4: first the machines that do not follow the primary let go of commits waiting for an ack (a thawed old primary's server waits on one, and would not stop); pair.ts names them, and their servers go.
  stopping=$(pair release) || die "shard $1: could not tell which machines to rejoin (see above); no server was stopped. Run ./start-shards.sh rejoin $1 again"
  for m in $stopping; do stop_server "$m"; done
  "$BASH" "$0" start-shard "$1" || die "shard $1 did not rejoin (see above); fix that, then run ./start-shards.sh rejoin $1 again"
  echo "shard $1 has its standby$([ "$mode" = 1 ] || echo s) again"
}

case ${1:-3} in
  stop) lock '-w 120'; stop "${2:-}" ;;
  status) status ;;
  sql | sql-standby | sql-standby-2)
    m=${1#sql-}
    [ "$m" != sql ] || m=primary
    [[ ${2:-x} =~ ^[0-9]+$ ]] && layout "$2" && [ -d "${dir[$m]:-/nonexistent}" ] || die "usage: $0 $1 N [mysql client arguments]; shard '${2:-}' has no such machine"
    find_mysql
    exec "$client" --no-defaults --socket="${dir[$m]}/mysqld.sock" --user=root expenses "${@:3}"
    ;;
  rejoin) lock -n; rejoin "${2:-}" ;;
  start-shard) export START_SHARDS_PID="${START_SHARDS_PID:-} $$"; start_shard "$2" ;; # this script's own: one shard, under its caller's lock
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) start "${1:-3}" ;; # it takes the lock once its checks have passed, so that a refused start creates nothing
esac
