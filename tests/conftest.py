from tests.redis_server import own_redis, redis_server  # noqa: F401  (fixtures)
