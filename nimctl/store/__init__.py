"""The model store: what is on disk, how it got there, and how it leaves.

- :mod:`~nimctl.store.source`: what a model URI names (a folder, ``hf://``, ``builtin://``);
- :mod:`~nimctl.store.target`: what a MODEL argument names (manifest and source), and what to pull;
- :mod:`~nimctl.store.layout`: where the cache keeps each thing;
- :mod:`~nimctl.store.pull`: fetching from the hub, and checking the cache offline;
- :mod:`~nimctl.store.progress`: how far a fetch has come;
- :mod:`~nimctl.store.inventory`: what the cache holds (``nimctl cache ls|du``);
- :mod:`~nimctl.store.verify`: every file against the hashes the hub recorded;
- :mod:`~nimctl.store.removal`: ``rm`` and ``prune``, never half a model;
- :mod:`~nimctl.store.bundle`: one archive to carry a model (and its image) across an air gap;
- :mod:`~nimctl.store.model_store`: NIM's ``download-to-cache`` and ``create-model-store``.

The CLI (``nimctl pull|cache|bundle``) and the server (start-up download, ``download-to-cache``,
``create-model-store``) both call these; none of them imports Typer or the server. They read
manifests (:mod:`nimctl.profiles`); the bundle reaches the Docker daemon through
:mod:`nimctl.runtime.docker_client`, the one place nimctl connects to it.
"""
