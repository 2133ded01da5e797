"""The test project's app: a model its tasks write, and its workflows."""
