# mysql/start-checks.sh: what a start of start-shards.sh, which sources it,
# checks before it starts anything, so that a refused start creates nothing:
# the number of shards, the mode, the ports (free, below 65536, none shared:
# S2) and the socket paths. Each refusal says what to run instead.

port_in_use() { (: <>"/dev/tcp/$host/$1") 2>/dev/null; }
port_holder() {
  local pid
  pid=$(lsof -nP -t -iTCP:"$1" -sTCP:LISTEN 2>/dev/null | head -n 1) || true
  [ -n "$pid" ] || pid=$(ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2) || true
  if [ -n "$pid" ]; then printf 'pid %s (%s)' "$pid" "$(ps -o args= -p "$pid" | cut -c 1-60)"; else printf 'another process'; fi
}
need_free() { ! port_in_use "$1" || die "port $1 ($2) is already in use by $(port_holder "$1").
  Stop that process, or choose other ports with SHARDS_BASE_PORT."; }

# Shards 1..$1: refuses what cannot start; leaves the shards not yet up in the caller's todo.
check_start() {
  local n=$1 i m up sock dup ports=()
  [[ $n =~ ^[1-9][0-9]?$ ]] || die "the number of shards must be 1 to 99, got '$n'"
  [ "${SHARDS_STANDBY:-$mode}" -ge "$recorded" ] || die "this cluster runs with standbys ($shards_dir/mode says so): start it without SHARDS_STANDBY=$SHARDS_STANDBY, or its standbys would fall behind"
  find_mysql
  # Check everything that can be checked before starting anything.
  for ((i = 1; i <= n; i++)); do
    layout "$i"
    [ "${http[primary]}" -le 65535 ] || die "shard $i would need port ${http[primary]}; lower SHARDS_BASE_PORT or SHARDS_PORT_STEP"
    sock=${dir[${machines[-1]}]}/mysqld.sock
    [ ${#sock} -le 107 ] || die "the socket path $sock is over the 107-byte limit of a Unix socket path.
  Set SHARDS_DIR to a shorter directory."
    up=1
    for m in "${machines[@]}"; do
      ports+=("${http[$m]}")
      [ "$mode" = 0 ] || ports+=("${mysql[$m]}")
      # Up: its MySQL runs, and its server answers (the primary's, healthy).
      alive "${dir[$m]}/server.pid" && alive "${dir[$m]}/mysqld.pid" &&
        case $(health "${http[$m]}") in 200) true ;; 000) false ;; *) [ "$m" != "$pm" ] ;; esac && continue
      up=0
      alive "${dir[$m]}/server.pid" || need_free "${http[$m]}" "$(label "$m")"
      [ "$mode" = 0 ] || alive "${dir[$m]}/mysqld.pid" || need_free "${mysql[$m]}" "$(label "$m")'s MySQL"
    done
    [ "$up" = 1 ] || todo+=("$i")
  done
  # S2: no two of the machines' ports may meet.
  dup=$(printf '%s\n' "${ports[@]}" | sort -n | uniq -d | head -n 1)
  [ -z "$dup" ] || die "with standbys, SHARDS_PORT_STEP=$port_step makes two machines share port $dup; use a step of 1 (up to 99 shards) or of $((200 * mode + 200)) or more"
}

# Under the lock: a start that adds standbys finds the shards stopped.
check_more_standbys() {
  local i
  if [ "$recorded" != "$mode" ] && [ -n "$word" ]; then
    # More standbys: MySQLs start again with a binlog (S5), and servers with every machine in CLUSTER_PEER.
    for i in $(known_shards); do
      layout "$i"
      ! alive "${dir[$pm]}/mysqld.pid" || die "shard $i runs with $recorded standby(s) a shard: stop the shards (./start-shards.sh stop), then start them with SHARDS_STANDBY=$SHARDS_STANDBY"
    done
  fi
}
