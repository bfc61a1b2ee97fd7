#!/usr/bin/env bash
# start-shards.sh: run N expense shards on this machine. A shard is its own
# MySQL server (MariaDB, or Oracle MySQL 8.0/8.4 on a best-effort basis) with
# its own data directory, and its own server.ts in front of it on loopback.
# The first start makes the cluster's secret (data/cluster-secret) and gives
# the shards their first cluster map.
#
#   ./start-shards.sh [N]     start shards 1..N (default 3) on ports 3000, 4000, 5000, 6001, 7000 ...
#   ./start-shards.sh status  one line per shard
#   ./start-shards.sh stop    stop every shard: its server first, then its MySQL
#   ./start-shards.sh sql N   a MySQL client on shard N, as root (arguments after N go to it)
#
# Environment, so that tests can keep out of data/ and off the usual ports:
#   SHARDS_DIR        where the shard directories live   (default: data/ beside this script)
#   SHARDS_BASE_PORT  shard 1's port                     (default: 3000)
#   SHARDS_PORT_STEP  the gap between shard ports        (default: 1000)
#   MYSQLD            the MySQL server binary            (default: mariadbd or mysqld on PATH)
#   SHARDS_MAP        "none": give no shard a cluster map (default: give one)
set -euo pipefail
umask 077 # data, sockets and password files are the owner's alone

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shards_dir=${SHARDS_DIR:-$root/data}
base_port=${SHARDS_BASE_PORT:-3000}
port_step=${SHARDS_PORT_STEP:-1000}
host=127.0.0.1
node=$root/node_modules/.bin/node
PATH=$PATH:/usr/sbin:/usr/local/sbin # where mysqld lives on Debian and others

die() {
  printf 'start-shards: %s\n' "$*" >&2
  exit 1
}

# --- Where things are -------------------------------------------------------

shard_dir() { printf '%s/shard-%s' "$shards_dir" "$1"; }
# fetch() refuses the ports in api/bad-ports.txt (the Fetch standard's "bad
# ports"): a shard there could never be reached by the client. So shard 4 runs
# on 6001, not X11's 6000.
fetch_blocked=" $(grep -v '^#' "$root/api/bad-ports.txt" | tr -s ' \n' '  ') "

shard_port() {
  local port=$((base_port + port_step * ($1 - 1)))
  case $fetch_blocked in *" $port "*) port=$((port + 1)) ;; esac
  printf '%s' "$port"
}

# The shard numbers that have a directory, in order.
known_shards() {
  local d
  for d in "$shards_dir"/shard-*; do
    [ -d "$d" ] && printf '%s\n' "${d##*-}"
  done | sort -n
}

# True while a process runs. A zombie has ended and only waits to be reaped,
# which some inits do only now and then.
running() { kill -0 "$1" 2>/dev/null && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c 1)" != Z ]; }

# Prints the pid in a pid file if that process is alive and runs what we expect.
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && running "$pid" || return 1
  # After a reboot the pid may belong to something else entirely.
  case $(ps -o args= -p "$pid" 2>/dev/null) in
    *server.ts* | *mysqld* | *mariadbd*) printf '%s' "$pid" ;;
    *) return 1 ;;
  esac
}

# The HTTP status of GET /healthz on a port, or 000 when nothing answers.
health() {
  (
    exec 3<>"/dev/tcp/$host/$1"
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    read -r -t 5 _ code _ <&3
    printf '%s' "$code"
  ) 2>/dev/null || printf '000'
}

# The "error" of GET /healthz on a port: why a server that runs is not healthy.
health_error() {
  (
    exec 3<>"/dev/tcp/$host/$1"
    printf 'GET /healthz HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    cat <&3 | sed -n 's/.*"error":"\(\([^"\\]\|\\.\)*\)".*/\1/p'
  ) 2>/dev/null || true
}

port_in_use() { (: <>"/dev/tcp/$host/$1") 2>/dev/null; }

port_holder() {
  local pid
  pid=$(lsof -nP -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | head -n 1) || true
  [ -n "$pid" ] || pid=$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2) || true
  if [ -n "$pid" ]; then
    printf 'pid %s (%s)' "$pid" "$(ps -o args= -p "$pid" | cut -c 1-60)"
  else
    printf 'another process'
  fi
}

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
      flavour=mariadb
      client=$(command -v mariadb || command -v mysql)
      admin=$(command -v mariadb-admin || command -v mysqladmin)
      install_db=$(command -v mariadb-install-db || command -v mysql_install_db)
      ;;
    *" 8.0."*)
      flavour=mysql
      ;;
    *" 8."[1-4]"."*)
      # 8.4 turned off the only authentication the mysql driver speaks.
      flavour=mysql
      extra_flags=(--mysql-native-password=ON)
      ;;
    *)
      die "unsupported MySQL server: $version
  The Node driver used here (mysqljs/mysql) speaks only mysql_native_password,
  which MySQL 9 removed. Use MariaDB (sudo apt-get install mariadb-server,
  or brew install mariadb), or MySQL 8.0 or 8.4."
      ;;
  esac
  if [ "$flavour" = mysql ]; then
    client=$(command -v mysql)
    admin=$(command -v mysqladmin)
    extra_flags+=(--mysqlx=OFF)
  fi
  # mysqld refuses to run as root unless told to.
  [ "$(id -u)" -ne 0 ] || extra_flags+=(--user=root)
}

# --- One shard's MySQL ------------------------------------------------------

sql() { "$client" --no-defaults --socket="$(shard_dir "$1")/mysqld.sock" --user=root --batch --skip-column-names; }

start_mysql() {
  local d=$(shard_dir "$1") i
  if [ ! -d "$d/mysql" ]; then
    echo "shard $1: initialising $d/mysql"
    mkdir -p "$d/tmp"
    if [ "$flavour" = mariadb ]; then
      "$install_db" --no-defaults --datadir="$d/mysql" --auth-root-authentication-method=normal \
        --skip-test-db "${extra_flags[@]}" >"$d/init.log" 2>&1
    else
      "$mysqld" --no-defaults --initialize-insecure --datadir="$d/mysql" "${extra_flags[@]}" >"$d/init.log" 2>&1
    fi || die "shard $1: initialising MySQL failed; see $d/init.log:
$(tail -n 15 "$d/init.log")"
  fi
  mkdir -p "$d/tmp"
  # --no-defaults first: no my.cnf on this machine may change a shard.
  # --skip-networking: MySQL listens on the socket only, never on TCP.
  "$mysqld" --no-defaults --datadir="$d/mysql" --socket="$d/mysqld.sock" --pid-file="$d/mysqld.pid" \
    --log-error="$d/mysqld.err" --tmpdir="$d/tmp" --skip-networking \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    "${extra_flags[@]}" </dev/null >/dev/null 2>&1 &
  # mysqld writes the same pid there itself, a little later.
  echo $! >"$d/mysqld.pid"
  started+=("mysql:$1")
  # Ready means a real query works: `mysqladmin ping` says yes even to "access denied".
  for i in $(seq 300); do
    sql "$1" <<<'SELECT 1' >/dev/null 2>&1 && return 0
    # running, not alive: a child not yet past exec still shows this script's command line.
    running "$(cat "$d/mysqld.pid")" || die "shard $1: MySQL stopped while starting. The end of $d/mysqld.err:
$(tail -n 15 "$d/mysqld.err" 2>/dev/null)"
    sleep 0.1
  done
  die "shard $1: MySQL did not answer within 30 s; see $d/mysqld.err"
}

# Applies schema.sql and makes sure the app user exists with the password on
# file. Idempotent, so a start that died half-way is mended by the next one.
setup_database() {
  local d=$(shard_dir "$1") password auth=''
  if [ ! -s "$d/password" ]; then
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$d/password"
    chmod 600 "$d/password"
  fi
  password=$(cat "$d/password")
  [ "$flavour" = mariadb ] || auth='WITH mysql_native_password'
  # The app may read and write its rows, and nothing else: no DDL, no other schema.
  sql "$1" <"$root/schema.sql"
  sql "$1" <<SQL
CREATE USER IF NOT EXISTS 'expenses'@'localhost' IDENTIFIED $auth BY '$password';
ALTER USER 'expenses'@'localhost' IDENTIFIED $auth BY '$password';
GRANT SELECT, INSERT, UPDATE, DELETE ON expenses.* TO 'expenses'@'localhost';
SQL
}

# --- The cluster: its secret, and its first map -----------------------------

secret_file() { printf '%s/cluster-secret' "$shards_dir"; }

# 256 random bits, readable by this user alone (umask 077). Servers get the
# file's path, never the secret itself, which ps would show.
make_secret() {
  [ -s "$(secret_file)" ] && return 0
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$(secret_file)"
  chmod 600 "$(secret_file)"
}

# Gives each shard of "$@" that has no cluster map one, straight into its
# database, before its server starts (api/cluster-map.ts says what a map is).
# The first start gives the shards it starts the first map: these nodes,
# replicas 1. A shard started next to a cluster gets a copy of the cluster's
# newest map, which does not name it: it refuses every id until a reshard
# makes it a member.
give_maps() {
  local i map='' newest=0 row epoch nodes=()
  [ "${SHARDS_MAP:-}" != none ] || return 0
  for i in $(known_shards); do
    row=$(sql "$i" <<<'SELECT epoch, map FROM expenses.cluster_map' 2>/dev/null) || continue
    epoch=${row%%$'\t'*}
    if [ -n "$row" ] && [ "$epoch" -gt "$newest" ]; then newest=$epoch map=${row#*$'\t'}; fi
  done
  if [ -z "$map" ]; then
    for i in "$@"; do
      nodes+=("{\"name\":\"$host:$(shard_port "$i")\",\"shard\":\"$(sql "$i" <<<'SELECT id FROM expenses.shard')\"}")
    done
    newest=1
    map="{\"epoch\":1,\"nodes\":[$(IFS=,; printf '%s' "${nodes[*]}")],\"replicas\":1}"
  fi
  for i in "$@"; do
    # A map this run wrote goes again if the run fails: it would name ports that never served.
    [ "$(sql "$i" <<<"INSERT INTO expenses.cluster_map (epoch, map) SELECT $newest, '${map//\'/\'\'}' FROM DUAL
      WHERE NOT EXISTS (SELECT 1 FROM expenses.cluster_map); SELECT ROW_COUNT();")" != 1 ] || started+=("map:$i")
  done
}

stop_mysql() {
  local d=$(shard_dir "$1") pid i
  pid=$(alive "$d/mysqld.pid") || return 0
  # A clean shutdown flushes InnoDB; a kill would leave crash recovery to the next start.
  "$admin" --no-defaults --socket="$d/mysqld.sock" --user=root shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  for i in $(seq 300); do
    running "$pid" || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# --- One shard's server -----------------------------------------------------

# A smaller young generation: under load it kept a server's private memory at
# 58 MB instead of 87 MB, at the same throughput (bench/e2e.ts). The compile
# cache keeps the type-stripped, compiled modules for the next start.
start_server() {
  local d=$(shard_dir "$1") port=$(shard_port "$1")
  printf '%s\n' "$port" >"$d/port"
  (
    cd "$root"
    HOST=$host PORT=$port MYSQL_SOCKET=$d/mysqld.sock MYSQL_USER=expenses \
      MYSQL_PASSWORD_FILE=$d/password MYSQL_DATABASE=expenses CLUSTER_SECRET_FILE=$(secret_file) \
      NODE_COMPILE_CACHE=$shards_dir/.compile-cache \
      nohup "$node" --max-semi-space-size=4 server.ts </dev/null >>"$d/server.log" 2>&1 &
    echo $! >"$d/server.pid"
  )
  started+=("server:$1")
}

wait_healthy() {
  local d=$(shard_dir "$1") port=$(shard_port "$1") i why
  for i in $(seq 100); do
    case $(health "$port") in
      200) return 0 ;;
      # Up, with a stored map it cannot read: it says so on every request, and the operator's tool repairs it.
      503) why=$(health_error "$port")
        if [[ $why == *'its stored cluster map'* ]]; then
          echo "shard $1: up, but $why" >&2
          return 0
        fi ;;
    esac
    # running, not alive: a child not yet past exec still shows this script's command line.
    running "$(cat "$d/server.pid")" || die "shard $1: the server stopped while starting. The end of $d/server.log:
$(tail -n 15 "$d/server.log")"
    sleep 0.1
  done
  die "shard $1: the server on port $port did not report healthy within 10 s; see $d/server.log"
}

stop_server() {
  local d=$(shard_dir "$1") pid i
  pid=$(alive "$d/server.pid") || return 0
  # SIGTERM lets requests in flight finish.
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    running "$pid" || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# --- Commands ---------------------------------------------------------------

# What this run started, so that a failure can take it all down again.
started=()
roll_back() {
  local i
  [ ${#started[@]} -gt 0 ] || return 0
  echo "start-shards: stopping what this run started" >&2
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    case ${started[i]} in
      server:*) stop_server "${started[i]#server:}" ;;
      map:*) sql "${started[i]#map:}" <<<'DELETE FROM expenses.cluster_map' || true ;;
      mysql:*) stop_mysql "${started[i]#mysql:}" ;;
    esac
  done
}

start() {
  local n=$1 i d port todo=()
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "the number of shards must be 1 to 99, got '$n'"
  find_mysql
  # Check everything that can be checked before starting anything.
  for i in $(seq "$n"); do
    d=$(shard_dir "$i")
    port=$(shard_port "$i")
    [ "$port" -le 65535 ] || die "shard $i would need port $port; lower SHARDS_BASE_PORT or SHARDS_PORT_STEP"
    [ ${#d} -le 95 ] || die "the socket path $d/mysqld.sock is over the 107-byte limit of a Unix socket path.
  Set SHARDS_DIR to a shorter directory."
    if alive "$d/server.pid" >/dev/null && [ "$(health "$port")" = 200 ]; then continue; fi
    if ! alive "$d/server.pid" >/dev/null && port_in_use "$port"; then
      die "port $port (shard $i) is already in use by $(port_holder "$port").
  Stop that process, or choose other ports with SHARDS_BASE_PORT."
    fi
    todo+=("$i")
  done
  if [ ${#todo[@]} -eq 0 ]; then
    echo "all $n shards are already up; nothing to do"
    return 0
  fi
  if [ ! -x "$node" ]; then
    echo "installing dependencies (npm ci)"
    (cd "$root" && npm ci --no-audit --no-fund) >&2
  fi
  trap roll_back EXIT
  mkdir -p "$shards_dir"
  make_secret
  local unserved=()
  for i in "${todo[@]}"; do
    d=$(shard_dir "$i")
    mkdir -p "$d"
    chmod 700 "$d"
    alive "$d/mysqld.pid" >/dev/null || start_mysql "$i"
    setup_database "$i"
    alive "$d/server.pid" >/dev/null || unserved+=("$i")
  done
  # A server reads its map when it starts, so the maps go in first.
  [ ${#unserved[@]} -eq 0 ] || give_maps "${unserved[@]}"
  for i in "${todo[@]}"; do
    # A server whose MySQL was down heals by itself once MySQL is back.
    alive "$(shard_dir "$i")/server.pid" >/dev/null || start_server "$i"
    wait_healthy "$i"
    echo "shard $i: http://$host:$(shard_port "$i") up (data in $(shard_dir "$i"))"
  done
  trap - EXIT
}

status() {
  local i d port server mysql state any=0
  for i in $(known_shards); do
    any=1
    d=$(shard_dir "$i")
    port=$(cat "$d/port" 2>/dev/null || shard_port "$i")
    server=$(alive "$d/server.pid") || server=-
    mysql=$(alive "$d/mysqld.pid") || mysql=-
    case $(health "$port") in
      200) state=up ;;
      503) state=degraded ;; # the server runs, but its MySQL does not answer
      *) state=down ;;
    esac
    printf 'shard %s  http://%s:%s  %-8s  server pid %-7s  mysql pid %-7s  %s\n' "$i" "$host" "$port" "$state" "$server" "$mysql" "$d"
  done
  [ "$any" = 1 ] || echo "no shards in $shards_dir"
}

stop() {
  local i
  find_mysql
  for i in $(known_shards); do
    stop_server "$i"
    stop_mysql "$i"
    echo "shard $i: stopped"
  done
}

case ${1:-3} in
  stop) stop ;;
  status) status ;;
  sql)
    [ -d "$(shard_dir "${2:-}")" ] || die "usage: $0 sql N [mysql client arguments]; shard '${2:-}' does not exist"
    find_mysql
    exec "$client" --no-defaults --socket="$(shard_dir "$2")/mysqld.sock" --user=root expenses "${@:3}"
    ;;
  -h | --help | help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) start "${1:-3}" ;;
esac
