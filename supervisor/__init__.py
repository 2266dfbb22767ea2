"""The supervisor: a self-healing pool of headless ComfyUI instances and the job service on top.

``supervisor.pool.Pool`` is the Python API; ``python -m supervisor`` is the command line.
"""
