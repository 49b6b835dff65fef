"""Storage: the Postgres event log, its writer, products, retention, migrations and the dev cluster."""
