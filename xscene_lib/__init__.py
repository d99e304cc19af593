"""xscene_lib: text features for multi-scenario recommendation (the library of the xscene book)."""

__version__ = "0.1.0"
