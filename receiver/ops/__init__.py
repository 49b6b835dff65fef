"""Operations: the admin page, health, metrics, logs and the GC policy."""
