"""Robot drivers: the only nodes that know whether the arms are real or simulated."""
