"""Online training on streams: a ``WorkerLogic`` per worker reacting to records and to the
values of the parameters it pulls, driven by a ``StreamJob`` (a ``paralg``) under ``prun``.

See ``paracel.streaming.job`` for the job definition, ``paracel.streaming.logic`` for the
callbacks and ``paracel.streaming.worker`` for the pull limiter and the end of a stream.
"""
from paracel.streaming.job import StreamJob, StreamOptions, StreamSettings
from paracel.streaming.logic import GatherLogic, ParamAccess, WorkerLogic
from paracel.streaming.sources import StreamInputError
from paracel.streaming.worker import StreamStats

__all__ = ["StreamJob", "StreamOptions", "StreamSettings", "WorkerLogic", "GatherLogic", "ParamAccess",
           "StreamStats", "StreamInputError"]
