"""Local test harness: real services on loopback, clients on them, the reference world, and the demo.

Used by the tests, the demo and the benchmark; it never imports pytest.

- services: ``server_process`` (one server process: start, wait, stop), ``services`` (PostgreSQL,
  moto's S3 server, OpenSSH), ``clients`` (the pinned SFTP session, the boto3 S3 client);
- the reference world: ``world`` (its public names), ``world_schema``, ``world_rules``,
  ``world_size``, ``world_personas``, ``world_truth``, ``world_gen``, ``world_stores``, ``world_text``;
- the demo (``python -m harness.demo``): ``demo`` (steps, command line), ``demo_config``,
  ``processes``, ``demo_stores``, ``airflow_setup``, ``airflow_api``, ``demo_summary``.
"""
