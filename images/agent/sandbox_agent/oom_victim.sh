# Sourced by bash before its command (procs.spawn sets BASH_ENV to this file): raise the shell's
# OOM score to the most, as procs.OOM_VICTIM does, without exec'ing /bin/sh first. Forget
# BASH_ENV, so the shells the command starts neither read this again nor see it.
{ echo 1000 >/proc/self/oom_score_adj; } 2>/dev/null
unset BASH_ENV
