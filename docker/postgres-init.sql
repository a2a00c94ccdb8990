-- Run once by the postgres image on an empty volume: Airflow's and MLflow's metadata databases, and
-- the serving store the visrec_serving_export DAG swaps the latest recommendations into.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE serving;
