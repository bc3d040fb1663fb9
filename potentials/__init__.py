"""Bayesian E(3)-equivariant interatomic potential (RACE architecture on e3nn) with uncertainty heads."""
