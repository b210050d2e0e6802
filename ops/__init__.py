"""Checks of a deployment rather than measurements of speed: the GPU agreeing with the CPU
(`make gpu-check`), many worker commands on one sweep counting exactly (the bench section `load`),
and the throwaway PostgreSQL cluster that check and the tests start."""
