"""Scale rehearsal: build any rank of a large layout in one process (fake process group) and measure it."""
