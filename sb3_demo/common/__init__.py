"""The planning core the four front ends call, and the glue between SB3 objects and the pure-torch planner
(see docs/architecture.md)."""
