"""The benchmark's parts: harness, contenders, goals, and the workloads registry."""
