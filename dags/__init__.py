"""The Airflow DAGs (wiring only) and the task helpers they share."""
