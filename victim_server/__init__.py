"""VidSteal victim: a budgeted, measured video classification API."""
