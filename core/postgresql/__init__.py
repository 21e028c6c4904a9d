"""Django's PostgreSQL backend, with the pool's connection check of core/db_pool.py."""
