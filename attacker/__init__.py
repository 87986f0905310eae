"""VidSteal attacker: budget-exact model extraction over HTTP."""
