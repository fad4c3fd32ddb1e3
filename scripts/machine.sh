# The lines every benchmark result file opens with: what ran where. Sourced by the load,
# open-loop and overload scripts.
#
# A figure cannot be compared with another without the commit that produced it (and
# whether the tree held uncommitted changes: the scripts build what is checked out), nor,
# on a virtual machine, without the guest's halt polling, which changed 100-event
# throughput by 22% here (bench/results/2026-12-06-kernel-floor-and-halt-poll.md).
describe_machine() {
  local model commit halt_poll
  model=$(awk -F: '/model name/ { print $2; exit }' /proc/cpuinfo | sed 's/^ *//')
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit+=" with uncommitted changes"
  fi
  halt_poll=/sys/module/haltpoll/parameters/guest_halt_poll_ns
  if [[ -r $halt_poll ]]; then
    halt_poll="guest_halt_poll_ns $(cat "$halt_poll")"
  else
    halt_poll="no cpuidle-haltpoll"
  fi
  echo "Machine: $(nproc) cores, $model, kernel $(uname -r); $halt_poll."
  # BIN= (overload.sh) runs a binary built elsewhere: the tree says nothing about it.
  if [[ -n ${BIN:-} ]]; then
    echo "Build: the binary BIN=$BIN (checked out here: $commit)."
  else
    echo "Build: $commit."
  fi
}
