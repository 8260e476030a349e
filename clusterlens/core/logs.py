"""Logging helpers for stage entry points: a stage's logger, and readable multi-line blocks."""
from __future__ import annotations

import logging

from clusterlens.core.cli import configure_logging


def get_logger(name: str) -> logging.Logger:
    """The ``clusterlens.<name>`` logger, with the stderr handler configured."""
    configure_logging()
    return logging.getLogger(f"clusterlens.{name}")


def log_block(logger: logging.Logger, title: str, **sections: dict) -> None:
    """Log one readable block: e.g. inputs=..., params=..., outputs=..."""
    lines = [f"== {title}"]
    for section, items in sections.items():
        lines.append(f"  {section}:")
        for key, value in items.items():
            lines.append(f"    {key}: {value}")
    logger.info("\n".join(lines))
