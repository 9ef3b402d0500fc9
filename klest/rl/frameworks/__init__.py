"""The frameworks klest mirrors, one module each: their releases and kinds as data.

Importing this package registers every release with :mod:`klest.rl.penalty`.
"""

from klest.rl.frameworks import (  # noqa: F401  (each registers its releases)
    areal,
    easyr1,
    nemo_rl,
    oat,
    open_instruct,
    openrlhf,
    prime_rl,
    skyrl,
    slime,
    torchtune,
    trl,
    verl,
)
