"""The user commands: one module per tool, each with `main(argv=None) -> int`, run by setup.py's console scripts and tools/*.py.

They parse arguments, set up logging and print; the work lives in the subsystems, and no library module imports them.
"""
