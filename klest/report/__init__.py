"""Reporting: tidy DataFrame in, tables / figures / claims out (plots return a Figure and
never save; ``figure_files`` writes them).

Imports ``klest.studies`` and everything below; only ``klest.cli`` imports it. Importing this
package loads no matplotlib: ``plots``, ``plots_rl``, ``figures`` and ``figure_files`` do.
"""
