"""Reporting: tidy DataFrame in, tables / figures / claims out; only figure_files writes files.

Imports ``klest.studies`` and everything below; only ``klest.cli`` imports it. No matplotlib here.
"""
