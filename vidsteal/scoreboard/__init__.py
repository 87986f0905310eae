"""``python -m vidsteal scoreboard``: every attack against every detector and defense.

Modules, one concept each: ``attacks`` (recipes, shared with bench/extraction.py), ``defenses``
(the answer-policy columns), ``spec`` (what a run covers), ``streams`` (benign streams, mp4
folders, a run's paid queries replayed), ``panel`` (detectors observing one stream), ``benign``
(false alarms and accuracy cost on benign traffic), ``runs`` (one attack run in a worker
process), ``board`` (the grid), ``render`` (json, markdown, heat maps).
"""

from vidsteal.scoreboard.board import run_scoreboard
from vidsteal.scoreboard.render import write_outputs
from vidsteal.scoreboard.spec import ScoreboardSpec, SpecError, default_out

__all__ = ["ScoreboardSpec", "SpecError", "default_out", "run_scoreboard", "write_outputs"]
