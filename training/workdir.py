"""The files a training job's folder holds besides the recipe's checkpoints, named once for the
worker (training.jobs) and the child process that writes them (training.child). No Django here:
the child imports it before Django is set up."""

FAILURE_FILE = "failure.json"  # {"kind": ..., "message": ...}: a failure the child could explain
