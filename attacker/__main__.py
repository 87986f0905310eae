from attacker.cli import app

app(prog_name="python -m attacker")
