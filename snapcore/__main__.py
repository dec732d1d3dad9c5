from snapcore.cli import run

run()
