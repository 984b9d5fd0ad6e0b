"""Scoring accepted trajectories: the RULER judge, the outcome judge, and what they store."""
