"""Models: the backbone registry, building and loading model directories, and training."""
