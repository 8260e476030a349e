"""Shared plumbing: atomic I/O, logging, user errors, the stage command wrapper, CPU kernel pins, torch devices."""
