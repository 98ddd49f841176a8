"""circusd's optional HTTP side: live dashboard, SSE updates and Prometheus /metrics; no command logic."""
