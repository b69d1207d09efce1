"""The scopes directives are declared in: the names sections and blocks are known by."""

HTTP = "Pool:HTTPServer"
FASTCGI = "Pool:FastCGI"
METRICS = "Pool:Metrics"
USER_POOL = "Pool"
APP = "App"
LOCATION = "location"
POOLS = (HTTP, FASTCGI, USER_POOL)
WEB_POOLS = (HTTP, FASTCGI)

NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
