"""Airflow plugin: the retention monitoring page in the Airflow UI.

The API server mounts the page's FastAPI app at ``/retention`` (``fastapi_apps``); the
external view puts a *Retention* entry in the UI's navigation, which shows the page in
an iframe of the same origin. The app checks the caller's Airflow token itself: plugin
apps are mounted without Airflow's authentication.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from retention_airflow.ui import URL_PREFIX, create_app
from retention_airflow.ui.app import default_anchor

# Under a proxy prefix ([api] base_url with a path) the mount moves with the API server.
_ROOT = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class RetentionUiPlugin(AirflowPlugin):
    """Mounts the monitoring app and links it from the navigation."""

    name = "retention_ui"
    fastapi_apps = [
        {
            "app": create_app(anchor_factory=default_anchor),
            "url_prefix": URL_PREFIX,
            "name": "Retention monitoring",
        },
    ]
    external_views = [
        {
            "name": "Retention",
            "href": f"{_ROOT}{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "retention",
            "icon": f"{_ROOT}{URL_PREFIX}/static/icon.svg",
        },
    ]
