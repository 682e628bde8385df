"""Redis Cluster without I/O: key slots, which arguments of a command are keys, the topology
read from ``CLUSTER SHARDS`` (or ``CLUSTER SLOTS``), and ``MOVED``/``ASK`` redirections.

A key's slot is CRC16 (XMODEM, what ``binascii.crc_hqx`` computes) of the key, or of its hash
tag (the part between the first ``{`` and the next ``}``, when not empty), modulo 16384.  No
Twisted import: :mod:`tx_swoole.clients._cluster` drives it.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from tx_swoole.errors import RedisClusterError, RedisCrossSlotError

__all__ = [
    "FANOUT",
    "READ_ONLY",
    "SLOTS",
    "Redirect",
    "Topology",
    "command_keys",
    "command_name",
    "command_slot",
    "key_slot",
    "parse_redirect",
    "parse_shards",
    "parse_slots",
    "spec_from_command_info",
]
SLOTS = 16384
Address = tuple[str, int]
# How to find the keys of a command: (first, last, step) positions as ``COMMAND INFO`` gives
# them (last -1: to the end; -2: all but the last argument), or a function of the arguments.
Spec = tuple[int, int, int] | Callable[[Sequence[Any]], Sequence[Any]]
_ONE: Spec = (1, 1, 1)


def key_slot(key: Any) -> int:
    """The cluster slot of ``key`` (str, bytes or a number, encoded as the command sends it)."""
    if key.__class__ is bytes:
        k = key
    elif key.__class__ is str:
        k = key.encode()
    elif isinstance(key, bytes | bytearray | memoryview):
        k = bytes(key)
    else:
        k = str(key).encode()
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    return crc_hqx(k, 0) & 16383


def _numkeys(at: int) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """Keys counted by the argument at ``at`` and following it (EVAL, ZUNION, ...)."""

    def keys(args: Sequence[Any]) -> Sequence[Any]:
        n = int(args[at])
        return args[at + 1 : at + 1 + n]

    return keys


def _dest_numkeys(args: Sequence[Any]) -> Sequence[Any]:  # ZUNIONSTORE dest numkeys key...
    return [args[1], *_numkeys(2)(args)]


def _streams(args: Sequence[Any]) -> Sequence[Any]:  # XREAD ... STREAMS k1 k2 id1 id2
    for i, a in enumerate(args):
        if (a.decode() if isinstance(a, bytes) else str(a)).upper() == "STREAMS":
            rest = args[i + 1 :]
            return rest[: len(rest) // 2]
    return []


_SPECS: dict[str, Spec] = {}
for _names, _spec in (
    # one key, the first argument (the commonest shape)
    ("GET SET SETEX PSETEX SETNX GETDEL GETEX GETSET APPEND STRLEN INCR INCRBY DECR DECRBY "
     "INCRBYFLOAT GETRANGE SETRANGE GETBIT SETBIT BITCOUNT BITPOS BITFIELD EXPIRE PEXPIRE "
     "EXPIREAT PEXPIREAT EXPIRETIME TTL PTTL PERSIST TYPE DUMP RESTORE OBJECT "
     "HGET HSET HSETNX HMSET HMGET HGETALL HDEL HEXISTS HINCRBY HINCRBYFLOAT HKEYS HVALS HLEN "
     "HSTRLEN HRANDFIELD HSCAN LPUSH RPUSH LPUSHX RPUSHX LPOP RPOP LRANGE LLEN LINDEX LSET "
     "LINSERT LTRIM LREM LPOS SADD SREM SMEMBERS SISMEMBER SMISMEMBER SCARD SPOP SRANDMEMBER "
     "SSCAN ZADD ZREM ZSCORE ZMSCORE ZINCRBY ZCARD ZCOUNT ZRANK ZREVRANK ZRANGE ZREVRANGE "
     "ZRANGEBYSCORE ZREVRANGEBYSCORE ZRANGEBYLEX ZLEXCOUNT ZREMRANGEBYRANK ZREMRANGEBYSCORE "
     "ZREMRANGEBYLEX ZPOPMIN ZPOPMAX ZRANDMEMBER ZSCAN XADD XLEN XRANGE XREVRANGE XDEL XTRIM "
     "XGROUP XACK XPENDING XCLAIM XAUTOCLAIM XINFO XSETID PFADD GEOADD GEOPOS GEODIST GEOHASH "
     "GEOSEARCH SORT SORT_RO SPUBLISH", _ONE),
    ("DEL UNLINK EXISTS MGET TOUCH SINTER SUNION SDIFF PFCOUNT WATCH", (1, -1, 1)),
    ("SINTERSTORE SUNIONSTORE SDIFFSTORE PFMERGE SSUBSCRIBE SUNSUBSCRIBE", (1, -1, 1)),
    ("MSET MSETNX", (1, -1, 2)),
    ("RENAME RENAMENX SMOVE LMOVE RPOPLPUSH COPY GEOSEARCHSTORE ZRANGESTORE", (1, 2, 1)),
    ("BLPOP BRPOP BZPOPMIN BZPOPMAX", (1, -2, 1)),
    ("BLMOVE BRPOPLPUSH", (1, 2, 1)),
    ("EVAL EVALSHA EVAL_RO EVALSHA_RO FCALL FCALL_RO BLMPOP BZMPOP", _numkeys(2)),
    ("ZUNION ZINTER ZDIFF SINTERCARD ZINTERCARD LMPOP ZMPOP", _numkeys(1)),
    ("ZUNIONSTORE ZINTERSTORE ZDIFFSTORE", _dest_numkeys),
    ("XREAD XREADGROUP", _streams),
    # keyless: any node
    ("PING ECHO PUBLISH INFO TIME RANDOMKEY CLUSTER COMMAND READONLY "
     "READWRITE SCAN LASTSAVE CONFIG CLIENT MEMORY SLOWLOG FUNCTION WAIT", (0, 0, 0)),
):  # fmt: skip
    for _name in _names.split():
        _SPECS.setdefault(_name, _spec)

# Keyless commands that mean the whole keyspace: sent to every primary, replies merged.
FANOUT: dict[str, Callable[[list[Any]], Any]] = {
    "DBSIZE": sum,
    "KEYS": lambda replies: [k for r in replies for k in r],
    "FLUSHDB": lambda replies: replies[0],
    "FLUSHALL": lambda replies: replies[0],
    "SCRIPT": lambda replies: replies[0],  # LOAD answers the same SHA everywhere
}

# Commands a replica may answer (``read_from_replicas``).
READ_ONLY = frozenset(
    "GET MGET STRLEN GETRANGE GETBIT BITCOUNT BITPOS EXISTS TTL PTTL EXPIRETIME TYPE DUMP "
    "HGET HMGET HGETALL HEXISTS HKEYS HVALS HLEN HSTRLEN HRANDFIELD HSCAN LRANGE LLEN LINDEX "
    "LPOS SMEMBERS SISMEMBER SMISMEMBER SCARD SRANDMEMBER SSCAN SINTER SUNION SDIFF ZSCORE "
    "ZMSCORE ZCARD ZCOUNT ZRANK ZREVRANK ZRANGE ZREVRANGE ZRANGEBYSCORE ZREVRANGEBYSCORE "
    "ZRANGEBYLEX ZLEXCOUNT ZRANDMEMBER ZSCAN XLEN XRANGE XREVRANGE PFCOUNT GEOPOS GEODIST "
    "GEOHASH GEOSEARCH SORT_RO EVAL_RO EVALSHA_RO FCALL_RO".split()
)


def single_key_commands() -> frozenset[str]:
    """The commands whose one key is their first argument (the commonest shape)."""
    return frozenset(name for name, spec in _SPECS.items() if spec == _ONE)


def command_name(args: Sequence[Any]) -> str:
    """The command's name in upper case (``args[0]``, str or bytes)."""
    name = args[0]
    if name.__class__ is str and name in _SPECS:
        return name
    return (name.decode() if isinstance(name, bytes) else str(name)).upper()


def spec_for(name: str) -> Spec | None:
    """How to find ``name``'s keys, or None when not known here (ask ``COMMAND INFO``)."""
    return _SPECS.get(name)


def learn(name: str, spec: Spec) -> None:
    """Remember a spec read from the server (:func:`spec_from_command_info`)."""
    _SPECS[name] = spec


def spec_from_command_info(reply: Any) -> Spec | None:
    """The key positions in a ``COMMAND INFO name`` reply; None for a command with keys that
    move with its arguments (ask ``COMMAND GETKEYS`` for each call) or an unknown one."""
    if not reply or reply[0] is None:
        return (0, 0, 0) if not reply else None
    info = reply[0]
    flags = {f.decode() if isinstance(f, bytes) else f for f in info[2]}
    if "movablekeys" in flags:
        return None
    first, last, step = int(info[3]), int(info[4]), int(info[5])
    if last < -1 and first > 0:
        last = -2  # "all but the last n": the blocking commands' timeout
    return (first, last, step)


def command_keys(args: Sequence[Any], spec: Spec) -> Sequence[Any]:
    """The keys of the command ``args`` under ``spec``."""
    if callable(spec):
        return spec(args)
    first, last, step = spec
    if not first:
        return ()
    if last == first:
        return args[first : first + 1]
    stop = len(args) if last == -1 else len(args) - 1 if last == -2 else last + 1
    return args[first:stop:step]


def command_slot(name: str, keys: Sequence[Any]) -> int | None:
    """The one slot of ``keys`` (None when there are none); refuses keys in different slots."""
    if not keys:
        return None
    slot = key_slot(keys[0])
    for key in keys[1:]:
        other = key_slot(key)
        if other != slot:
            raise RedisCrossSlotError(
                f"{name} with keys in different slots ({keys[0]!r} is in slot {slot}, "
                f"{key!r} in slot {other}): a cluster runs a command on one node; put the keys "
                "in one slot with a hash tag, as in '{user1}:a' and '{user1}:b'"
            )
    return slot


class Redirect(NamedTuple):
    """A ``MOVED`` or ``ASK`` error reply: the slot and where it is served now."""

    kind: str  # "MOVED" or "ASK"
    slot: int
    address: Address


def parse_redirect(message: str, answered_by: str) -> Redirect | None:
    """The redirection in an error reply's text, or None for any other error.  An empty host
    (``MOVED 3999 :6381``) means the host of the node that answered (``answered_by``)."""
    if not (message.startswith("MOVED ") or message.startswith("ASK ")):
        return None
    parts = message.split(" ", 3)
    if len(parts) < 3:
        return None
    host, _, port = parts[2].rpartition(":")
    if not host:
        host = answered_by.rpartition(":")[0]
    try:
        return Redirect(parts[0], int(parts[1]), (host, int(port)))
    except ValueError:
        return None


class Topology(NamedTuple):
    """Which primary serves each slot (None: no one), and each primary's replicas."""

    slots: list[Address | None]
    replicas: dict[Address, list[Address]]
    failed: frozenset[Address]  # primaries their peers report as failed

    @property
    def primaries(self) -> list[Address]:
        return list(self.replicas)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {_text(k): v for k, v in value.items()}
    it = iter(value)
    return {_text(k): v for k, v in zip(it, it, strict=True)}


def _address(host: Any, port: Any, default_host: str) -> Address:
    host = _text(host) or ""
    if host in ("", "?"):
        host = default_host
    return (host, int(port))


def parse_shards(reply: Any, default_host: str) -> Topology:
    """The topology in a ``CLUSTER SHARDS`` reply (Redis 7)."""
    slots: list[Address | None] = [None] * SLOTS
    replicas: dict[Address, list[Address]] = {}
    failed: set[Address] = set()
    for shard in reply:
        shard = _pairs(shard)
        nodes = [_pairs(n) for n in shard.get("nodes", [])]
        primary = None
        for node in nodes:
            endpoint = _text(node.get("endpoint")) or ""
            host = node.get("ip") if endpoint in ("", "?") else endpoint
            address = _address(host, node.get("port") or node.get("tls-port"), default_host)
            node["address"] = address
            if _text(node.get("role")) == "master":
                primary = address
        ranges = shard.get("slots") or []
        if primary is None or not ranges:
            continue
        replicas[primary] = [n["address"] for n in nodes if n["address"] != primary
                             and _text(n.get("health")) == "online"]  # fmt: skip
        if any(n["address"] == primary and _text(n.get("health")) == "failed" for n in nodes):
            failed.add(primary)
        for start, end in zip(ranges[0::2], ranges[1::2], strict=True):
            slots[int(start) : int(end) + 1] = [primary] * (int(end) - int(start) + 1)
    return _checked(Topology(slots, replicas, frozenset(failed)))


def parse_slots(reply: Any, default_host: str) -> Topology:
    """The topology in a ``CLUSTER SLOTS`` reply (every Redis with cluster support)."""
    slots: list[Address | None] = [None] * SLOTS
    replicas: dict[Address, list[Address]] = {}
    for entry in reply:
        start, end, primary, *others = entry
        address = _address(primary[0], primary[1], default_host)
        replicas.setdefault(address, [])
        for other in others:
            replica = _address(other[0], other[1], default_host)
            if replica not in replicas[address]:
                replicas[address].append(replica)
        slots[int(start) : int(end) + 1] = [address] * (int(end) - int(start) + 1)
    return _checked(Topology(slots, replicas, frozenset()))


def _checked(topology: Topology) -> Topology:
    if not topology.replicas:
        raise RedisClusterError("the cluster reported no primary serving any slot")
    return topology
