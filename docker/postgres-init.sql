-- The pipeline's own state lives beside Dagster's storage, in its own database.
CREATE DATABASE exports_state OWNER exports;
