from cis.cli.main import run

run()
