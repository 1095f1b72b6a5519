"""The local development server: TF Serving's gRPC and REST APIs for one model, loading each
version the way TF Serving does (a TF1 session, the SavedModel's saver, the warmup file)."""
