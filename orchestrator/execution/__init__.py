"""Where work runs: in-process or on Ray (`executors`, `job_board`), what a worker computes for one
arch (`evaluation`), the target's latency dataset (`measuring`) and supernet training (`training`)."""
