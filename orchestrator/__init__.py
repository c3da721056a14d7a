"""exportsweep's orchestrator: CLI, sweep executors, result sink and console output."""
