"""Sub-commands beyond ``run``/``check-config``/``demo``: one module each, exposing a click ``command``."""

COMMAND_MODULES = ("verify", "status", "redrive", "lambda_filters", "backfill")
