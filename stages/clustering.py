"""DVC stage `clustering`: see clusterlens.selection."""
from clusterlens.common import run_cli
from clusterlens.selection import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
