"""The retention monitoring page for ops: a FastAPI app over the ledger, shown in the Airflow UI."""

from retention_airflow.ui.app import URL_PREFIX, create_app

__all__ = ["URL_PREFIX", "create_app"]
