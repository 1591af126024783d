"""Shared infrastructure of Treecast: configuration, encryption, database, URL checks."""

__version__ = "0.1.0"
