"""Treecast's HTTP API: an ASGI application (FastAPI) on top of `TreecastService`.

Imports nothing at package import, so the rest of Treecast works without FastAPI
installed; `python -m treecast.api` (or `starter.py api`) runs it under uvicorn.
"""
