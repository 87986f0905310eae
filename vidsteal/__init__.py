"""The range launcher: starts redis-server, the victim and the attacker as processes.

It imports neither ``victim_server`` nor ``attacker``; they meet only over HTTP, as in
production.
"""
