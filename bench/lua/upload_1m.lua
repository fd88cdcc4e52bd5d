-- Scenario (d): POST a 1 MiB body to /upload; the app reads it all and answers its length.
wrk.method = "POST"
wrk.body = string.rep("x", 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
