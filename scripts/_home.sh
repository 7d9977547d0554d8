# Sourced by scripts/*.sh (needs ROOT, the repository root): where TANDEM_HOME is.
#
# TANDEM_HOME defaults to .tandem, and a relative value is taken from the current directory,
# exactly as the `tandem` command (tandem.config) takes it, so `scripts/redis.sh start` and
# `tandem serve` run from one folder share one home. Tools that `make setup` fetched into the
# repository root's home (Kafka's jars, Helm) are found from any directory: the current
# directory's home is tried first, then the root's (as tandem_testing.infra.kafka_libs_dir).

# The home of this shell's current directory, absolute.
tandem_home() {
  local h=${TANDEM_HOME:-.tandem}
  [[ $h = /* ]] || h="$PWD/$h"
  echo "$h"
}

# tandem_home_holding REL: the home under which REL exists (current directory's first, then
# the repository root's); the current directory's home when neither has it.
tandem_home_holding() {
  local here h=${TANDEM_HOME:-.tandem}
  here=$(tandem_home)
  if [[ ! -e "$here/$1" && $h != /* && -e "$ROOT/$h/$1" ]]; then echo "$ROOT/$h"; else echo "$here"; fi
}
