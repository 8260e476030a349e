"""DVC stage `macro`: see clusterlens.macro."""
from clusterlens.common import run_cli
from clusterlens.macro import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
