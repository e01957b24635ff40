"""The read side: the only module that asks MLflow anything (store), its cache, and the snapshot reader."""
