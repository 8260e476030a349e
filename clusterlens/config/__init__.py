"""Typed, validated views of ``params.yaml``: one pydantic model per section.

``clusterlens.config.base`` holds the machinery (strict models, dotted-key errors, "did you mean"
hints); each other module holds the models of one or a few sections, so a stage depends only on
the sections it reads.
"""
