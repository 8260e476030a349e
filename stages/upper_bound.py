"""DVC stage `upper_bound`: see clusterlens.upper_bound."""
from clusterlens.common import run_cli
from clusterlens.upper_bound import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
