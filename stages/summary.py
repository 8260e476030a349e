"""DVC stage `summary`: see clusterlens.summary."""
from clusterlens.common import run_cli
from clusterlens.summary import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
