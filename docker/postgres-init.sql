-- Run once by the postgres image on an empty volume: Airflow's and MLflow's metadata databases.
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
