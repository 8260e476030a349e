"""DVC stage `extract`: see clusterlens.features."""
from clusterlens.common import run_cli
from clusterlens.features import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
