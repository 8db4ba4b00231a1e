"""The inference service: FastAPI + dynamic batching over the artifacts in lvm's format. Never imports training/."""
