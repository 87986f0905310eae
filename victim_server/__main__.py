from victim_server.cli import app

app(prog_name="python -m victim_server")
