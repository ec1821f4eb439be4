"""Alles-klar retention and erasure engine.

Plain Python: importable and testable without Airflow. The DAGs under ``dags/``
only wire these pieces; the thin Airflow layer lives in ``retention_airflow``.
"""
