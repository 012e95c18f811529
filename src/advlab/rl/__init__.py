"""Reinforcement-learning policies under observation attacks (Huang et al. 2017; Kos & Song 2017)."""
