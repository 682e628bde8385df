"""Async Redis client for any Twisted program: connections, a pool, pipelines, transactions.

``RedisPool(host, port, size=..., ...)`` connects lazily on first use.  Commands return
Deferreds (``await`` them in ``async def``).  Concurrent callers share the pool's connections
with implicit pipelining: each connection keeps a FIFO of pending replies and its writes go out
at once.  ``pool.pipeline()`` batches explicitly; ``pool.transaction()`` runs WATCH/MULTI/EXEC
with retries; ``pool.client()`` checks a connection out exclusively (blocking commands,
transactions) and always gives it back; ``pool.pubsub()`` subscribes on a dedicated connection
that resubscribes by itself after a reconnect.

**A reply never reaches the wrong caller.**  Replies are matched to callers strictly in order
(FIFO).  A cancelled command keeps its place in the FIFO and its reply is dropped when it
arrives.  A command that times out aborts its connection: it fails with
:class:`~tx_swoole.errors.RedisTimeoutError` and every other command pending on that
connection with :class:`~tx_swoole.errors.RedisConnectionError` — nothing sent on that
connection can be answered any more, so no reply can shift onto another caller.

Resource handling: at most ``size`` connections (plus one per ``pubsub()``); each holds at
most one partial reply in memory (bounded); ``await pool.close()`` closes everything.  A pool
belongs to the process that created it: used after ``os.fork`` it fails with
:class:`~tx_swoole.errors.RedisWrongProcessError` (create clients in ``worker_start``).

Error handling: refused, closed and lost connections are ``RedisConnectionError``, slow ones
``RedisTimeoutError``, server ``-ERR`` replies ``RedisReplyError`` (the connection stays
usable), garbage ``RedisProtocolError``; each message names host:port.  Deferred-returning
methods never raise synchronously.  After connection failures, new connection attempts back
off with jitter (Twisted's ``backoffPolicy``); while backing off, commands fail at once
instead of hanging.

``SentinelPool(sentinels=[(host, port), ...], service_name="mymaster")`` is a ``RedisPool`` on
whichever server the sentinels name as the master (``role="replica"``: a replica), following
failovers (see :mod:`tx_swoole.clients._sentinel`).

``RedisCluster(nodes=[(host, port), ...])`` speaks Redis Cluster with the same command methods
(see :mod:`tx_swoole.clients._cluster`: slot routing, MOVED/ASK, failover, sharded pub/sub).

The modules behind this face: ``_connection`` (one connection: the FIFO, the pipeline
collector), ``_pool`` (the pool), ``_pipeline`` (pipelines, scripts), ``_pubsub`` (pub/sub),
``_commands`` (the command surface, :class:`IRedisCommands`), ``_resp`` (the wire format),
``_cluster`` and ``_slots`` (Redis Cluster), ``_sentinel`` (Sentinel).
"""

from __future__ import annotations

from tx_swoole.clients._cluster import ClusterPipeline, ClusterPubSub, RedisCluster
from tx_swoole.clients._commands import IRedisCommands, RedisCommands
from tx_swoole.clients._connection import IRedisConnector, RedisConnection
from tx_swoole.clients._pipeline import Pipeline, Script
from tx_swoole.clients._pool import RedisPool
from tx_swoole.clients._pubsub import PubSub
from tx_swoole.clients._sentinel import SentinelPool
from tx_swoole.errors import (
    RedisAcquireTimeoutError,
    RedisClusterError,
    RedisConnectionError,
    RedisCrossSlotError,
    RedisError,
    RedisPoolClosedError,
    RedisProtocolError,
    RedisReplyError,
    RedisTimeoutError,
    RedisWrongProcessError,
    WatchError,
)

__all__ = [
    "ClusterPipeline",
    "ClusterPubSub",
    "IRedisCommands",
    "IRedisConnector",
    "Pipeline",
    "PubSub",
    "RedisAcquireTimeoutError",
    "RedisCluster",
    "RedisClusterError",
    "RedisCommands",
    "RedisConnection",
    "RedisConnectionError",
    "RedisCrossSlotError",
    "RedisError",
    "RedisPool",
    "RedisPoolClosedError",
    "RedisProtocolError",
    "RedisReplyError",
    "RedisTimeoutError",
    "RedisWrongProcessError",
    "Script",
    "SentinelPool",
    "WatchError",
]
