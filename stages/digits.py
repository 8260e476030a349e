"""DVC stage `digits`: see clusterlens.digits."""
from clusterlens.common import run_cli
from clusterlens.digits import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
