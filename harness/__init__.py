"""memprox engine: data, training with recorders, run store, planning, tasks, leaderboard, CLI."""
