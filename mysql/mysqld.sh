# mysql/mysqld.sh: one machine's MySQL server, for start-shards.sh, which
# sources it: which server this machine has (find_mysql), a root client on a
# machine's socket, and starting and stopping the server on the data
# directory mysql/pair.ts made. It uses the launcher's dir, mode, started,
# label, running, reap and die.

# Which MySQL: the server, with its client, admin, init and dump tools, and the options every run of it needs.
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
  if [ "$flavour" = mysql ]; then client=$(command -v mysql) admin=$(command -v mysqladmin) install_db= extra_flags+=(--mysqlx=OFF); fi
  [ "$UID" -ne 0 ] || extra_flags+=(--user=root) # mysqld refuses to run as root unless told to
  [ "$mode" = 0 ] || [ "$flavour" = mariadb ] || die "standbys need MariaDB (its GTIDs and semi-synchronous replication); this is $version"
}

sql() { "$client" --no-defaults --socket="${dir[$1]}/mysqld.sock" --user=root --batch --skip-column-names; }

# Machine $1's MySQL, with the options after it (mysql/pair.ts's), on the data directory pair.ts made.
start_mysql() {
  local m=$1 d=${dir[$1]} i mysqld_pid why
  shift
  mkdir -p "$d/tmp"
  # --no-defaults first: no my.cnf on this machine may change a shard.
  "$mysqld" --no-defaults --datadir="$d/mysql" --socket="$d/mysqld.sock" --pid-file="$d/mysqld.pid" --log-error="$d/mysqld.err" --tmpdir="$d/tmp" \
    "$@" --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci "${extra_flags[@]}" </dev/null >/dev/null 2>&1 9>&- {from}<&- {to}>&- &
  mysqld_pid=$!
  echo "$mysqld_pid" >"$d/mysqld.pid" # mysqld writes the same pid there itself, a little later
  started+=("mysql:$m")
  # Ready means a real query works: `mysqladmin ping` says yes even to "access denied".
  for i in {1..300}; do
    why=$(sql "$m" <<<'SELECT 1' 2>&1 >/dev/null) && return 0
    [[ $why != *'Access denied'* ]] || die "$(label "$m"): its MySQL refuses root: $d/mysql is half-made (its init was cut short). Move it aside (its data is kept there), then run the same command again; the start makes it anew:
  mv $d/mysql $d/mysql.half-made"
    running "$mysqld_pid" || die "$(label "$m"): MySQL stopped while starting. The end of $d/mysqld.err:
$(tail -n 15 "$d/mysqld.err" 2>/dev/null)"
    sleep 0.1
  done
  die "$(label "$m"): MySQL did not answer within 30 s; see $d/mysqld.err"
}

stop_mysql() {
  local d=${dir[$1]}
  alive "$d/mysqld.pid" || return 0
  # A clean shutdown flushes InnoDB; a kill would leave crash recovery to the next start. A frozen MySQL (SIGSTOP, a
  # paused VM) accepts the connection and never greets: the client's own timeout is 12 hours, so 10 s, then the kill.
  "$admin" --no-defaults --connect-timeout=10 --socket="$d/mysqld.sock" --user=root shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  reap "$pid" 300
}
