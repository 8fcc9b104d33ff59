"""The web dashboard and HTTP API (``flowforge ui``; needs ``pip install "flowforge[web]"``).

- :mod:`.app`: :func:`create_app` and :func:`serve`: pages, API, live channel, token gate;
- :mod:`.api` and :mod:`.models`: the JSON API under ``/api/v1`` and its shapes;
- :mod:`.reader`: what the state folder, the log file and the job table say;
- :mod:`.live` and :mod:`.stream`: runs' live events and one run's SSE stream;
- :mod:`.launch`: starting and cancelling runs in processes of their own;
- :mod:`.metrics`: Prometheus metrics; :mod:`.layout`: where each task is drawn;
- :mod:`.auth`: the loopback-or-token rule; ``static/``: the pages' HTML, JS and CSS.

``import flowforge`` never imports this package.
"""

from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
