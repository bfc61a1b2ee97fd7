#!/usr/bin/env bash
# start-shards.sh: run N expense shards on this machine. A shard is its own
# MySQL server (MariaDB, or Oracle MySQL 8.0/8.4 on a best-effort basis) with
# its own data directory, and its own server.ts in front of it on loopback.
# The first start makes the cluster's secret (data/cluster-secret). The shards
# hold no cluster map, as in the assignment, until `ch_client.ts reshard --to`
# gives them one (README, level 2).
#
#   ./start-shards.sh [N]     start shards 1..N (default 3) on ports 3000, 4000, 5000, 6001, 7000 ...
#   ./start-shards.sh status  one line per shard
#   ./start-shards.sh stop    stop every shard: its server first, then its MySQL
#   ./start-shards.sh sql N   a MySQL client on shard N, as root (arguments after N go to it)
#   ./start-shards.sh sql-standby N   the same on shard N's standby
#   ./start-shards.sh rejoin N        after a failover (ch_client.ts failover): make
#                             the old primary shard N's standby, rebuilt from the
#                             new primary if its data is gone; record the roles
#
# Environment, so that tests can keep out of data/ and off the usual ports:
#   SHARDS_DIR        where the shard directories live   (default: data/ beside this script)
#   SHARDS_BASE_PORT  shard 1's port                     (default: 3000)
#   SHARDS_PORT_STEP  the gap between shard ports        (default: 1000)
#   MYSQLD            the MySQL server binary            (default: mariadbd or mysqld on PATH)
#   SHARDS_MAP        "first": give shards with no map a first one (the started nodes,
#                     replicas 1); "none": not even a copy of the cluster's (default:
#                     a shard started next to shards with a map gets a copy of theirs)
#   SHARDS_STANDBY    1: give each shard a standby (see "Standbys" below; docs/reliability.md)
#   SHARDS_SEMISYNC_TIMEOUT_MS  how long a primary waits for its standby's ack
#                     before MariaDB falls back to asynchronous replication
#                     (default: 4294967295, about 49 days: never, in practice)
set -euo pipefail
umask 077 # data, sockets and password files are the owner's alone

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shards_dir=${SHARDS_DIR:-$root/data}
base_port=${SHARDS_BASE_PORT:-3000}
port_step=${SHARDS_PORT_STEP:-1000}
host=127.0.0.1
standby_mode=${SHARDS_STANDBY:-0}
semisync_timeout=${SHARDS_SEMISYNC_TIMEOUT_MS:-4294967295}
node=$root/node_modules/.bin/node
PATH=$PATH:/usr/sbin:/usr/local/sbin # where mysqld lives on Debian and others

die() {
  printf 'start-shards: %s\n' "$*" >&2
  exit 1
}
# A mode this script does not know would start shards without the standbys
# asked for (SHARDS_STANDBY=2 once started three shards with none, silently).
case $standby_mode in
  0 | 1) ;;
  *) die "SHARDS_STANDBY=$standby_mode is not a mode this script knows: 0 (no standby, the default) or 1 (one standby per shard). Nothing was done; run it again with SHARDS_STANDBY=0 or 1" ;;
esac

# --- Where things are -------------------------------------------------------

shard_dir() { printf '%s/shard-%s' "$shards_dir" "$1"; }
# A shard's machines: "primary", whose directory is the shard's own (as
# without standbys), and "standby", in the shard's standby/ subdirectory. The
# name is where the machine was born; which one is the primary now is in
# shard-N/primary (rule S6), which `rejoin` writes after a failover.
machine_dir() {
  if [ "${2:-primary}" = standby ]; then printf '%s/standby' "$(shard_dir "$1")"; else shard_dir "$1"; fi
}
# Rule S6: the machine that is shard $1's primary now, and the other one.
primary_of() { cat "$(shard_dir "$1")/primary" 2>/dev/null || printf 'primary'; }
other() { if [ "$1" = standby ]; then printf 'primary'; else printf 'standby'; fi; }
standby_of() { other "$(primary_of "$1")"; }
# "shard 2" or "shard 2's standby", for messages.
label() { if [ "${2:-primary}" = standby ]; then printf "shard %s's standby" "$1"; else printf 'shard %s' "$1"; fi; }
# fetch() refuses the ports in api/bad-ports.txt (the Fetch standard's "bad
# ports"): a shard there could never be reached by the client. So shard 4 runs
# on 6001, not X11's 6000.
fetch_blocked=" $(grep -v '^#' "$root/api/bad-ports.txt" | tr -s ' \n' '  ') "

unblocked() {
  local port=$1
  case $fetch_blocked in *" $port "*) port=$((port + 1)) ;; esac
  printf '%s' "$port"
}

# Ports, with standbys (rule S2 below): a shard's four ports are its HTTP port
# plus 0 (the primary's server, as without standbys), 100 (the standby's
# server), 200 (the primary's MySQL) and 300 (the standby's MySQL). With the
# default step of 1000 they stay inside the shard's own thousand (3000, 3100,
# 3200, 3300); with step 1, as the tests run, shards 1..99 take base..base+99
# and the standbys' ports come after them. Any other step that would make two
# ports meet is refused by `start` (check_ports).
shard_port() {
  local offset=0
  [ "${2:-primary}" = standby ] && offset=100
  unblocked $((base_port + port_step * ($1 - 1) + offset))
}
mysql_port() {
  local offset=200
  [ "${2:-primary}" = standby ] && offset=300
  unblocked $((base_port + port_step * ($1 - 1) + offset))
}
# Unique in a shard's pair, and across the cluster: 11 and 12 for shard 1.
server_id() { if [ "${2:-primary}" = standby ]; then printf '%s' $(($1 * 10 + 2)); else printf '%s' $(($1 * 10 + 1)); fi; }

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
      dump=$(command -v mariadb-dump || command -v mysqldump)
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
  [ "$standby_mode" != 1 ] || [ "$flavour" = mariadb ] || die "SHARDS_STANDBY=1 needs MariaDB (its GTIDs and semi-synchronous replication); this is $version"
}

# --- One shard's MySQL ------------------------------------------------------

sql() { "$client" --no-defaults --socket="$(machine_dir "$1" "${2:-primary}")/mysqld.sock" --user=root --batch --skip-column-names; }

start_mysql() {
  local d=$(machine_dir "$1" "${2:-primary}") name=$(label "$1" "${2:-primary}") i network
  if [ ! -d "$d/mysql" ]; then
    echo "$name: initialising $d/mysql"
    mkdir -p "$d/tmp"
    if [ "$flavour" = mariadb ]; then
      "$install_db" --no-defaults --datadir="$d/mysql" --auth-root-authentication-method=normal \
        --skip-test-db "${extra_flags[@]}" >"$d/init.log" 2>&1
    else
      "$mysqld" --no-defaults --initialize-insecure --datadir="$d/mysql" "${extra_flags[@]}" >"$d/init.log" 2>&1
    fi || die "$name: initialising MySQL failed; see $d/init.log:
$(tail -n 15 "$d/init.log")"
  fi
  mkdir -p "$d/tmp"
  # --skip-networking: MySQL listens on the socket only, never on TCP. A pair
  # replicates over TCP (a replica cannot connect to a Unix socket), so with
  # standbys each MySQL listens on loopback, on a port of its own.
  network=(--skip-networking)
  [ "$standby_mode" != 1 ] || network=($(replication_flags "$1" "${2:-primary}"))
  # --no-defaults first: no my.cnf on this machine may change a shard.
  "$mysqld" --no-defaults --datadir="$d/mysql" --socket="$d/mysqld.sock" --pid-file="$d/mysqld.pid" \
    --log-error="$d/mysqld.err" --tmpdir="$d/tmp" "${network[@]}" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    "${extra_flags[@]}" </dev/null >/dev/null 2>&1 &
  # mysqld writes the same pid there itself, a little later.
  echo $! >"$d/mysqld.pid"
  started+=("mysql:$1:${2:-primary}")
  # Ready means a real query works: `mysqladmin ping` says yes even to "access denied".
  for i in $(seq 300); do
    sql "$1" "${2:-primary}" <<<'SELECT 1' >/dev/null 2>&1 && return 0
    # running, not alive: a child not yet past exec still shows this script's command line.
    running "$(cat "$d/mysqld.pid")" || die "$name: MySQL stopped while starting. The end of $d/mysqld.err:
$(tail -n 15 "$d/mysqld.err" 2>/dev/null)"
    sleep 0.1
  done
  die "$name: MySQL did not answer within 30 s; see $d/mysqld.err"
}

# Applies schema.sql, then the cluster's tables, and makes sure the app user exists with the password on
# file. Idempotent, so a start that died half-way is mended by the next one.
setup_database() {
  local m=${2:-primary} d=$(machine_dir "$1" "${2:-primary}") password auth=''
  if [ ! -s "$d/password" ]; then
    od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$d/password"
    chmod 600 "$d/password"
  fi
  password=$(cat "$d/password")
  [ "$flavour" = mariadb ] || auth='WITH mysql_native_password'
  # The app may read and write its rows, and nothing else: no DDL, no other schema.
  cat "$root/schema.sql" "$root/shard/cluster-schema.sql" | sql "$1" "$m"
  sql "$1" "$m" <<SQL
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
# A shard started next to a cluster gets a copy of the cluster's newest map,
# which does not name it: it refuses every id until a reshard makes it a
# member. With SHARDS_MAP=first, shards with no map anywhere get the first
# map: these nodes, replicas 1.
give_maps() {
  local i map='' newest=0 row epoch nodes=()
  [ "${SHARDS_MAP:-}" != none ] || return 0
  for i in $(known_shards); do
    row=$(sql "$i" "$(primary_of "$i")" <<<'SELECT epoch, map FROM expenses.cluster_map' 2>/dev/null) || continue
    epoch=${row%%$'\t'*}
    if [ -n "$row" ] && [ "$epoch" -gt "$newest" ]; then newest=$epoch map=${row#*$'\t'}; fi
  done
  if [ -z "$map" ]; then
    [ "${SHARDS_MAP:-}" = first ] || return 0
    for i in "$@"; do
      nodes+=("{\"name\":\"$host:$(shard_port "$i")\",\"shard\":\"$(sql "$i" <<<'SELECT id FROM expenses.shard')\"}")
    done
    newest=1
    map="{\"epoch\":1,\"nodes\":[$(IFS=,; printf '%s' "${nodes[*]}")],\"replicas\":1}"
  fi
  for i in "$@"; do
    # A map this run wrote goes again if the run fails: it would name ports that never served.
    [ "$(sql "$i" "$(primary_of "$i")" <<<"INSERT INTO expenses.cluster_map (epoch, map) SELECT $newest, '${map//\'/\'\'}' FROM DUAL
      WHERE NOT EXISTS (SELECT 1 FROM expenses.cluster_map); SELECT ROW_COUNT();")" != 1 ] || started+=("map:$i")
  done
}

stop_mysql() {
  local d=$(machine_dir "$1" "${2:-primary}") pid i
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
  local d=$(machine_dir "$1" "${2:-primary}") port=$(shard_port "$1" "${2:-primary}") operator=''
  printf '%s\n' "$port" >"$d/port"
  # The failover's routes (shard/replication.ts) reach MySQL as the operator user (S7).
  [ ! -s "$d/operator-password" ] || operator=$d/operator-password
  # CLUSTER_PEER: the other machine of the pair, its server's address, which
  # GET /cluster/replication reports, so that check finds a node's standby.
  local peer=''
  [ -z "$operator" ] || peer=$host:$(shard_port "$1" "$(other "${2:-primary}")")
  (
    cd "$root"
    CLUSTER_PEER=$peer MYSQL_OPERATOR_PASSWORD_FILE=$operator MYSQL_REPL_PASSWORD_FILE=${operator:+$d/repl-password} HOST=$host PORT=$port MYSQL_SOCKET=$d/mysqld.sock MYSQL_USER=expenses \
      MYSQL_PASSWORD_FILE=$d/password MYSQL_DATABASE=expenses CLUSTER_SECRET_FILE=$(secret_file) \
      NODE_COMPILE_CACHE=$shards_dir/.compile-cache \
      nohup "$node" --max-semi-space-size=4 server.ts </dev/null >>"$d/server.log" 2>&1 &
    echo $! >"$d/server.pid"
  )
  started+=("server:$1:${2:-primary}")
}

wait_healthy() {
  local d=$(machine_dir "$1" "${2:-primary}") port=$(shard_port "$1" "${2:-primary}") name=$(label "$1" "${2:-primary}") i why
  for i in $(seq 100); do
    # A standby's server is healthy too, as a standby (GET /healthz says its role).
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
    running "$(cat "$d/server.pid")" || die "$name: the server stopped while starting. The end of $d/server.log:
$(tail -n 15 "$d/server.log")"
    sleep 0.1
  done
  die "$name: the server on port $port did not report healthy within 10 s; see $d/server.log"
}

stop_server() {
  local d=$(machine_dir "$1" "${2:-primary}") pid i
  pid=$(alive "$d/server.pid") || return 0
  # SIGTERM lets requests in flight finish.
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    running "$pid" || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# --- Standbys (SHARDS_STANDBY=1) --------------------------------------------
#
# The invariant: an acknowledged write survives the loss of any one machine of
# its shard. The rules that keep it, cited by number here and in docs/reliability.md:
#
#   S1. A standby is a second MariaDB that replicates the primary's binlog by
#       GTID (MASTER_USE_GTID=slave_pos), semi-synchronously, with
#       rpl_semi_sync_master_wait_point=AFTER_SYNC: a commit is written and
#       synced to the primary's binlog, then waits until the standby has
#       written it to its relay log and said so, and only then is committed in
#       InnoDB, seen by other sessions and answered. So the client's "201"
#       exists on two machines. sync_binlog=1 and
#       innodb_flush_log_at_trx_commit=1 make "written" mean "on disk".
#   S2. Each machine has its own data directory (shard-N/ and shard-N/standby/),
#       its own server.ts and its own ports (see shard_port), and talks to the
#       other only over TCP on 127.0.0.1, as user repl (REPLICATION SLAVE, a
#       password of its own in repl-password, 0600).
#   S3. The trade-off: when the standby is gone, a primary cannot get an ack,
#       and MariaDB would fall back to asynchronous replication after
#       rpl_semi_sync_master_timeout, acknowledging writes that exist once.
#       We choose durability: the timeout is about 49 days
#       (SHARDS_SEMISYNC_TIMEOUT_MS), so with its standby gone a shard's
#       writes wait (server.ts answers 503 after its 5 s query timeout, and
#       such a write may still commit later: unacknowledged, never lost once
#       acknowledged), while reads go on. An operator who prefers
#       availability may `SET GLOBAL rpl_semi_sync_master_enabled = 0` on
#       that primary, which releases the waiting writes: from then on the
#       shard runs on one copy, and `status` says so.
#       rpl_semi_sync_master_wait_no_slave=ON keeps the wait even when no
#       standby is connected at all.
#   S4. Every MySQL of a pair starts with read_only=1 and without
#       rpl_semi_sync_master_enabled, and the app user has no READ ONLY ADMIN
#       (nor SUPER): a standby, and a fenced or restarted old primary, refuse
#       the app's writes. A start makes a primary writable last
#       (open_primary): semi-sync on, its standby connected as a semi-sync
#       client, then read_only=0. A promotion (shard/replication.ts, D3) does the same.
#   S5. Both machines run with the same settings (log_bin, binlog_format=ROW,
#       log_slave_updates, gtid_strict_mode, relay_log_recovery,
#       rpl_semi_sync_slave_enabled) so that either can be the primary; only
#       the primary turns on rpl_semi_sync_master_enabled. A standby writes
#       nothing of its own: its setup runs with sql_log_bin=0, so its binlog
#       holds the primary's GTIDs only and it can be promoted, or follow again.
#   S6. Which machine is the primary is recorded in shard-N/primary ("primary"
#       or "standby", the machine's birth name; absent: "primary"), and every
#       start follows it, so that a restart never undoes a failover. `rejoin`
#       writes it, from what the MySQLs say. A start refuses a standby machine
#       that follows no one and holds data: a failover made it a primary, and
#       copying the old primary's data over it would lose what it took since.
#   S7. The failover's steps (shard/replication.ts, D1-D3) run as the MySQL
#       user operator (operator-password, 0600), never as expenses: its
#       READ_ONLY ADMIN writes through read_only.

# The mysqld options of a machine of a pair.
replication_flags() {
  local d=$(machine_dir "$1" "$2")
  printf '%s\n' --bind-address=127.0.0.1 --port="$(mysql_port "$1" "$2")" --skip-name-resolve \
    --server-id="$(server_id "$1" "$2")" --log-bin="$d/mysql/binlog" --relay-log="$d/mysql/relay" \
    --binlog-format=ROW --sync-binlog=1 --innodb-flush-log-at-trx-commit=1 \
    --log-slave-updates=ON --gtid-strict-mode=ON --relay-log-recovery=ON --read-only=ON \
    --rpl-semi-sync-master-enabled=OFF --rpl-semi-sync-master-wait-point=AFTER_SYNC \
    --rpl-semi-sync-master-timeout="$semisync_timeout" --rpl-semi-sync-master-wait-no-slave=ON \
    --rpl-semi-sync-slave-enabled=ON
}

# The replication user, on the primary (it reaches the standby by replication).
setup_replication_user() {
  local m=$2 d=$(machine_dir "$1" "$2") password file
  for file in repl-password operator-password; do
    if [ ! -s "$d/$file" ]; then
      od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$d/$file"
      chmod 600 "$d/$file"
    fi
  done
  password=$(cat "$d/repl-password")
  sql "$1" "$m" <<SQL
CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY '$password';
ALTER USER 'repl'@'127.0.0.1' IDENTIFIED BY '$password';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
$(operator_user "$(cat "$d/operator-password")")
SQL
}

# S7: the failover's MySQL user, with exactly the privileges of its steps.
operator_user() {
  printf '%s\n' "CREATE USER IF NOT EXISTS 'operator'@'localhost' IDENTIFIED BY '$1';" \
    "ALTER USER 'operator'@'localhost' IDENTIFIED BY '$1';" \
    "GRANT READ_ONLY ADMIN, REPLICATION MASTER ADMIN, REPLICATION SLAVE ADMIN, RELOAD, SLAVE MONITOR ON *.* TO 'operator'@'localhost';"
}

# A new standby gets a copy of the primary's data and users, taken at one GTID
# position, and then follows from that position. All of it with sql_log_bin=0
# (rule S5). A standby already replicating is left as it is.
setup_standby() {
  local pm=$(primary_of "$1") sm=$(standby_of "$1")
  local p=$(machine_dir "$1" "$pm") d=$(machine_dir "$1" "$sm")
  # The machine's own copies: it must run, and be promoted, without the other's disk.
  cp "$p/password" "$d/password"
  cp "$p/repl-password" "$d/repl-password"
  cp "$p/operator-password" "$d/operator-password"
  chmod 600 "$d/password" "$d/repl-password" "$d/operator-password"
  if [ -z "$(sql "$1" "$sm" <<<'SHOW SLAVE STATUS')" ]; then
    # S6: a machine that follows no one and holds the shard's data was made a primary by a failover.
    [ -z "$(sql "$1" "$sm" <<<"SHOW DATABASES LIKE 'expenses'")" ] || die "$(label "$1" "$sm") follows no primary but holds the shard's data: a failover made it a primary, and shard-$1/primary does not say so.
  Make the other machine its standby: ./start-shards.sh rejoin $1"
    echo "$(label "$1" "$sm"): copying the primary's data, then following it"
    # --gtid --master-data: the dump ends with SET GLOBAL gtid_slave_pos, the
    # position of its consistent snapshot.
    {
      echo 'SET SESSION sql_log_bin = 0;'
      "$dump" --no-defaults --socket="$p/mysqld.sock" --user=root --single-transaction --gtid --master-data=1 \
        --databases expenses --skip-dump-date || echo 'SELECT no_such_column_the_dump_failed;'
      # The mysql schema is not copied, so the users are made here, with the same passwords.
      echo "CREATE USER IF NOT EXISTS 'expenses'@'localhost' IDENTIFIED BY '$(cat "$d/password")';"
      echo "GRANT SELECT, INSERT, UPDATE, DELETE ON expenses.* TO 'expenses'@'localhost';"
      echo "CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY '$(cat "$d/repl-password")';"
      echo "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';"
      operator_user "$(cat "$d/operator-password")"
    } | sql "$1" "$sm" || die "$(label "$1" "$sm"): copying the primary's data failed"
  fi
  follow "$1" "$sm" "$pm"
}

# The last step of a start with standbys (rule S4): the primary waits for its
# standby's ack on every commit, its standby is connected, and only then does
# the primary take the app's writes.
open_primary() {
  local m=$(primary_of "$1")
  sql "$1" "$m" <<<'SET GLOBAL rpl_semi_sync_master_enabled = ON'
  wait_semisync "$1" "$m"
  sql "$1" "$m" <<<'SET GLOBAL read_only = OFF'
}

# Makes machine $2 of shard $1 replicate from machine $3 (and start doing so).
# The same statement makes a fenced old primary the new standby (rejoin; docs/reliability.md).
follow() {
  local password=$(cat "$(machine_dir "$1" "$2")/repl-password")
  # A standby must not wait for acks of the events it applies (docs/reliability.md).
  sql "$1" "$2" <<SQL
SET GLOBAL rpl_semi_sync_master_enabled = OFF;
SET GLOBAL read_only = ON;
STOP SLAVE;
CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $(mysql_port "$1" "$3"), MASTER_USER = 'repl',
  MASTER_PASSWORD = '$password', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1;
START SLAVE;
SQL
}

# What machine $2 of shard $1 is, by S6, for messages.
role_of() {
  if [ "$(primary_of "$1")" = "$2" ]; then printf 'the primary'; else printf 'read-only, following mysql %s:%s' "$host" "$(mysql_port "$1" "$(other "$2")")"; fi
}

# After a failover (operator/failover.ts) promoted machine $2 of shard $1:
# record it (S6), and make the other machine its standby. A machine whose
# data directory is gone is rebuilt from the new primary, as a new standby
# is; one that still has its data starts from its own history. A machine
# with transactions the new primary never received (possible with
# AFTER_SYNC if it crashed between its binlog sync and the ack) stops with
# a GTID error under gtid_strict_mode: delete its mysql/ directory and run
# rejoin again, which rebuilds it.
rejoin() {
  local i=$1 pm sm sd
  [ -d "$(machine_dir "$i" standby)" ] || die "usage: $0 rejoin N, for a shard with a standby; shard '$i' has none"
  find_mysql
  pm=$(writable_machine "$i") || die "shard $i has no writable primary: run the failover first (node ch_client.ts failover NODE), then rejoin"
  sm=$(other "$pm") sd=$(machine_dir "$i" "$sm")
  printf '%s\n' "$pm" >"$(shard_dir "$i")/primary"
  echo "shard $i: the primary is the machine in $(machine_dir "$i" "$pm") (recorded in $(shard_dir "$i")/primary)"
  stop_server "$i" "$sm"
  trap roll_back EXIT
  if [ ! -d "$sd/mysql" ]; then
    stop_mysql "$i" "$sm"
    rm -rf "$sd/mysqld.sock" "$sd/mysqld.pid"
  fi
  if ! alive "$sd/mysqld.pid" >/dev/null; then
    start_mysql "$i" "$sm"
  fi
  if [ -n "$(sql "$i" "$sm" <<<"SHOW DATABASES LIKE 'expenses'")" ]; then
    # Its own history is its starting point: the old primary's gtid_slave_pos is empty or old.
    sql "$i" "$sm" <<<'SET GLOBAL rpl_semi_sync_master_enabled = OFF; SET GLOBAL read_only = ON; STOP SLAVE; SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos'
    follow "$i" "$sm" "$pm"
  else
    setup_standby "$i"
  fi
  wait_semisync "$i" "$pm"
  start_server "$i" "$sm"
  wait_healthy "$i" "$sm"
  trap - EXIT
  echo "$(label "$i" "$sm"): http://$host:$(shard_port "$i" "$sm") up, $(role_of "$i" "$sm"); shard $i has its standby again"
}

# The machine of shard $1 whose MySQL is up, writable, and follows no one.
writable_machine() {
  local m
  for m in primary standby; do
    alive "$(machine_dir "$1" $m)/mysqld.pid" >/dev/null || continue
    [ "$(global "$1" $m VARIABLES READ_ONLY)" = OFF ] && [ -z "$(sql "$1" $m <<<'SHOW SLAVE STATUS')" ] && printf '%s' $m && return 0
  done
  return 1
}

# SHOW SLAVE STATUS, one "Name: value" a line.
slave_status() { "$client" --no-defaults --socket="$(machine_dir "$1" "$2")/mysqld.sock" --user=root --vertical <<<'SHOW SLAVE STATUS'; }

# A global status or variable of a machine's MySQL, or nothing when it does not answer.
global() { sql "$1" "$2" <<<"SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_$3 WHERE VARIABLE_NAME = '$4'" 2>/dev/null; }

# Waits until the primary has its standby as a semi-synchronous client.
wait_semisync() {
  local i m=${2:-primary}
  for i in $(seq 300); do
    [ "$(global "$1" "$m" STATUS RPL_SEMI_SYNC_MASTER_CLIENTS)" -ge 1 ] 2>/dev/null &&
      [ "$(global "$1" "$m" STATUS RPL_SEMI_SYNC_MASTER_STATUS)" = ON ] && return 0
    sleep 0.1
  done
  die "$(label "$1" "$(other "$m")"): not a semi-synchronous replica of shard $1 within 30 s. Its replication state:
$(slave_status "$1" "$(other "$m")" 2>&1 | grep -E 'Running|Error|Gtid' | sed 's/^ */  /')"
}

# Two or more lines about a pair: each machine's role and replication state,
# and a WARNING line when the shard runs without its standby.
pair_status() {
  local i=$1 machine d port server mysql state role slave io sqlt iopos pos clients semisync waiting warn=()
  [ -n "${client:-}" ] || find_mysql
  for machine in primary standby; do
    d=$(machine_dir "$i" $machine)
    port=$(cat "$d/port" 2>/dev/null || shard_port "$i" $machine)
    server=$(alive "$d/server.pid") || server=-
    mysql=$(alive "$d/mysqld.pid") || mysql=-
    state=$(health "$port")
    case $state in 200) state=up ;; 503) state=degraded ;; 000) state=down ;; *) state="http-$state" ;; esac
    if [ "$mysql" = - ]; then
      printf '  %-7s  http://%s:%s  %-8s  server pid %-7s  mysql pid %-7s  mysql down\n' "$machine" "$host" "$port" "$state" "$server" "$mysql"
      warn+=("the $machine's MySQL is down")
      continue
    fi
    slave=$(slave_status "$i" $machine 2>/dev/null) || slave=''
    pos=$(global "$i" $machine VARIABLES GTID_BINLOG_POS)
    if [ -n "$slave" ]; then
      io=$(sed -n 's/^ *Slave_IO_Running: //p' <<<"$slave")
      sqlt=$(sed -n 's/^ *Slave_SQL_Running: //p' <<<"$slave")
      iopos=$(sed -n 's/^ *Gtid_IO_Pos: //p' <<<"$slave")
      role="follows 127.0.0.1:$(sed -n 's/^ *Master_Port: //p' <<<"$slave")  Slave_IO_Running $io  Slave_SQL_Running $sqlt  Gtid_IO_Pos ${iopos:-none}  gtid_slave_pos $(global "$i" $machine VARIABLES GTID_SLAVE_POS)"
      [ "$io" = Yes ] && [ "$sqlt" = Yes ] || warn+=("the $machine does not replicate (IO $io, SQL $sqlt)")
    else
      semisync=$(global "$i" $machine STATUS RPL_SEMI_SYNC_MASTER_STATUS)
      clients=$(global "$i" $machine STATUS RPL_SEMI_SYNC_MASTER_CLIENTS)
      role="Rpl_semi_sync_master_status ${semisync:-?}  Rpl_semi_sync_master_clients ${clients:-?}"
      [ "$(global "$i" $machine VARIABLES READ_ONLY)" = OFF ] || role="$role  (read-only: fenced)"
      [ "${clients:-0}" -ge 1 ] 2>/dev/null || warn+=("no standby is connected to the $machine")
      waiting=$(global "$i" $machine STATUS RPL_SEMI_SYNC_MASTER_WAIT_SESSIONS)
      [ "${waiting:-0}" = 0 ] || warn+=("$waiting write(s) on the $machine wait for a standby's ack")
      [ "$semisync" = ON ] || warn+=("semi-sync is off on the $machine: acknowledged writes exist once")
    fi
    printf '  %-7s  http://%s:%s  %-8s  server pid %-7s  mysql pid %-7s  mysql %s:%s  read_only %s  gtid_binlog_pos %s  %s  %s\n' \
      "$machine" "$host" "$port" "$state" "$server" "$mysql" "$host" "$(mysql_port "$i" $machine)" \
      "$(global "$i" $machine VARIABLES READ_ONLY)" "${pos:-none}" "$role" "$d"
  done
  # S6: after a failover, the machine born as the standby is the primary.
  [ "$(primary_of "$i")" = primary ] || printf '  shard %s: the primary is the standby machine since a failover (%s/primary)\n' "$i" "$(shard_dir "$i")"
  if [ ${#warn[@]} -gt 0 ]; then
    printf '  WARNING: shard %s runs without its standby: %s\n' "$i" "$(IFS=';'; printf '%s' "${warn[*]}" | sed 's/;/; /g')"
  fi
}

# --- Commands ---------------------------------------------------------------

# Before a start with standbys: the shard's sockets fit, a MySQL that runs
# already runs as a pair's, and the pair's ports are free.
check_pair() {
  local i=$1 d=$(shard_dir "$1") machine p
  [ ${#d} -le 87 ] || die "the socket path $d/standby/mysqld.sock is over the 107-byte limit of a Unix socket path.
  Set SHARDS_DIR to a shorter directory."
  if alive "$d/mysqld.pid" >/dev/null && [ "$(global "$i" primary VARIABLES LOG_BIN)" != ON ]; then
    die "shard $i's MySQL runs without a binlog, as without standbys; stop the shards (./start-shards.sh stop), then start them with SHARDS_STANDBY=1"
  fi
  for machine in primary standby; do
    alive "$(machine_dir "$i" $machine)/mysqld.pid" >/dev/null && continue
    p=$(mysql_port "$i" $machine)
    ! port_in_use "$p" || die "port $p ($(label "$i" $machine)'s MySQL) is already in use by $(port_holder "$p").
  Stop that process, or choose other ports with SHARDS_BASE_PORT."
  done
  alive "$d/standby/server.pid" >/dev/null && return 0
  p=$(shard_port "$i" standby)
  ! port_in_use "$p" || die "port $p ($(label "$i" standby)) is already in use by $(port_holder "$p").
  Stop that process, or choose other ports with SHARDS_BASE_PORT."
}

# No two of the pairs' ports may meet (rule S2), nor pass 65535.
check_ports() {
  local i machine all=() dup
  for i in $(seq "$1"); do
    for machine in primary standby; do all+=("$(shard_port "$i" $machine)" "$(mysql_port "$i" $machine)"); done
  done
  dup=$(printf '%s\n' "${all[@]}" | sort -n | uniq -d | head -n 1)
  [ -z "$dup" ] || die "with standbys, SHARDS_PORT_STEP=$port_step makes two machines share port $dup; use a step of 1 (up to 99 shards) or of 400 or more"
  [ "$(printf '%s\n' "${all[@]}" | sort -n | tail -n 1)" -le 65535 ] || die "with standbys, shard $1 would need a port above 65535; lower SHARDS_BASE_PORT or SHARDS_PORT_STEP"
}

# What this run started, so that a failure can take it all down again.
started=()
roll_back() {
  local i
  [ ${#started[@]} -gt 0 ] || return 0
  echo "start-shards: stopping what this run started" >&2
  local what n machine
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    IFS=: read -r what n machine <<<"${started[i]}"
    case $what in
      server) stop_server "$n" "$machine" ;;
      map) sql "$n" "$(primary_of "$n")" <<<'DELETE FROM expenses.cluster_map' || true ;;
      mysql) stop_mysql "$n" "$machine" ;;
    esac
  done
}

start() {
  local n=$1 i d port pm sm pd sd todo=()
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "the number of shards must be 1 to 99, got '$n'"
  find_mysql
  # Check everything that can be checked before starting anything.
  for i in $(seq "$n"); do
    d=$(shard_dir "$i")
    port=$(shard_port "$i")
    [ "$port" -le 65535 ] || die "shard $i would need port $port; lower SHARDS_BASE_PORT or SHARDS_PORT_STEP"
    [ ${#d} -le 95 ] || die "the socket path $d/mysqld.sock is over the 107-byte limit of a Unix socket path.
  Set SHARDS_DIR to a shorter directory."
    if [ "$standby_mode" = 1 ]; then
      check_pair "$i"
      if alive "$d/server.pid" >/dev/null && [ "$(health "$port")" = 200 ] &&
        alive "$d/standby/server.pid" >/dev/null && [ "$(health "$(shard_port "$i" standby)")" != 000 ] &&
        alive "$d/standby/mysqld.pid" >/dev/null; then continue; fi
    else
      [ ! -d "$d/standby" ] || die "shard $i has a standby ($d/standby); start it with SHARDS_STANDBY=1, or its standby would fall behind"
      if alive "$d/server.pid" >/dev/null && [ "$(health "$port")" = 200 ]; then continue; fi
    fi
    if ! alive "$d/server.pid" >/dev/null && port_in_use "$port"; then
      die "port $port (shard $i) is already in use by $(port_holder "$port").
  Stop that process, or choose other ports with SHARDS_BASE_PORT."
    fi
    todo+=("$i")
  done
  [ "$standby_mode" != 1 ] || check_ports "$n"
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
    # S6: the machine recorded as the primary (the shard's own directory, unless a failover moved it).
    pm=$(primary_of "$i") sm=$(standby_of "$i")
    pd=$(machine_dir "$i" "$pm") sd=$(machine_dir "$i" "$sm")
    alive "$pd/mysqld.pid" >/dev/null || start_mysql "$i" "$pm"
    # A primary that has semi-sync on waits for its standby's ack for the
    # setup's writes too: so a standby that exists starts first.
    if [ "$standby_mode" = 1 ] && [ -d "$sd/mysql" ] && ! alive "$sd/mysqld.pid" >/dev/null; then
      start_mysql "$i" "$sm"
    fi
    setup_database "$i" "$pm"
    if [ "$standby_mode" = 1 ]; then
      setup_replication_user "$i" "$pm"
      mkdir -p "$sd"
      alive "$sd/mysqld.pid" >/dev/null || start_mysql "$i" "$sm"
      setup_standby "$i"
      open_primary "$i"
    fi
    alive "$d/server.pid" >/dev/null || unserved+=("$i")
  done
  # A server reads its map when it starts, so the maps go in first.
  [ ${#unserved[@]} -eq 0 ] || give_maps "${unserved[@]}"
  for i in "${todo[@]}"; do
    # A server whose MySQL was down heals by itself once MySQL is back.
    alive "$(shard_dir "$i")/server.pid" >/dev/null || start_server "$i"
    wait_healthy "$i"
    echo "shard $i: http://$host:$(shard_port "$i") up (data in $(shard_dir "$i"))"
    if [ "$standby_mode" = 1 ]; then
      alive "$(machine_dir "$i" standby)/server.pid" >/dev/null || start_server "$i" standby
      wait_healthy "$i" standby
      echo "$(label "$i" standby): http://$host:$(shard_port "$i" standby) up, $(role_of "$i" standby) (data in $(machine_dir "$i" standby))"
    fi
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
    [ ! -d "$d/standby" ] || pair_status "$i"
  done
  [ "$any" = 1 ] || echo "no shards in $shards_dir"
}

stop() {
  local i
  find_mysql
  for i in $(known_shards); do
    # The servers first, so that no write is in flight; then the primary's
    # MySQL, whose shutdown sends the standby all it has; then the standby's.
    stop_server "$i" standby
    stop_server "$i"
    stop_mysql "$i"
    stop_mysql "$i" standby
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
  rejoin) rejoin "${2:-}" ;;
  sql-standby)
    [ -d "$(machine_dir "${2:-}" standby)" ] || die "usage: $0 sql-standby N [mysql client arguments]; shard '${2:-}' has no standby"
    find_mysql
    exec "$client" --no-defaults --socket="$(machine_dir "$2" standby)/mysqld.sock" --user=root expenses "${@:3}"
    ;;
  -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) start "${1:-3}" ;;
esac
