"""Trigger rules: marketers' YAML files, compiled and evaluated per customer.

Pure like the rest of ``engine``: rule texts come in as strings (the caller
reads the files), decisions go out as effect values.
"""
