"""Studies: TOML config -> one validator -> frozen dataclasses -> runs -> tidy DataFrame -> store.
May import the RL layer (rl, gradients, sequence) and everything below; never report or cli.
"""
