# Shared by the bench shells: start peers in their own process groups (killed on exit), wait
# for their ports, take medians.  Source it after setting HERE.
pids=()
trap 'for p in "${pids[@]}"; do kill -- -$p 2>/dev/null; done' EXIT INT TERM

# start NAME DIR CMD...: run CMD in DIR as its own process group, log in /tmp/bench-NAME.log
start() {
  local name=$1 dir=$2; shift 2
  setsid bash -c "cd '$dir' && exec $*" >"/tmp/bench-$name.log" 2>&1 &
  pids+=($!)
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (30 s at most)
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# median V1 V2 ...
median() { echo "$@" | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

# ratio LABEL A B: prints "LABEL = A/B"
ratio() { awk -v a="$2" -v b="$3" -v l="$1" 'BEGIN{printf "%s = %.2f\n", l, a/b}'; }

# hello_config FILE PORT [SETTING_LINE ...]: a one-process config serving the hello example on
# PORT (quiet logs), with the extra [settings] lines given
hello_config() {
  local file=$1 port=$2; shift 2
  {
    printf '[server]\ntype = "http"\nport = %s\napp = "http_hello:handler"\n' "$port"
    printf '[settings]\nworker_num = 0\nlog_level = "warning"\n'
    for line in "$@"; do printf '%s\n' "$line"; done
  } > "$file"
}

# self_signed DIR: DIR/cert.pem and DIR/key.pem, ECDSA P-256 for localhost, two days
self_signed() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$1/key.pem" -out "$1/cert.pem" -subj /CN=localhost 2>/dev/null
}
