#!/usr/bin/env bash
# start-shards.sh: run N expense shards on this machine. A shard is its own
# MySQL server (MariaDB, or Oracle MySQL 8.0/8.4 on a best-effort basis) with
# its own data directory, and its own server.ts in front of it on loopback.
# The first start makes the cluster's secret (data/cluster-secret). It gives
# no shard a cluster map: the operator's reshard makes the first one
# (node ch_client.ts reshard --to A,B,C; docs/resharding.md).
#
#   ./start-shards.sh [N]     start shards 1..N (default 3) on ports 3000, 4000, 5000, 6001, 7000 ...
#   ./start-shards.sh status  one line per shard (with standbys, a line per machine too)
#   ./start-shards.sh stop [N]  stop every shard, or shard N: its servers first, then its MySQLs
#   ./start-shards.sh sql N   a MySQL client on shard N, as root (arguments after N go to it)
#   ./start-shards.sh sql-standby N   the same on shard N's standby machine (its standby/ directory)
#   ./start-shards.sh sql-standby-2 N the same on its second standby machine (standby-2/)
#   ./start-shards.sh rejoin N        after a failover (ch_client.ts failover): make every
#                             machine of shard N that does not follow the primary its standby
#                             again (rebuilt if its data is gone or diverged). A plain start
#                             does the same for every shard.
#
# The cluster's mode is chosen by its first start and kept in $SHARDS_DIR/mode:
# SHARDS_STANDBY=1 then gives each shard a standby, SHARDS_STANDBY=2 two
# (docs/reliability.md), and every later start and rejoin keeps it. Which
# machine of a shard is the primary is in shard-N/primary, which a failover's
# promotion writes (rule S6 in mysql/replication.ts, whose statements and rules
# the machines run, through mysql/pair.ts, which decides what each needs).
# Starts, stops and rejoins take $SHARDS_DIR/lock: one at a time.
#
# Environment, so that tests can keep out of data/ and off the usual ports:
#   SHARDS_DIR        where the shard directories live   (default: data/ beside this script)
#   SHARDS_BASE_PORT  shard 1's port                     (default: 3000)
#   SHARDS_PORT_STEP  the gap between shard ports        (default: 1000)
#   MYSQLD            the MySQL server binary            (default: mariadbd or mysqld on PATH)
#   SHARDS_STANDBY    1 or 2, at the first start: standbys per shard (MariaDB only)
#   SHARDS_SEMISYNC_TIMEOUT_MS  how long a primary waits for its standby's ack before
#                     MariaDB falls back to asynchronous replication (default: about 49 days; S3)
set -euo pipefail
umask 077 # data, sockets and password files are the owner's alone

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shards_dir=${SHARDS_DIR:-$root/data}
base_port=${SHARDS_BASE_PORT:-3000}
port_step=${SHARDS_PORT_STEP:-1000}
host=127.0.0.1
node=$root/node_modules/.bin/node
PATH=$PATH:/usr/sbin:/usr/local/sbin # where mysqld lives on Debian and others

die() { printf 'start-shards: %s\n' "$*" >&2; exit 1; }

# --- Where things are -------------------------------------------------------

shard_dir() { printf '%s/shard-%s' "$shards_dir" "$1"; }
# A shard's machines are named for where they were born: "primary" (the shard's
# own directory), "standby" and "standby-2" (subdirectories). S6 says which is
# the primary now.
machine_dir() { if [ "${2:-primary}" = primary ]; then shard_dir "$1"; else printf '%s/%s' "$(shard_dir "$1")" "$2"; fi; }
primary_of() { cat "$(shard_dir "$1")/primary" 2>/dev/null || printf 'primary'; }
label() { if [ "${2:-primary}" = primary ]; then printf 'shard %s' "$1"; else printf "shard %s's %s machine" "$1" "$2"; fi; }
# The cluster's mode, its standbys per shard: 0 ("single" in the mode file), 1
# ("standby") or 2 ("two-standbys"), as its first start chose; a SHARDS_STANDBY
# above it adds standbys.
recorded_mode() { case $(cat "$shards_dir/mode" 2>/dev/null) in standby) echo 1 ;; two-standbys) echo 2 ;; *) echo 0 ;; esac; }
mode() { local r=$(recorded_mode); echo $((${SHARDS_STANDBY:-0} > r ? ${SHARDS_STANDBY:-0} : r)); }
machines() { echo primary standby standby-2 | cut -d ' ' -f "1-$(($(mode) + 1))"; }
others() { local m; for m in $(machines); do [ "$m" = "$(primary_of "$1")" ] || printf '%s ' "$m"; done; }

# fetch() refuses the ports in api/bad-ports.txt (the Fetch standard's "bad
# ports"): a shard there could never be reached by the client. So shard 4 runs
# on 6001, not X11's 6000.
fetch_blocked=" $(grep -v '^#' "$root/api/bad-ports.txt" | tr -s ' \n' '  ') "
unblocked() { case $fetch_blocked in *" $1 "*) printf '%s' $(($1 + 1)) ;; *) printf '%s' "$1" ;; esac; }
# Rule S2: a shard's ports are its HTTP port plus 0 (the primary machine's
# server), 100 (the standby machine's server), 200 and 300 (their MySQLs), and
# with two standbys 400 and 500 (the standby-2 machine's server and MySQL).
nth() { case ${1:-primary} in primary) echo 1 ;; standby) echo 2 ;; *) echo 3 ;; esac; }
offset() { local k=$(nth "$2"); echo $((k < 3 ? 100 * (k - 1) + $3 : 400 + $3 / 2)); }
shard_port() { unblocked $((base_port + port_step * ($1 - 1) + $(offset "$1" "${2:-primary}" 0))); }
mysql_port() { unblocked $((base_port + port_step * ($1 - 1) + $(offset "$1" "${2:-primary}" 200))); }

known_shards() { local d; for d in "$shards_dir"/shard-*; do [ -d "$d" ] && printf '%s\n' "${d##*-}"; done | sort -n; }

# True while a process runs. A zombie has ended and only waits to be reaped.
running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c 1)" != Z ]; }

# Prints the pid in a pid file if that process is alive and runs what we expect
# (after a reboot the pid may belong to something else entirely).
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && running "$pid" || return 1
  case $(ps -o args= -p "$pid" 2>/dev/null) in *server.ts* | *mysqld* | *mariadbd*) printf '%s' "$pid" ;; *) return 1 ;; esac
}

# A mode this script does not know is refused before anything is done, not
# taken as none (SHARDS_STANDBY=2 once started three shards with no standby, silently).
case ${SHARDS_STANDBY:-0} in
  0 | 1 | 2) ;;
  *) die "SHARDS_STANDBY=$SHARDS_STANDBY is not a mode this script knows: 0 (no standby, the default), 1 (one standby per shard) or 2 (two standbys per shard). Nothing was done; run it again with SHARDS_STANDBY=0, 1 or 2" ;;
esac

# GET /healthz on a port: its HTTP status (000: no answer), or with "error", the reason it gives.
health() {
  (
    exec 3<>"/dev/tcp/$host/$1"
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    if [ "${2:-}" = error ]; then sed -n 's/.*"error":"\(\([^"\\]\|\\.\)*\)".*/\1/p' <&3; else read -r -t 5 _ code _ <&3 && printf '%s' "$code"; fi
  ) 2>/dev/null || { [ "${2:-}" = error ] || printf '000'; }
}

port_in_use() { (: <>"/dev/tcp/$host/$1") 2>/dev/null; }
port_holder() {
  local pid
  pid=$(lsof -nP -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | head -n 1) || true
  [ -n "$pid" ] || pid=$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2) || true
  if [ -n "$pid" ]; then printf 'pid %s (%s)' "$pid" "$(ps -o args= -p "$pid" | cut -c 1-60)"; else printf 'another process'; fi
}
need_free() { ! port_in_use "$1" || die "port $1 ($2) is already in use by $(port_holder "$1").
  Stop that process, or choose other ports with SHARDS_BASE_PORT."; }

# --- Which MySQL ------------------------------------------------------------

find_mysql() {
  mysqld=${MYSQLD:-$(command -v mariadbd || command -v mysqld || true)}
  [ -n "$mysqld" ] && [ -x "$mysqld" ] || die "no MySQL server found (looked for ${MYSQLD:-mariadbd and mysqld on PATH}).
  Install MariaDB, then run this again:
    Debian/Ubuntu: sudo apt-get install mariadb-server
    macOS:         brew install mariadb"
  local version
  version=$("$mysqld" --no-defaults --version)
  extra_flags=()
  case $version in
    *MariaDB*)
      flavour=mariadb client=$(command -v mariadb || command -v mysql) admin=$(command -v mariadb-admin || command -v mysqladmin)
      install_db=$(command -v mariadb-install-db || command -v mysql_install_db) dump=$(command -v mariadb-dump || command -v mysqldump) ;;
    *" 8.0."*) flavour=mysql ;;
    *" 8."[1-4]"."*) flavour=mysql extra_flags=(--mysql-native-password=ON) ;; # 8.4 turned off the only authentication the driver speaks
    *) die "unsupported MySQL server: $version
  The Node driver used here (mysqljs/mysql) speaks only mysql_native_password,
  which MySQL 9 removed. Use MariaDB (sudo apt-get install mariadb-server,
  or brew install mariadb), or MySQL 8.0 or 8.4." ;;
  esac
  if [ "$flavour" = mysql ]; then client=$(command -v mysql) admin=$(command -v mysqladmin) extra_flags+=(--mysqlx=OFF); fi
  [ "$(id -u)" -ne 0 ] || extra_flags+=(--user=root) # mysqld refuses to run as root unless told to
  [ "$(mode)" = 0 ] || [ "$flavour" = mariadb ] || die "standbys need MariaDB (its GTIDs and semi-synchronous replication); this is $version"
}

# --- One machine's MySQL and server -----------------------------------------

sql() { "$client" --no-defaults --socket="$(machine_dir "$1" "${2:-primary}")/mysqld.sock" --user=root --batch --skip-column-names; }

# The machines' steps (mysql/pair.ts), on shard $2: its layout and the machines' pids in the environment.
pair() {
  local i=$2 m pids=() mysqls=() https=()
  for m in $(machines); do
    pids+=("$(alive "$(machine_dir "$i" $m)/server.pid" || printf -)" "$(alive "$(machine_dir "$i" $m)/mysqld.pid" || printf -)")
    mysqls+=("$(mysql_port "$i" $m)") https+=("$(shard_port "$i" $m)")
  done
  PAIR_SHARD=$i PAIR_DIR=$(shard_dir "$i") PAIR_MACHINES="$(machines)" PAIR_MYSQL="${mysqls[*]}" PAIR_HTTP="${https[*]}" PAIR_PIDS="${pids[*]}" \
    PAIR_CLIENT=${client:-} PAIR_DUMP=${dump:-} PAIR_FLAVOUR=${flavour:-} "$node" "$root/mysql/pair.ts" "$1" "${@:3}" 9>&-
}

start_mysql() {
  local m=${2:-primary} d=$(machine_dir "$1" "${2:-primary}") i network=(--skip-networking)
  alive "$d/mysqld.pid" >/dev/null && return 0
  mkdir -p "$d/tmp"
  if [ ! -d "$d/mysql" ]; then
    echo "$(label "$1" "$m"): initialising $d/mysql"
    # Its own --tmpdir: a MariaDB that starts removes every #sql file in its tmpdir, and so, in a shared /tmp, those of a bootstrap beside it.
    # A failed init leaves no half-made data directory behind, so that the same command run again starts afresh.
    if [ "$flavour" = mariadb ]; then
      "$install_db" --no-defaults --datadir="$d/mysql" --tmpdir="$d/tmp" --auth-root-authentication-method=normal --skip-test-db "${extra_flags[@]}" >"$d/init.log" 2>&1
    else
      "$mysqld" --no-defaults --initialize-insecure --datadir="$d/mysql" --tmpdir="$d/tmp" "${extra_flags[@]}" >"$d/init.log" 2>&1
    fi || { rm -rf "$d/mysql"; false; } || die "$(label "$1" "$m"): initialising MySQL failed; see $d/init.log:
$(tail -n 15 "$d/init.log")"
  fi
  # A pair replicates over TCP on loopback (S2); a single shard's MySQL listens on its socket only.
  [ "$(mode)" = 0 ] || mapfile -t network < <(pair flags "$1" "$d" "$(mysql_port "$1" "$m")" "$(($1 * 10 + $(nth "$m")))")
  # --no-defaults first: no my.cnf on this machine may change a shard.
  "$mysqld" --no-defaults --datadir="$d/mysql" --socket="$d/mysqld.sock" --pid-file="$d/mysqld.pid" \
    --log-error="$d/mysqld.err" --tmpdir="$d/tmp" "${network[@]}" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci "${extra_flags[@]}" </dev/null >/dev/null 2>&1 9>&- &
  echo $! >"$d/mysqld.pid" # mysqld writes the same pid there itself, a little later
  started+=("mysql:$1:$m")
  # Ready means a real query works: `mysqladmin ping` says yes even to "access denied".
  for i in $(seq 300); do
    sql "$1" "$m" <<<'SELECT 1' >/dev/null 2>&1 && return 0
    running "$(cat "$d/mysqld.pid")" || die "$(label "$1" "$m"): MySQL stopped while starting. The end of $d/mysqld.err:
$(tail -n 15 "$d/mysqld.err" 2>/dev/null)"
    sleep 0.1
  done
  die "$(label "$1" "$m"): MySQL did not answer within 30 s; see $d/mysqld.err"
}

# Waits up to $2 tenths of a second for process $1 to end, then kills it.
reap() { local i; for i in $(seq "$2"); do running "$1" || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }

stop_mysql() {
  local d=$(machine_dir "$1" "${2:-primary}") pid
  pid=$(alive "$d/mysqld.pid") || return 0
  # A clean shutdown flushes InnoDB; a kill would leave crash recovery to the next start.
  "$admin" --no-defaults --socket="$d/mysqld.sock" --user=root shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  reap "$pid" 300
}

# A smaller young generation kept a server's private memory at 58 MB instead
# of 87 MB under load (bench/e2e.ts); the compile cache keeps compiled modules.
start_server() {
  local m=${2:-primary} d=$(machine_dir "$1" "${2:-primary}") port=$(shard_port "$1" "${2:-primary}") pair_env=()
  alive "$d/server.pid" >/dev/null && return 0
  printf '%s\n' "$port" >"$d/port"
  # A standby's server, or its primary's: the failover's routes as MySQL user operator (S7), the
  # other machines' servers (CLUSTER_PEER, which check and the failover ask), and where a promotion records it (S6).
  local o peers=()
  for o in $(machines); do [ "$o" = "$m" ] || peers+=("$host:$(shard_port "$1" "$o")"); done
  [ "$(mode)" = 0 ] || pair_env=(MYSQL_OPERATOR_PASSWORD_FILE="$d/operator-password" MYSQL_REPL_PASSWORD_FILE="$d/repl-password"
    CLUSTER_PEER="$(IFS=,; echo "${peers[*]}")" PAIR_PRIMARY_FILE="$(shard_dir "$1")/primary" PAIR_MACHINE="$m")
  (
    cd "$root"
    env -u START_SHARDS_PID "${pair_env[@]}" HOST=$host PORT="$port" MYSQL_SOCKET="$d/mysqld.sock" MYSQL_USER=expenses MYSQL_PASSWORD_FILE="$d/password" \
      MYSQL_DATABASE=expenses CLUSTER_SECRET_FILE="$shards_dir/cluster-secret" NODE_COMPILE_CACHE="$shards_dir/.compile-cache" \
      nohup "$node" --max-semi-space-size=4 server.ts </dev/null >>"$d/server.log" 2>&1 9>&- &
    echo $! >"$d/server.pid"
  )
  started+=("server:$1:$m")
  local i why
  for i in $(seq 100); do
    case $(health "$port") in
      200) return 0 ;;
      # Up, with a stored map it cannot read: it says so on every request, and the operator's tool repairs it.
      503) why=$(health "$port" error)
        if [[ $why == *'its stored cluster map'* ]]; then echo "shard $1: up, but $why" >&2; return 0; fi ;;
    esac
    running "$(cat "$d/server.pid")" || die "$(label "$1" "$m"): the server stopped while starting. The end of $d/server.log:
$(tail -n 15 "$d/server.log")"
    sleep 0.1
  done
  die "$(label "$1" "$m"): the server on port $port did not report healthy within 10 s; see $d/server.log"
}

stop_server() {
  local pid
  pid=$(alive "$(machine_dir "$1" "${2:-primary}")/server.pid") || return 0
  kill "$pid" 2>/dev/null || return 0 # SIGTERM lets requests in flight finish
  reap "$pid" 150
}

# --- One shard --------------------------------------------------------------

# What this run started, so that a failure takes it down again.
started=()
roll_back() {
  local i what n m
  [ ${#started[@]} -gt 0 ] || return 0
  echo "start-shards: stopping what this run started" >&2
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    IFS=: read -r what n m <<<"${started[i]}"
    case $what in server) stop_server "$n" "$m" ;; mysql) stop_mysql "$n" "$m" ;; esac
  done
}

# Starts what of shard $1 is down: its MySQLs, then mysql/pair.ts's start
# (the primary S6 names, its schema, the others following it), then its
# servers, the primary's first.
start_shard() {
  local i=$1 m pm fresh=0
  find_mysql
  mkdir -p "$(shard_dir "$i")"
  trap roll_back EXIT
  pm=$(primary_of "$i")
  alive "$(machine_dir "$i" "$pm")/mysqld.pid" >/dev/null || fresh=1
  for m in $pm $(others "$i"); do start_mysql "$i" "$m"; done
  PAIR_FRESH=$fresh pair start "$i" || {
    # Exit 2: refused, nothing written. The way out is a failover to a standby machine, whose server it needs.
    [ $? = 2 ] || exit 1
    for m in $(others "$i"); do start_server "$i" "$m"; done
    trap - EXIT
    exit 1
  }
  for m in $pm $(others "$i"); do start_server "$i" "$m"; done
  trap - EXIT
  echo "shard $i: http://$host:$(shard_port "$i" "$pm") up$([ "$(mode)" = 0 ] || echo ', the primary') (data in $(machine_dir "$i" "$pm"))"
  for m in $(others "$i"); do
    echo "shard $i's standby: http://$host:$(shard_port "$i" "$m") up, read-only, following mysql $host:$(mysql_port "$i" "$pm") (data in $(machine_dir "$i" "$m"))"
  done
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
  local n=$1 i d todo=() failed=()
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "the number of shards must be 1 to 99, got '$n'"
  [ "${SHARDS_STANDBY:-$(mode)}" -ge "$(recorded_mode)" ] || die "this cluster runs with standbys ($shards_dir/mode says so): start it without SHARDS_STANDBY=$SHARDS_STANDBY, or its standbys would fall behind"
  find_mysql
  # Check everything that can be checked before starting anything.
  for i in $(seq "$n"); do
    [ "$(shard_port "$i")" -le 65535 ] || die "shard $i would need port $(shard_port "$i"); lower SHARDS_BASE_PORT or SHARDS_PORT_STEP"
    d=$(machine_dir "$i" "$(machines | tr ' ' '\n' | tail -n 1)")/mysqld.sock
    [ ${#d} -le 107 ] || die "the socket path $d is over the 107-byte limit of a Unix socket path.
  Set SHARDS_DIR to a shorter directory."
    local m up=1
    for m in $(machines); do
      # Up: its MySQL runs, and its server answers (the primary's, healthy).
      alive "$(machine_dir "$i" $m)/server.pid" >/dev/null && alive "$(machine_dir "$i" $m)/mysqld.pid" >/dev/null &&
        case $(health "$(shard_port "$i" $m)") in 200) true ;; 000) false ;; *) [ "$m" != "$(primary_of "$i")" ] ;; esac && continue
      up=0
      alive "$(machine_dir "$i" $m)/server.pid" >/dev/null || need_free "$(shard_port "$i" $m)" "$(label "$i" $m)"
      [ "$(mode)" = 0 ] || alive "$(machine_dir "$i" $m)/mysqld.pid" >/dev/null || need_free "$(mysql_port "$i" $m)" "$(label "$i" $m)'s MySQL"
    done
    [ "$up" = 1 ] || todo+=("$i")
  done
  # S2: no two of the machines' ports may meet.
  d=$(for i in $(seq "$n"); do for m in $(machines); do shard_port "$i" $m; echo; [ "$(mode)" = 0 ] || mysql_port "$i" $m; echo; done; done | grep . | sort -n | uniq -d | head -n 1)
  [ -z "$d" ] || die "with standbys, SHARDS_PORT_STEP=$port_step makes two machines share port $d; use a step of 1 (up to 99 shards) or of $((200 * $(mode) + 200)) or more"
  lock -n
  if [ "$(recorded_mode)" != "$(mode)" ] && [ -s "$shards_dir/mode" ]; then
    # More standbys: MySQLs start again with a binlog (S5), and servers with every machine in CLUSTER_PEER.
    for i in $(known_shards); do ! alive "$(machine_dir "$i" "$(primary_of "$i")")/mysqld.pid" >/dev/null || die "shard $i runs with $(recorded_mode) standby(s) a shard: stop the shards (./start-shards.sh stop), then start them with SHARDS_STANDBY=$SHARDS_STANDBY"; done
  fi
  [ ${#todo[@]} -gt 0 ] || { echo "all $n shards are already up; nothing to do"; return 0; }
  [ -x "$node" ] || { echo "installing dependencies (npm ci)"; (cd "$root" && npm ci --no-audit --no-fund) >&2; }
  echo single standby two-standbys | cut -d ' ' -f "$(($(mode) + 1))" >"$shards_dir/mode"
  # 256 random bits, readable by this user alone. Servers get the file's path, never the secret.
  [ -s "$shards_dir/cluster-secret" ] || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$shards_dir/cluster-secret"
  # Each shard in a process of its own: one that fails takes down what it started, and no other shard.
  for i in "${todo[@]}"; do "$BASH" "$0" start-shard "$i" || failed+=("$i"); done
  [ ${#failed[@]} -eq 0 ] || die "shard(s) ${failed[*]} did not start (see above); the others are up"
}

status() {
  local i any=0
  for i in $(known_shards); do any=1; pair status "$i"; done
  [ "$any" = 1 ] || echo "no shards in $shards_dir"
}

stop() {
  local i m
  find_mysql
  for i in ${1:-$(known_shards)}; do
    [ -d "$(shard_dir "$i")" ] || die "usage: $0 stop [N]; shard '$i' does not exist"
    # The servers first, so that no write is in flight; then the primary's
    # MySQL, whose shutdown sends the standbys all it has; then theirs.
    for m in $(others "$i") "$(primary_of "$i")"; do stop_server "$i" "$m"; done
    for m in "$(primary_of "$i")" $(others "$i"); do stop_mysql "$i" "$m"; done
    echo "shard $i: stopped"
  done
}

# After a failover: the servers of the machines that are not the primary go
# (an old primary's served as the primary), and the shard starts again, which
# makes each of those machines a standby.
rejoin() {
  [ -d "$(machine_dir "${1:-x}" standby)" ] && [ "$(mode)" != 0 ] || die "usage: $0 rejoin N, for a shard with a standby; shard '${1:-}' has none"
  find_mysql
  local m
  for m in $(others "$1"); do stop_server "$1" "$m"; done
  "$BASH" "$0" start-shard "$1" || die "shard $1 did not rejoin (see above); fix that, then run ./start-shards.sh rejoin $1 again"
  echo "shard $1 has its standby$([ "$(mode)" = 1 ] || echo s) again"
}

case ${1:-3} in
  stop) lock '-w 120'; stop "${2:-}" ;;
  status) status ;;
  sql | sql-standby | sql-standby-2)
    m=${1#sql-}
    [ "$m" != sql ] || m=primary
    [ -d "$(machine_dir "${2:-x}" "$m")" ] || die "usage: $0 $1 N [mysql client arguments]; shard '${2:-}' has no such machine"
    find_mysql
    exec "$client" --no-defaults --socket="$(machine_dir "$2" "$m")/mysqld.sock" --user=root expenses "${@:3}"
    ;;
  rejoin) lock -n; rejoin "${2:-}" ;;
  start-shard) export START_SHARDS_PID="${START_SHARDS_PID:-} $$"; start_shard "$2" ;; # this script's own: one shard, under its caller's lock
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) start "${1:-3}" ;; # it takes the lock once its checks have passed, so that a refused start creates nothing
esac
