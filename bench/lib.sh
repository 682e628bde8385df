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
