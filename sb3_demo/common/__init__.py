"""Glue between SB3 objects and the pure-torch planner."""
