"""Server protocols: long-lived TCP connections and HTTP/1.1."""
