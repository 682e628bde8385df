"""The process model: the app service run in a worker, the master that supervises workers."""
