"""Search: explore an architecture and training space with Optuna, then re-train
the finalists over seeds. `space` parses and samples the `search:` block of a
study file, `engine` runs it through the one study runner, `report` writes the
search report and the winner's best.yaml. Optuna is an optional extra."""
