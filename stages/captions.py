"""DVC stage `captions`: see clusterlens.captions."""
from clusterlens.common import run_cli
from clusterlens.captions import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
