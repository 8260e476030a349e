"""DVC stage `index`: see clusterlens.index."""
from clusterlens.common import run_cli
from clusterlens.index import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
