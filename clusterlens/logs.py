"""Logging: one ``clusterlens.*`` logger tree on stderr, and readable multi-line blocks."""
from __future__ import annotations

import logging
import sys


def get_logger(name: str) -> logging.Logger:
    logger = logging.getLogger(f"clusterlens.{name}")
    if not logging.getLogger("clusterlens").handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s",
                                               "%H:%M:%S"))
        root = logging.getLogger("clusterlens")
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    return logger


def log_block(logger: logging.Logger, title: str, **sections: dict) -> None:
    """Log one readable block: e.g. inputs=..., params=..., outputs=..."""
    lines = [f"== {title}"]
    for section, items in sections.items():
        lines.append(f"  {section}:")
        for key, value in items.items():
            lines.append(f"    {key}: {value}")
    logger.info("\n".join(lines))
