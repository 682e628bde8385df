from tests.mysql_server import mariadb, own_mariadb  # noqa: F401  (fixtures)
from tests.redis_server import own_redis, redis_server  # noqa: F401  (fixtures)
