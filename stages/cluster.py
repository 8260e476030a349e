"""DVC stage `cluster`: see clusterlens.clustering."""
from clusterlens.common import run_cli
from clusterlens.clustering import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
