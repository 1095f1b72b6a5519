"""Pipeline pieces beyond the standard TFX components: ingestion and gates."""
