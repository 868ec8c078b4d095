# Sourced by scripts/test.sh and scripts/reliability.sh: the nextest filter of the tests
# that run alone, one at a time, after the others. They stop and start brokers, or kill
# bridge (tansu's group coordinator waits out each killed member's session, and other
# groups' joins stalled past a minute behind them), or inject network faults whose
# heartbeat and session timeouts need a machine that is not saturated.
# shellcheck shell=bash
ALONE_TESTS='test(/broker_restart|network_faults|sigkill/)'
