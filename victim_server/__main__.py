import os

# OpenMP reads its wait policy once, when torch loads: passive workers sleep at barriers instead
# of spinning on cores the event loop needs (an explicit OMP_WAIT_POLICY is kept).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from victim_server.cli import app

app(prog_name="python -m victim_server")
