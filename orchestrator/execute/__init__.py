"""Running sweeps: configuration, scheduling policy, the sweep's lifecycle, the one per-entry
path both executors take, and (in ``ray/``) the Ray cluster, supervisor and worker actor."""
