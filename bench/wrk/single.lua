-- One event per request, one user: the per-request cost of the ingest path.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user_id":"user-000042","event_type":"screen_view","event_time":"2024-05-01T12:00:00.123Z","payload":{"screen":"home","app_version":"4.2.1","os":"android"}}'
