"""The scale rehearsal: one rank of a large layout built on one CPU machine, and what it weighs."""
