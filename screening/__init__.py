"""Batched relaxations, ΔGH* with uncertainty, the resumable store and executors."""
