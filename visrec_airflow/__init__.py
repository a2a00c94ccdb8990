"""visrec's Airflow integration: what Airflow itself must import by module path (a sensor and its
trigger, run by workers and the triggerer). Installed with visrec; ``visrec`` never imports it, nor
Airflow."""
