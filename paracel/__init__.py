"""paracel: distributed optimization on a parameter server with bounded staleness (SSP).

Subclass ``paralg``, implement ``solve()``, and run it with ``prun`` or ``launch()``.
"""
from paracel.errors import ConfigError, JobFailed, ParacelError, RemoteKeyError, ServerError
from paracel.launch import LaunchResult, launch
from paracel.paralg import paralg

__all__ = ["paralg", "launch", "LaunchResult", "ParacelError", "ConfigError", "JobFailed",
           "RemoteKeyError", "ServerError"]
