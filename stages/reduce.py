"""DVC stage `reduce`: see clusterlens.reduce."""
from clusterlens.common import run_cli
from clusterlens.reduce import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
