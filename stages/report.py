"""DVC stage `report`: see clusterlens.report."""
from clusterlens.common import run_cli
from clusterlens.report import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
