# Sourced by the DFT queues that step in front of dft/queue_s17.sh (queue_s20.sh, queue_s21.sh, queue_s22.sh).
# after_queue_s17 HOST: if queue_s17.sh is running, wait until it reports HOST done in its log (runs/queue_s17.log,
# or the log of the queue that started it, runs/queue_s2*.log),
# then stop it and its `screen validate` (finished single points are kept; an interrupted one resumes from
# its SCF checkpoint) and wait until that process has exited; without a running queue_s17.sh, return at once.
after_queue_s17() {
  pgrep -f queue_s17.sh > /dev/null || return 0
  while ! grep -q "^done: $1" runs/queue_s17.log runs/queue_s2*.log 2>/dev/null; do sleep 60; done
  pkill -f queue_s17.sh; pkill -TERM -f "screen validate"
  while pgrep -f "screen validate" > /dev/null; do sleep 10; done
}
